/*
 * The run function of tests/c/closed_stdio.c's processes, built both as a
 * library (for processes of anyfork-serve, loaded with fork_require) and
 * into the program itself (for fork_template and fork_early).
 *
 * stdio_probe(fd, [mask]): for every bit k of `mask` (the caller's fds
 * that were closed), fd k must be open and must not be a socket (where a
 * server without standard fds would find its own socket or a child's
 * comm socket); it writes a line of noise to it, as a careless program
 * would. Then it writes "probe ok <pid>\n" on its comm socket and returns
 * 0; on a failed check, "probe bad fd <k> ...\n" and returns 3.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "anyfork.h"

int stdio_probe(int fd, const fork_arg *args, size_t nargs)
{
    char buf[128];
    int mask = 0;
    if (nargs >= 1 && args[0].kind == FORK_ARG_STRING && args[0].len < 8) {
        memcpy(buf, args[0].data, args[0].len);
        buf[args[0].len] = 0;
        mask = atoi(buf);
    }
    for (int k = 0; k <= 2; k++) {
        if (!(mask & (1 << k)))
            continue;
        struct stat st;
        if (k == fd || fstat(k, &st) < 0 || S_ISSOCK(st.st_mode)) {
            int n = snprintf(buf, sizeof buf, "probe bad fd %d (comm %d)\n", k, fd);
            if (write(fd, buf, (size_t)n) < 0)
                return 4;
            return 3;
        }
        static const char noise[] = "noise from a process whose caller had this fd closed\n";
        if (write(k, noise, sizeof noise - 1) < 0) {
            /* fd 0 may be read-only: not a failure */
        }
    }
    int n = snprintf(buf, sizeof buf, "probe ok %ld\n", (long)getpid());
    return write(fd, buf, (size_t)n) == n ? 0 : 5;
}
