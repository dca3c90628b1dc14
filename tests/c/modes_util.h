/*
 * Helpers shared by the C programs of tests/modes.rs (template, early,
 * custom server, hand-off, reset after fork). Everything is static inline
 * so that a program using only part of it compiles without warnings.
 *
 * The report a child writes on its comm socket (report_args):
 *
 *   pid <pid> ppid <ppid>
 *   comm blocking=<0|1> cloexec=<0|1>
 *   child_args same=<0|1>         (fork_child_args agrees with args)
 *   n <nargs>
 *   arg <i> str <bytes>           one line per argument, in order
 *   arg <i> fd
 *
 * and into every fd argument (a pipe, in these tests) the line
 *   "arg <i> from <pid>\n"
 * so the driver can check that the right fd arrived at the right place.
 */
#ifndef MODES_UTIL_H
#define MODES_UTIL_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "anyfork.h"

/* Writes all of buf to fd, blocking or not. Returns 0 or -1. */
static inline int mu_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                struct pollfd pfd = { .fd = fd, .events = POLLOUT };
                if (poll(&pfd, 1, 10000) <= 0)
                    return -1;
                continue;
            }
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* printf to an fd. Returns 0 or -1. */
__attribute__((format(printf, 2, 3))) static inline int mu_dprintf(int fd, const char *fmt, ...)
{
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf)
        return -1;
    return mu_write_all(fd, buf, (size_t)n);
}

/*
 * Reads fd (blocking or not) to EOF into buf, NUL-terminated; waits at
 * most 20 s for each chunk. Returns the length or -1.
 */
static inline ssize_t mu_read_to_eof(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    for (;;) {
        if (len + 1 >= cap) {
            fprintf(stderr, "mu_read_to_eof: more than %zu bytes\n", cap);
            return -1;
        }
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n > 0) {
            len += (size_t)n;
            continue;
        }
        if (n == 0)
            break;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            perror("mu_read_to_eof: read");
            return -1;
        }
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int r = poll(&pfd, 1, 20000);
        if (r < 0 && errno != EINTR) {
            perror("mu_read_to_eof: poll");
            return -1;
        }
        if (r == 0) {
            fprintf(stderr, "mu_read_to_eof: nothing within 20 s\n");
            return -1;
        }
    }
    buf[len] = '\0';
    return (ssize_t)len;
}

/*
 * Reads what fd holds now, without waiting (for a pipe whose write end
 * other processes still hold), NUL-terminated. Returns the length or -1.
 */
static inline ssize_t mu_drain(int fd, char *buf, size_t cap)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    size_t len = 0;
    for (;;) {
        if (len + 1 >= cap)
            return -1;
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n > 0) {
            len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || errno == EAGAIN || errno == EWOULDBLOCK)
            break;
        return -1;
    }
    buf[len] = '\0';
    return (ssize_t)len;
}

/* Prints "<label> pipe:" and what the pipe holds now. Returns 0 or -1. */
static inline int mu_show_pipe(int fd, const char *label)
{
    char buf[4096];
    if (mu_drain(fd, buf, sizeof buf) < 0) {
        perror("mu_drain");
        return -1;
    }
    printf("%s pipe:\n%s", label, buf);
    return fflush(stdout) == 0 ? 0 : -1;
}

/* The child-side report described above. Returns 0 or a non-zero status. */
static inline int mu_report_args(int fd, const fork_arg *args, size_t nargs)
{
    int fl = fcntl(fd, F_GETFL);
    int fdfl = fcntl(fd, F_GETFD);
    size_t cn = 12345;
    const fork_arg *ca = fork_child_args(&cn);
    int same = ca != NULL && cn == nargs;
    for (size_t i = 0; same && i < nargs; i++)
        same = ca[i].kind == args[i].kind && ca[i].fd == args[i].fd &&
               ca[i].len == args[i].len &&
               (args[i].len == 0 || memcmp(ca[i].data, args[i].data, args[i].len) == 0);
    if (mu_dprintf(fd, "pid %ld ppid %ld\ncomm blocking=%d cloexec=%d\nchild_args same=%d\nn %zu\n",
                   (long)getpid(), (long)getppid(), fl >= 0 && !(fl & O_NONBLOCK),
                   fdfl >= 0 && (fdfl & FD_CLOEXEC) != 0, same, nargs) < 0)
        return 10;
    for (size_t i = 0; i < nargs; i++) {
        int r;
        if (args[i].kind == FORK_ARG_STRING) {
            r = mu_dprintf(fd, "arg %zu str %.*s\n", i, (int)args[i].len,
                           (const char *)args[i].data);
        } else {
            r = mu_dprintf(fd, "arg %zu fd\n", i);
            if (r == 0 && mu_dprintf(args[i].fd, "arg %zu from %ld\n", i, (long)getpid()) < 0)
                r = mu_dprintf(fd, "arg %zu fd not writable: %s\n", i, strerror(errno));
        }
        if (r < 0)
            return 11;
    }
    return 0;
}

/* Dispatches until *flag is set; returns 0, or -1 on error or 20 s silence. */
static inline int mu_wait_flag(const int *flag, const char *what)
{
    while (!*flag) {
        int n = fork_wait(20000);
        if (n < 0) {
            fprintf(stderr, "fork_wait: %s\n", fork_last_error());
            return -1;
        }
        if (n == 0 && !*flag) {
            fprintf(stderr, "waiting for %s: nothing within 20 s (%zu pending)\n", what,
                    fork_pending());
            return -1;
        }
    }
    return 0;
}

/* What the run and exit callbacks of one process found out. */
struct mu_proc {
    int run_done, exit_done;
    int fd;     /* comm socket, or -errno */
    pid_t pid;
    int status; /* wait status, or -errno */
};

#define MU_PROC_INIT { 0, 0, -1, -1, -1 }

static inline void mu_on_run(int fd, void *ud)
{
    struct mu_proc *p = ud;
    p->run_done = 1;
    p->fd = fd;
    if (fd < 0)
        fprintf(stderr, "run callback: %d: %s\n", fd, fork_last_error());
}

static inline void mu_on_exit(pid_t pid, int status, void *ud)
{
    struct mu_proc *p = ud;
    p->exit_done = 1;
    p->pid = pid;
    p->status = status;
    if (status < 0)
        fprintf(stderr, "exit callback: %d: %s\n", status, fork_last_error());
}

/*
 * Waits for both callbacks of *p, prints "<label> report:" followed by the
 * comm socket's contents and "<label> status <wait status>". Returns 0 or -1.
 */
static char mu_last_report[65536]; /* what mu_finish read last */

static inline int mu_finish(struct mu_proc *p, const char *label)
{
    if (mu_wait_flag(&p->run_done, "the run callback") < 0 ||
        mu_wait_flag(&p->exit_done, "the exit callback") < 0 || p->fd < 0)
        return -1;
    char *buf = mu_last_report;
    ssize_t n = mu_read_to_eof(p->fd, buf, sizeof mu_last_report);
    if (close(p->fd) < 0 || n < 0)
        return -1;
    printf("%s report:\n%s%s status %d\n", label, buf, label, p->status);
    return fflush(stdout) == 0 ? 0 : -1;
}

/* The number after "ppid " in the last report, or -1. */
static inline long mu_last_ppid(void)
{
    const char *p = strstr(mu_last_report, " ppid ");
    return p ? strtol(p + 6, NULL, 10) : -1;
}

#define MU_CHECK(call)                                                                         \
    do {                                                                                       \
        if ((call) < 0) {                                                                      \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call,               \
                    fork_last_error());                                                        \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

#define MU_CHECK_PTR(call)                                                                     \
    ({                                                                                         \
        fork_proc *mu_p_ = (call);                                                             \
        if (mu_p_ == NULL) {                                                                   \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call,               \
                    fork_last_error());                                                        \
            exit(1);                                                                           \
        }                                                                                      \
        mu_p_;                                                                                 \
    })

#endif
