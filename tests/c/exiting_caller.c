/*
 * A caller that creates templates and processes and then goes away without
 * cleaning up, so that a test can check that nothing is left behind.
 *
 *   exiting_caller MODE
 *
 * Creates: the default template (through fork_new) with three forked
 * processes waiting for commands, and two fork_new_exec templates with one
 * forked process each. Waits until every fork is confirmed (fork_pid), then
 * prints "ready" and the pids of the forked processes on one line, and
 * reads stdin until EOF. Then, by MODE:
 *   return   returns from main (exit handlers run, handles still live)
 *   _exit    _exit(0) at once
 *   wait     blocks forever (the test kills it with SIGKILL)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "anyfork.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODE\n", argv[0]);
        return 2;
    }
    fork_proc *procs[5];
    fork_proc *tmpl[2];
    int n = 0;
    for (int i = 0; i < 3; i++) {
        procs[n] = fork_new();
        if (!procs[n]) {
            fprintf(stderr, "fork_new: %s\n", fork_last_error());
            return 1;
        }
        n++;
    }
    for (int i = 0; i < 2; i++) {
        tmpl[i] = fork_new_exec();
        if (!tmpl[i] || fork_send_arg(tmpl[i], "x", 1) < 0) {
            fprintf(stderr, "fork_new_exec: %s\n", fork_last_error());
            return 1;
        }
        procs[n] = fork_fork(tmpl[i]);
        if (!procs[n]) {
            fprintf(stderr, "fork_fork: %s\n", fork_last_error());
            return 1;
        }
        n++;
    }
    printf("ready");
    for (int i = 0; i < n; i++) {
        pid_t pid = fork_pid(procs[i]);
        if (pid <= 0) {
            fprintf(stderr, "fork_pid: %s\n", fork_last_error());
            return 1;
        }
        printf(" %d", (int)pid);
    }
    printf("\n");
    fflush(stdout);

    char buf[64];
    while (read(0, buf, sizeof buf) > 0) {
    }
    if (strcmp(argv[1], "_exit") == 0)
        _exit(0);
    if (strcmp(argv[1], "wait") == 0)
        for (;;)
            pause();
    return 0;
}
