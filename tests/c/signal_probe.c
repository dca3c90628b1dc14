/*
 * Signal and fd hygiene seen from a C caller (tests/hygiene.rs).
 *
 *   signal_probe /abs/path/libchildren.so MODE
 *
 * MODE "untouched": with every disposition at its default, runs a workload
 * through the library (the default template, a new server, a template
 * killed under it with commands still to write, exit callbacks, a
 * fork_template copy) and checks that the disposition of every signal and
 * the signal mask are exactly as before. A SIGPIPE raised by the library
 * would kill this program. Prints "untouched ok" or the differences.
 *
 * MODE "messy" / "early": first makes the caller's signal state messy --
 * handlers for SIGUSR1, SIGCHLD and SIGWINCH, SIGTERM, SIGHUP, SIGPIPE and
 * SIGQUIT ignored, SIGUSR2, SIGINT, SIGALRM and SIGRTMIN+3 blocked -- and
 * opens fds without close-on-exec, then ("early") calls fork_early(). Then
 * runs rl_report in a process from each source:
 *   template  a fork_fork of fork_template() (a copy of this program)
 *   default   fork_new()
 *   exec      a fork_fork of fork_new_exec() (or of the early copy)
 * sending each fd 0 and the string "x", and prints each report between
 * "report LABEL" and "end" lines.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "anyfork.h"

#ifndef SA_RESTORER
#define SA_RESTORER 0x04000000 /* set by libc itself; not part of the disposition */
#endif

static const char *lib;

static void die(const char *what) {
    fprintf(stderr, "signal_probe: %s: %s\n", what, fork_last_error());
    exit(1);
}

static void handler(int sig) { (void)sig; }

static int run_fd;
static void ran(int fd, void *ud) {
    (void)ud;
    run_fd = fd;
}
static int exits;
static void exited(pid_t pid, int status, void *ud) {
    (void)pid;
    (void)status;
    (void)ud;
    exits++;
}

/* Runs rl_report in p (fd 0 and "x" sent) and prints it as LABEL. */
static void report(fork_proc *p, const char *label) {
    if (fork_require(p, lib) < 0 || fork_send_fd(p, 0) < 0 || fork_send_arg(p, "x", 1) < 0)
        die("sending");
    run_fd = -1000;
    if (fork_run(p, "rl_report", ran, NULL) < 0)
        die("fork_run");
    while (run_fd == -1000)
        if (fork_wait(10000) <= 0)
            die("waiting");
    if (run_fd < 0)
        die("the run callback");
    printf("report %s\n", label);
    char buf[4096];
    for (;;) {
        ssize_t n = read(run_fd, buf, sizeof buf);
        if (n > 0) {
            fwrite(buf, 1, (size_t)n, stdout);
            continue;
        }
        if (n == 0)
            break;
        if (errno == EAGAIN) {
            struct pollfd pf = {run_fd, POLLIN, 0};
            poll(&pf, 1, 10000);
            continue;
        }
        die("reading");
    }
    close(run_fd);
    printf("end\n");
    fflush(stdout);
}

struct snapshot {
    struct sigaction act[NSIG];
    int ok[NSIG];
    sigset_t mask;
};

static void snap(struct snapshot *s) {
    memset(s, 0, sizeof *s);
    for (int sig = 1; sig < NSIG; sig++)
        s->ok[sig] = sigaction(sig, NULL, &s->act[sig]) == 0;
    sigprocmask(SIG_BLOCK, NULL, &s->mask);
}

static int compare(const struct snapshot *a, const struct snapshot *b) {
    int diffs = 0;
    for (int sig = 1; sig < NSIG; sig++) {
        if (a->ok[sig] != b->ok[sig] ||
            (a->ok[sig] && (a->act[sig].sa_handler != b->act[sig].sa_handler ||
                            (a->act[sig].sa_flags & ~SA_RESTORER) !=
                                (b->act[sig].sa_flags & ~SA_RESTORER)))) {
            printf("signal %d (%s): disposition changed\n", sig, strsignal(sig));
            diffs++;
        }
        if (sigismember(&a->mask, sig) != sigismember(&b->mask, sig)) {
            printf("signal %d (%s): mask changed\n", sig, strsignal(sig));
            diffs++;
        }
    }
    return diffs;
}

static void untouched(void) {
    struct snapshot before, after;
    snap(&before);
    if (before.act[SIGPIPE].sa_handler != SIG_DFL || before.act[SIGCHLD].sa_handler != SIG_DFL) {
        printf("SIGPIPE or SIGCHLD not at default to begin with\n");
        exit(1);
    }
    report(fork_new() ?: (die("fork_new"), NULL), "default");

    /* A template killed while a large string is still being written to
     * it: the writes fail with EPIPE, which must not raise SIGPIPE here. */
    fork_proc *t = fork_new_exec();
    if (!t)
        die("fork_new_exec");
    if (fork_on_exit(t, exited, NULL) < 0)
        die("fork_on_exit");
    pid_t tpid = fork_pid(t);
    kill(tpid, SIGSTOP);
    size_t big = 8 << 20;
    char *junk = calloc(1, big);
    if (!junk || fork_send_arg(t, junk, big) < 0)
        die("fork_send_arg");
    free(junk);
    fork_proc *k = fork_fork(t);
    kill(tpid, SIGKILL);
    int r = 0;
    for (int i = 0; i < 500 && r >= 0; i++) {
        r = fork_send_arg(t, "more", 4);
        /* Dispatch flushes the queue, which meets the dead socket. */
        fork_wait(10);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (r != -EPIPE) {
        printf("writing to a killed template gave %d, not -EPIPE\n", r);
        exit(1);
    }
    fork_free(k);
    fork_free(t);
    while (exits < 1)
        if (fork_wait(10000) <= 0)
            die("waiting for the killed template's exit");

    fork_proc *copy = fork_template();
    if (!copy)
        die("fork_template");
    report(fork_fork(copy) ?: (die("fork_fork"), NULL), "template");
    fork_free(copy);
    for (int i = 0; i < 50 && fork_pending() > 0; i++)
        fork_wait(10);

    snap(&after);
    if (compare(&before, &after) == 0)
        printf("untouched ok\n");
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: signal_probe LIB untouched|messy|early\n");
        return 2;
    }
    lib = argv[1];
    const char *mode = argv[2];
    if (strcmp(mode, "untouched") == 0) {
        untouched();
        return 0;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    sigaction(SIGWINCH, &sa, NULL);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR2);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGALRM);
    sigaddset(&block, SIGRTMIN + 3);
    sigprocmask(SIG_BLOCK, &block, NULL);
    /* Pending while blocked: must not follow into a process either. */
    raise(SIGUSR2);
    /* Inherited fds without close-on-exec. */
    for (int i = 0; i < 3; i++)
        if (open("/dev/null", O_RDONLY) < 0)
            die("open");
    if (strcmp(mode, "early") == 0 && fork_early() < 0)
        die("fork_early");

    fork_proc *copy = fork_template();
    if (!copy)
        die("fork_template");
    report(fork_fork(copy) ?: (die("fork_fork"), NULL), "template");
    report(fork_new() ?: (die("fork_new"), NULL), "default");
    fork_proc *t = fork_new_exec();
    if (!t)
        die("fork_new_exec");
    report(fork_fork(t) ?: (die("fork_fork"), NULL), "exec");
    fork_free(t);
    fork_free(copy);
    for (int i = 0; i < 50 && fork_pending() > 0; i++)
        fork_wait(10);
    return 0;
}
