/*
 * worker.c: run functions for the Go binding's tests, built as a shared
 * library by TestMain and loaded into processes with Require.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <anyfork.h>

/*
 * Describes every argument on the comm socket, one line each: "S <hex>"
 * for a string, "F" for an fd (into which it writes "hello from <pid>\n").
 */
int report(int fd, const fork_arg *args, size_t nargs)
{
    FILE *out = fdopen(fd, "w");
    if (out == NULL)
        return 2;
    fprintf(out, "pid %ld nargs %zu\n", (long)getpid(), nargs);
    for (size_t i = 0; i < nargs; i++) {
        if (args[i].kind == FORK_ARG_STRING) {
            fprintf(out, "S ");
            for (size_t j = 0; j < args[i].len; j++)
                fprintf(out, "%02x", args[i].data[j]);
            fprintf(out, "\n");
        } else {
            dprintf(args[i].fd, "hello from %ld\n", (long)getpid());
            fprintf(out, "F\n");
        }
    }
    return fclose(out) == 0 ? 0 : 3;
}

/* Exits with the status given as its first string argument. */
int exit_with(int fd, const fork_arg *args, size_t nargs)
{
    (void)fd;
    if (nargs < 1 || args[0].kind != FORK_ARG_STRING)
        return 99;
    int st = 0;
    sscanf((const char *)args[0].data, "%d", &st);
    return st;
}
