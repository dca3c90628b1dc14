/*
 * A program with its own event loop (poll on fork_loop_fd, dispatch when
 * readable, nothing else), waiting for the exit callback of a direct
 * child: a fork_new_exec template that it frees, and one it kills.
 *
 *   loop_exit
 *
 * Prints "exit seen: STATUS" for each, or "stalled" when the loop fd
 * stays quiet for 5 s with the callback still pending; exits 0 only if
 * both were seen.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "anyfork.h"

static int seen, status;
static void exited(pid_t pid, int st, void *ud) {
    (void)pid;
    (void)ud;
    seen = 1;
    status = st;
}

/* The loop: only the loop fd, only dispatch when it is readable. */
static int wait_exit(void) {
    int fd = fork_loop_fd();
    while (!seen) {
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, 5000) == 0) {
            printf("stalled (%zu callbacks pending)\n", fork_pending());
            return 0;
        }
        fork_loop_dispatch();
    }
    printf("exit seen: %#x\n", status);
    return 1;
}

int main(void) {
    int ok = 0;
    fork_proc *t = fork_new_exec();
    if (!t || fork_on_exit(t, exited, NULL) < 0) {
        fprintf(stderr, "%s\n", fork_last_error());
        return 2;
    }
    fork_free(t);
    ok += wait_exit();

    seen = 0;
    t = fork_new_exec();
    if (!t || fork_on_exit(t, exited, NULL) < 0) {
        fprintf(stderr, "%s\n", fork_last_error());
        return 2;
    }
    kill(fork_pid(t), SIGKILL);
    ok += wait_exit();
    fork_free(t);
    return ok == 2 ? 0 : 1;
}
