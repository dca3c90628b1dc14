/*
 * A caller with every kind of server and some processes running user code,
 * for tests/faults.rs to SIGKILL.
 *
 *   killed_caller /abs/path/libchildren.so [early]
 *
 * With "early" it calls fork_early() first, so that every fork_new_exec
 * (and the default template) is a fork of the early copy. Then it makes:
 *   - through the default template (fork_new): two running processes and
 *     one that is never run;
 *   - a fork_new_exec template: two running processes and one never run;
 *   - another fork_new_exec template with one running process, then freed
 *     (it stays to report that child's exit while the caller lives);
 *   - a fork_template() copy of this program with one running process.
 * Each running process runs rl_hold with fd 0 (our stdin, a pipe from the
 * test) and fd 1 (our stdout): it says "running PID" on its comm socket,
 * which we wait for, then waits for EOF on the pipe and writes
 * "finished PID" to our stdout.
 *
 * Prints "running PIDS...", "servers PIDS..." (templates, their parents
 * when they are forks of the early template, and unrun processes), then
 * "ready", and waits to be killed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "anyfork.h"
#include "caller.h"

static const char *lib;
static pid_t running[8], servers[32];
static int nrunning, nservers;

static void die(const char *what) {
    fprintf(stderr, "killed_caller: %s: %s\n", what, fork_last_error());
    exit(1);
}

static void add_server(pid_t pid) {
    if (pid <= 0 || pid == getpid())
        return;
    for (int i = 0; i < nservers; i++)
        if (servers[i] == pid)
            return;
    servers[nservers++] = pid;
}

/* Runs rl_hold in p and waits until it said "running PID". */
static void start_holding(fork_proc *p) {
    if (fork_require(p, lib) < 0 || fork_send_fd(p, 0) < 0 || fork_send_fd(p, 1) < 0)
        die("sending");
    run_fd = -1000;
    if (fork_run(p, "rl_hold", ran, NULL) < 0)
        die("fork_run");
    while (run_fd == -1000)
        if (fork_wait(10000) <= 0)
            die("waiting for the run callback");
    if (run_fd < 0)
        die("the run callback");
    char line[64];
    size_t len = 0;
    while (len == 0 || line[len - 1] != '\n') {
        struct pollfd pf = {run_fd, POLLIN, 0};
        if (poll(&pf, 1, 10000) <= 0) {
            fprintf(stderr, "killed_caller: no running line\n");
            exit(1);
        }
        ssize_t n = read(run_fd, line + len, 1);
        if (n <= 0 && !(n < 0 && errno == EAGAIN)) {
            fprintf(stderr, "killed_caller: EOF before the running line\n");
            exit(1);
        }
        if (n > 0)
            len++;
    }
    line[len] = 0;
    int pid = 0;
    if (sscanf(line, "running %d", &pid) != 1) {
        fprintf(stderr, "killed_caller: bad line %s", line);
        exit(1);
    }
    running[nrunning++] = pid;
    /* The comm socket stays open (we hold it until we die). */
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: killed_caller LIB [early]\n");
        return 2;
    }
    lib = argv[1];
    if (argc > 2 && strcmp(argv[2], "early") == 0 && fork_early() < 0)
        die("fork_early");

    /* The default template. */
    for (int i = 0; i < 2; i++) {
        fork_proc *p = fork_new();
        if (!p)
            die("fork_new");
        start_holding(p);
    }
    fork_proc *unrun1 = fork_new();
    if (!unrun1)
        die("fork_new");
    pid_t u1 = fork_pid(unrun1);
    add_server(u1);
    add_server(ppid_of(u1));
    add_server(ppid_of(ppid_of(u1)));

    /* A template of our own. */
    fork_proc *t1 = fork_new_exec();
    if (!t1)
        die("fork_new_exec");
    for (int i = 0; i < 2; i++) {
        fork_proc *p = fork_fork(t1);
        if (!p)
            die("fork_fork");
        start_holding(p);
    }
    fork_proc *unrun2 = fork_fork(t1);
    if (!unrun2)
        die("fork_fork");
    add_server(fork_pid(t1));
    add_server(ppid_of(fork_pid(t1)));
    add_server(fork_pid(unrun2));

    /* A template freed while its child runs. */
    fork_proc *t2 = fork_new_exec();
    if (!t2)
        die("fork_new_exec");
    pid_t t2pid = fork_pid(t2);
    fork_proc *p = fork_fork(t2);
    if (!p)
        die("fork_fork");
    start_holding(p);
    fork_free(t2);
    for (int i = 0; i < 20; i++)
        fork_wait(10);
    add_server(t2pid);

    /* A copy of this program. */
    fork_proc *t3 = fork_template();
    if (!t3)
        die("fork_template");
    add_server(fork_pid(t3));
    p = fork_fork(t3);
    if (!p)
        die("fork_fork");
    start_holding(p);

    printf("running");
    for (int i = 0; i < nrunning; i++)
        printf(" %d", (int)running[i]);
    printf("\nservers");
    for (int i = 0; i < nservers; i++)
        printf(" %d", (int)servers[i]);
    printf("\nready\n");
    fflush(stdout);
    for (;;)
        pause();
}
