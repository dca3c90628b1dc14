/*
 * An eval function for the spawn benchmark: `bench_grow N` makes the
 * process it runs in N MiB larger (malloc, then one write to every page),
 * so that a template can be made as large as the caller.
 * `bench_hello` is a run function that answers at once.
 */
#include <stdlib.h>
#include <unistd.h>

#include "anyfork.h"

int bench_grow(const fork_arg *args, size_t nargs)
{
    if (nargs < 1 || args[0].kind != FORK_ARG_STRING)
        return 2;
    size_t len = (size_t)strtoull((const char *)args[0].data, NULL, 10) << 20;
    volatile char *p = malloc(len);
    if (p == NULL)
        return 3;
    for (size_t i = 0; i < len; i += 4096)
        p[i] = 1;
    return 0;
}

/* A run function: writes one byte to the comm socket, the sign that the
 * new process runs user code, and returns (the process exits). */
int bench_hello(int fd, const fork_arg *args, size_t nargs)
{
    (void)args;
    (void)nargs;
    return write(fd, "!", 1) == 1 ? 0 : 1;
}
