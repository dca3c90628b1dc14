/*
 * What the C test programs that drive anyfork as a caller share: running
 * a function and reading its comm socket to EOF (run_read), and a
 * process's parent from /proc (ppid_of). Everything is static inline or
 * used, so a program using only part of it compiles without warnings.
 */
#ifndef ANYFORK_TEST_CALLER_H
#define ANYFORK_TEST_CALLER_H

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "anyfork.h"

/* What the run callback of run_read got (-1000: not yet), and how often
 * it ran since the last run_read. */
static int run_fd = -1000, run_calls;

static void ran(int fd, void *ud)
{
    (void)ud;
    run_calls++;
    run_fd = fd;
}

/* Runs `fn` in p, dispatches until the run callback fired (at most 30 s),
 * and reads its comm socket to EOF into buf, NUL-terminated. Returns the
 * length, or -1 when the run failed. */
static inline int run_read(fork_proc *p, const char *fn, char *buf, size_t cap)
{
    run_fd = -1000;
    run_calls = 0;
    if (fork_run(p, fn, ran, NULL) < 0)
        return -1;
    for (int i = 0; i < 3000 && run_fd == -1000; i++)
        fork_wait(10);
    if (run_fd < 0)
        return -1;
    size_t len = 0;
    for (;;) {
        ssize_t n = read(run_fd, buf + len, cap - 1 - len);
        if (n > 0) {
            len += (size_t)n;
            continue;
        }
        if (n == 0)
            break;
        if (errno == EAGAIN) {
            struct pollfd pf = {run_fd, POLLIN, 0};
            if (poll(&pf, 1, 10000) <= 0)
                break;
            continue;
        }
        break;
    }
    close(run_fd);
    buf[len] = 0;
    return (int)len;
}

/* The parent of pid, from /proc/PID/stat; -1 when it is gone. */
static inline pid_t ppid_of(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    char *p = strrchr(buf, ')');
    int ppid = -1;
    if (!p || sscanf(p + 2, "%*c %d", &ppid) != 1)
        return -1;
    return ppid;
}

#endif
