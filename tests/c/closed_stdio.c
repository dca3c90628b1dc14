/*
 * A caller with some of its standard fds closed (a daemon): closes the
 * fds of MASK (bit k: fd k) before its first anyfork call, then makes
 * three processes the way MODE says and checks each:
 *
 *   closed_stdio MODE MASK LIBRARY LOG
 *
 * MODE: new (fork_new + fork_require LIBRARY), exec (fork_new_exec +
 * fork_require), template (fork_template, then fork_fork), early
 * (fork_early first, then fork_new). The first and third processes run
 * stdio_probe (tests/c/stdio_child.c) with MASK: their comm socket must
 * read exactly "probe ok <pid>" and their exit callback report that pid
 * and status 0. The second runs a missing function: status 127, and the
 * template must serve the third after it.
 *
 * With stdout or stderr closed the program cannot print: it says what
 * failed in LOG (opened before the fds are closed, on fd 60) and exits
 * with the number of the failed step (0: every check held).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "anyfork.h"
#include "stdio_child.c"

#define LOG_FD 60

static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vdprintf(LOG_FD, fmt, ap);
    va_end(ap);
}

static void fail(int step, const char *what)
{
    say("step %d: %s: errno %d: %s\n", step, what, fork_last_errno(), fork_last_error());
    exit(step);
}

struct outcome {
    int ran, exited, fd, status;
    pid_t pid;
};

static void on_run(int fd, void *ud)
{
    struct outcome *o = ud;
    o->ran = 1;
    o->fd = fd;
}

static void on_exit_cb(pid_t pid, int status, void *ud)
{
    struct outcome *o = ud;
    o->exited = 1;
    o->pid = pid;
    o->status = status;
}

static const char *mode, *lib;
static int closed_mask;
static fork_proc *tmpl;

static fork_proc *make(int step)
{
    fork_proc *p = NULL;
    if (!strcmp(mode, "new") || !strcmp(mode, "exec")) {
        p = !strcmp(mode, "new") ? fork_new() : fork_new_exec();
        if (!p)
            fail(step, "creating the process");
        if (fork_require(p, lib) < 0)
            fail(step + 1, "fork_require");
    } else if (!strcmp(mode, "template")) {
        if (!(p = fork_fork(tmpl)))
            fail(step, "fork_fork of the template");
    } else {
        if (!(p = fork_new()))
            fail(step, "fork_new after fork_early");
    }
    return p;
}

/* Runs `fn` in a new process; returns its comm socket's contents in buf
 * and its outcome. */
static struct outcome run_one(int step, const char *fn, const char *arg, char *buf, size_t cap)
{
    struct outcome o = {0, 0, -1, -1, -1};
    fork_proc *p = make(step);
    if (arg && fork_send_arg(p, arg, strlen(arg)) < 0)
        fail(step + 2, "fork_send_arg");
    if (fork_on_exit(p, on_exit_cb, &o) < 0)
        fail(step + 3, "fork_on_exit");
    if (fork_run(p, fn, on_run, &o) < 0)
        fail(step + 4, "fork_run");
    /* The library keeps none of its fds at the numbers the caller closed:
     * they stay closed, and noise written there (as a careless daemon
     * writes to a closed stdout) reaches nothing of the library's. */
    for (int k = 0; k <= 2; k++) {
        if (!(closed_mask & (1 << k)))
            continue;
        if (write(k, "noise\n", 6) >= 0 || errno != EBADF) {
            say("step %d: the caller's closed fd %d is open now\n", step + 1, k);
            exit(step + 1);
        }
    }
    for (int i = 0; i < 3000 && !(o.ran && o.exited); i++)
        if (fork_wait(10) < 0)
            fail(step + 5, "fork_wait");
    if (!o.ran || !o.exited) {
        say("step %d: callbacks ran %d exited %d within 30 s\n", step + 6, o.ran, o.exited);
        exit(step + 6);
    }
    if (o.fd < 0)
        fail(step + 7, "the run callback got an error");
    size_t len = 0;
    for (;;) {
        ssize_t n = read(o.fd, buf + len, cap - 1 - len);
        if (n > 0) {
            len += (size_t)n;
            if (len + 1 >= cap)
                break;
            continue;
        }
        if (n == 0)
            break;
        if (errno == EAGAIN) {
            struct pollfd pf = {o.fd, POLLIN, 0};
            if (poll(&pf, 1, 10000) <= 0)
                break;
            continue;
        }
        break;
    }
    buf[len] = 0;
    close(o.fd);
    return o;
}

static void probe(int step, const char *mask)
{
    char buf[512], want[64];
    struct outcome o = run_one(step, "stdio_probe", mask, buf, sizeof buf);
    snprintf(want, sizeof want, "probe ok %ld\n", (long)o.pid);
    if (strcmp(buf, want) != 0) {
        say("step %d: comm socket read \"%s\", expected \"%s\" (status %d, error %s)\n", step + 8,
            buf, want, o.status, fork_last_error());
        exit(step + 8);
    }
    if (o.status != 0) {
        say("step %d: status %d, expected 0\n", step + 9, o.status);
        exit(step + 9);
    }
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: closed_stdio MODE MASK LIBRARY LOG\n");
        return 2;
    }
    mode = argv[1];
    lib = argv[3];
    int mask = closed_mask = atoi(argv[2]);
    int log = open(argv[4], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (log < 0 || dup3(log, LOG_FD, O_CLOEXEC) < 0) {
        perror(argv[4]);
        return 2;
    }
    close(log);
    for (int k = 0; k <= 2; k++)
        if (mask & (1 << k))
            close(k);

    if (!strcmp(mode, "early")) {
        if (fork_early() < 0)
            fail(10, "fork_early");
    } else if (!strcmp(mode, "template")) {
        if (!(tmpl = fork_template()))
            fail(10, "fork_template");
    } else if (strcmp(mode, "new") && strcmp(mode, "exec")) {
        say("unknown mode %s\n", mode);
        return 2;
    }

    probe(20, argv[2]);

    char buf[512];
    struct outcome o = run_one(40, "no_such_function_anywhere", NULL, buf, sizeof buf);
    if (!WIFEXITED(o.status) || WEXITSTATUS(o.status) != 127) {
        say("step 50: a missing function gave status %d, expected exit 127 (comm: \"%s\")\n",
            o.status, buf);
        return 50;
    }

    probe(60, argv[2]);

    if (tmpl)
        fork_free(tmpl);
    while (fork_wait(100) > 0)
        ;
    say("%s %d: all checks held\n", mode, mask);
    return 0;
}
