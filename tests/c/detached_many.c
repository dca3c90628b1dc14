/*
 * "Configure and forget" without an event loop: N processes run with no
 * callback (fork_run(p, fn, NULL, NULL)), then the documented way to wait
 * for everything, `while (fork_wait(-1) > 0) ;`, then the program ends.
 * Each process appends one byte to FILE (sent to it as an fd), so a
 * process that never ran is a missing byte; the test counts them once
 * every process of the session has ended.
 *
 *   detached_many /abs/path/libchildren.so N FILE
 *
 * The default template is stopped (SIGSTOP) while the processes are
 * created and continued (SIGCONT) before fork_wait, so that the caller
 * outpaces it, as a busy machine makes it do now and then.
 *
 * Prints how many callbacks were still pending and how many fds this
 * program held when fork_wait said nothing was left to wait for.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <unistd.h>

#include "anyfork.h"
#include "caller.h"

static int open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n - 3; /* ".", ".." and the directory's own fd */
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: detached_many LIB N FILE\n");
        return 2;
    }
    const char *lib = argv[1];
    int n = atoi(argv[2]);
    int out = open(argv[3], O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) {
        perror(argv[3]);
        return 2;
    }
    int before = open_fds();
    pid_t template = -1;
    for (int i = 0; i < n; i++) {
        fork_proc *p = fork_new();
        if (i == 0 && p) {
            template = ppid_of(fork_pid(p));
            if (template <= 1) {
                fprintf(stderr, "no template pid\n");
                return 2;
            }
            kill(template, SIGSTOP);
        }
        if (!p || fork_require(p, lib) < 0 || fork_send_fd(p, out) < 0 ||
            fork_send_arg(p, "x", 1) < 0 || fork_run(p, "rl_write_arg", NULL, NULL) < 0) {
            fprintf(stderr, "process %d: %s\n", i, fork_last_error());
            return 1;
        }
    }
    kill(template, SIGCONT);
    while (fork_wait(-1) > 0) {
    }
    printf("after fork_wait: %zu pending, %d fds open (%d before)\n", fork_pending(), open_fds(),
           before);
    return 0;
}
