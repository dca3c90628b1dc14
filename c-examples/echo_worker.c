/*
 * echo_worker.c: the child side of the event-loop examples (epoll.c,
 * libev.c, libuv.c).
 *
 * Built as libecho_worker.so and loaded once into a template with
 * fork_require(); every process forked from it enters echo_run() with its
 * end of the comm socket and one string, its number n. It writes
 * "hello <n>\n" back over the comm socket and exits 0; the parent sees
 * the line, then EOF.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#include "anyfork.h"

int echo_run(int fd, const fork_arg *args, size_t nargs)
{
    if (nargs != 1 || args[0].kind != FORK_ARG_STRING) {
        fprintf(stderr, "echo_run: expected one string argument, got %zu arguments\n", nargs);
        return 2;
    }
    char line[128];
    int len = snprintf(line, sizeof line, "hello %s\n", (const char *)args[0].data);
    if (len < 0 || (size_t)len >= sizeof line) {
        fprintf(stderr, "echo_run: argument too long\n");
        return 2;
    }
    const char *p = line;
    size_t left = (size_t)len;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("echo_run: write");
            return 1;
        }
        p += n;
        left -= (size_t)n;
    }
    return 0;
}
