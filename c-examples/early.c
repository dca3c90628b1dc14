/*
 * early.c: fork_early(), the manual's AnyEvent::Fork::Early.
 *
 * The very first thing main() does is fork_early(): the library forks this
 * program while it is still small and keeps the copy as a template. From
 * then on fork_new_exec() forks that copy instead of exec'ing
 * anyfork-serve, and so does fork_new() (its default template is made by
 * fork_new_exec). No other executable is ever started, and the processes
 * can run this program's own functions: here an eval function
 * (early_init) and a run function (early_greet).
 *
 * The copy was made before main() went on, so what main() sets up
 * afterwards (the variable `set_up_after_early`) is not in the children:
 * they report it as 0 while it is 1 here. That is the point of forking
 * early: the children do not inherit whatever the program grows into.
 *
 * Each child reports, on its comm socket, the greeting made by
 * early_init, the string sent to it, that variable, and the executable it
 * runs (/proc/self/exe: this program, not anyfork-serve). The program
 * checks every report and each child's exit status. The templates exit
 * when the program does (they see EOF), so nothing is left behind.
 *
 * Build: link with -rdynamic, so that dlsym finds early_init and
 * early_greet (the Makefile does).
 *
 * Usage: early        (exits 0 when both reports are right)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "anyfork.h"

/* Set by main() after fork_early(): the early template never sees it. */
static int set_up_after_early;

/* Set by early_init in the child that evaluates it. */
static char greeting[64];

/*
 * An eval function of this program: makes the greeting from its one
 * string argument. A non-zero return would end the process.
 */
int early_init(const fork_arg *args, size_t nargs);
int early_init(const fork_arg *args, size_t nargs)
{
    if (nargs != 1 || args[0].kind != FORK_ARG_STRING || args[0].len >= sizeof greeting) {
        fprintf(stderr, "early_init: expected one short string\n");
        return 2;
    }
    memcpy(greeting, args[0].data, args[0].len);
    greeting[args[0].len] = '\0';
    return 0;
}

/*
 * A run function of this program: greets the one string sent to it and
 * says what it sees. Its return value is the process's exit status.
 */
int early_greet(int fd, const fork_arg *args, size_t nargs);
int early_greet(int fd, const fork_arg *args, size_t nargs)
{
    if (nargs != 1 || args[0].kind != FORK_ARG_STRING) {
        fprintf(stderr, "early_greet: expected one string\n");
        return 2;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n < 0) {
        perror("early_greet: readlink");
        return 3;
    }
    exe[n] = '\0';
    char line[PATH_MAX + 256];
    int len = snprintf(line, sizeof line, "%s, %s! set_up_after_early=%d exe=%s\n", greeting,
                       (const char *)args[0].data, set_up_after_early, exe);
    if (len < 0 || (size_t)len >= sizeof line)
        return 4;
    const char *p = line;
    size_t left = (size_t)len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            perror("early_greet: write");
            return 5;
        }
        p += w;
        left -= (size_t)w;
    }
    return 0;
}

/* One child as the callbacks see it. */
struct child {
    const char *label;
    int run_done, exit_done;
    int fd;      /* our end of its comm socket, or -errno */
    pid_t pid;
    int status;  /* wait status, or -errno */
};

static void on_run(int fd, void *userdata)
{
    struct child *c = userdata;
    c->run_done = 1;
    c->fd = fd;
    if (fd < 0)
        fprintf(stderr, "early: %s could not start: %s\n", c->label, fork_last_error());
}

static void on_exit_cb(pid_t pid, int status, void *userdata)
{
    struct child *c = userdata;
    c->exit_done = 1;
    c->pid = pid;
    c->status = status;
    if (status < 0)
        fprintf(stderr, "early: exit of %s unknown: %s\n", c->label, fork_last_error());
}

/* Reads the nonblocking fd to EOF into buf (NUL-terminated). Returns 0 or -1. */
static int read_to_eof(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    for (;;) {
        if (len + 1 >= cap) {
            fprintf(stderr, "early: a report is too long\n");
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
            perror("early: read");
            return -1;
        }
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int r = poll(&pfd, 1, 10000);
        if (r < 0 && errno != EINTR) {
            perror("early: poll");
            return -1;
        }
        if (r == 0) {
            fprintf(stderr, "early: no report within 10 s\n");
            return -1;
        }
    }
    buf[len] = '\0';
    return 0;
}

/*
 * Evaluates early_init(hello) in p, sends name and runs early_greet.
 * Consumes p. Returns 0 or -1.
 */
static int start(fork_proc *p, struct child *c, const char *hello, const char *name)
{
    const char *init_args[] = { hello };
    if (fork_eval(p, "early_init", init_args, 1) < 0 ||
        fork_send_arg(p, name, strlen(name)) < 0 || fork_on_exit(p, on_exit_cb, c) < 0) {
        fprintf(stderr, "early: preparing %s: %s\n", c->label, fork_last_error());
        fork_free(p);
        return -1;
    }
    if (fork_run(p, "early_greet", on_run, c) < 0) {
        fprintf(stderr, "fork_run: %s\n", fork_last_error());
        return -1;
    }
    return 0;
}

/* Waits for c's callbacks, then checks its report. Returns 1 if right. */
static int finish(struct child *c, const char *expect_prefix, const char *exe)
{
    while (!c->run_done || !c->exit_done) {
        int n = fork_wait(10000);
        if (n < 0) {
            fprintf(stderr, "fork_wait: %s\n", fork_last_error());
            return 0;
        }
        if (n == 0 && (!c->run_done || !c->exit_done)) {
            fprintf(stderr, "early: %s did not finish within 10 s\n", c->label);
            return 0;
        }
    }
    if (c->fd < 0)
        return 0;
    char report[PATH_MAX + 256];
    int ok = read_to_eof(c->fd, report, sizeof report) == 0;
    if (close(c->fd) < 0) {
        perror("close");
        ok = 0;
    }
    if (!ok)
        return 0;
    char expect[PATH_MAX + 256];
    int len = snprintf(expect, sizeof expect, "%s set_up_after_early=0 exe=%s\n", expect_prefix,
                       exe);
    if (len < 0 || (size_t)len >= sizeof expect)
        return 0;
    printf("%s (pid %ld) says: %s", c->label, (long)c->pid, report);
    if (strcmp(report, expect) != 0) {
        fprintf(stderr, "early: %s: expected: %s", c->label, expect);
        ok = 0;
    }
    if (c->status < 0 || !WIFEXITED(c->status) || WEXITSTATUS(c->status) != 0) {
        fprintf(stderr, "early: %s failed, wait status %d\n", c->label, c->status);
        ok = 0;
    }
    return ok;
}

int main(void)
{
    /* First thing: fork the template while this program is small. */
    if (fork_early() < 0) {
        fprintf(stderr, "fork_early: %s\n", fork_last_error());
        return 1;
    }

    /* Whatever main() sets up from here on stays in this process. */
    set_up_after_early = 1;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n < 0) {
        perror("readlink /proc/self/exe");
        return 1;
    }
    exe[n] = '\0';

    struct child a = { .label = "fork_new child", .fd = -1, .pid = -1, .status = -1 };
    struct child b = { .label = "fork_new_exec child", .fd = -1, .pid = -1, .status = -1 };

    /* fork_new: from the default template, itself a fork of the early one. */
    fork_proc *p = fork_new();
    if (p == NULL) {
        fprintf(stderr, "fork_new: %s\n", fork_last_error());
        return 1;
    }
    if (start(p, &a, "Hello", "world") < 0)
        return 1;

    /* fork_new_exec: a fresh fork of the early template, no exec at all. */
    p = fork_new_exec();
    if (p == NULL) {
        fprintf(stderr, "fork_new_exec: %s\n", fork_last_error());
        return 1;
    }
    if (start(p, &b, "Good morning", "early bird") < 0)
        return 1;

    int ok = finish(&a, "Hello, world!", exe);
    if (!finish(&b, "Good morning, early bird!", exe))
        ok = 0;
    if (!ok)
        return 1;
    printf("early: both children ran this program's functions\n");
    if (fflush(stdout) != 0 || ferror(stdout)) {
        perror("writing stdout");
        return 1;
    }
    return 0;
}
