/*
 * hello_worker.c: the child side of hello.c.
 *
 * Built as libhello_worker.so and loaded into the new process with
 * fork_require(). The process then enters hello_run() with the child's end
 * of the comm socket and the arguments hello.c sent, in order:
 *
 *   args[0]  FORK_ARG_FD      the write end of a pipe
 *   args[1]  FORK_ARG_STRING  a greeting ("Hello")
 *   args[2]  FORK_ARG_STRING  a name ("world")
 *
 * It answers "<greeting>, <name>!\n" on the comm socket and "pid <pid>\n"
 * into the pipe. Its return value becomes the process's exit status.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "anyfork.h"

/* Writes all of buf, retrying after signals and short writes. */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

int hello_run(int fd, const fork_arg *args, size_t nargs)
{
    if (nargs != 3 || args[0].kind != FORK_ARG_FD || args[1].kind != FORK_ARG_STRING ||
        args[2].kind != FORK_ARG_STRING) {
        fprintf(stderr, "hello_run: expected (fd, greeting, name), got %zu arguments\n", nargs);
        return 2;
    }
    /* Strings are NUL-terminated past len, so they can be used as C strings. */
    const char *greeting = (const char *)args[1].data;
    const char *name = (const char *)args[2].data;

    char line[512];
    int n = snprintf(line, sizeof line, "%s, %s!\n", greeting, name);
    if (n < 0 || (size_t)n >= sizeof line) {
        fprintf(stderr, "hello_run: greeting too long\n");
        return 3;
    }
    if (write_all(fd, line, (size_t)n) < 0) {
        perror("hello_run: writing the comm socket");
        return 4;
    }

    n = snprintf(line, sizeof line, "pid %ld\n", (long)getpid());
    if (n < 0 || (size_t)n >= sizeof line || write_all(args[0].fd, line, (size_t)n) < 0) {
        perror("hello_run: writing the pipe");
        return 5;
    }
    return 0;
}
