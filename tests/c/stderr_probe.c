/*
 * Makes one process fail in its setup and reports what the caller saw, so
 * that a test can capture the child's stderr (the child inherits this
 * program's stderr through the default template).
 *
 *   stderr_probe LIBCHILDREN MODE
 *     MODE run:     fork_run of a function that does not exist
 *     MODE eval:    fork_eval of a function that does not exist
 *     MODE require: fork_require of a library that does not exist
 *     MODE fail:    fork_eval of init_status returning 42
 *
 * Prints "run=R bytes=N read_errno=E status=S pid=P" on stdout: R the fd
 * sign the run callback got (1 for a socket, else the negative errno; or
 * -EPIPE when fork_run itself failed because the process was gone), N
 * the bytes read before the socket ended, E the errno that ended reading
 * (0 for a clean EOF), S the raw wait status, P the pid the exit callback
 * got.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "anyfork.h"

static int run_result = 0, run_called = 0, exit_called = 0;
static long bytes = -1;
static int read_errno = 0;
static int status = -1;
static pid_t exit_pid = 0;

static void on_run(int fd, void *ud) {
    (void)ud;
    run_called++;
    if (fd < 0) {
        run_result = fd;
        return;
    }
    run_result = 1;
    bytes = 0;
    for (;;) {
        char b[4096];
        ssize_t n = read(fd, b, sizeof b);
        if (n > 0) {
            bytes += n;
            continue;
        }
        if (n == 0)
            break;
        if (errno == EAGAIN) {
            struct pollfd p = {fd, POLLIN, 0};
            if (poll(&p, 1, 10000) <= 0) {
                fprintf(stderr, "probe: no EOF within 10 s\n");
                break;
            }
            continue;
        }
        if (errno != EINTR) {
            read_errno = errno;
            break;
        }
    }
    close(fd);
}

static void on_exit_cb(pid_t pid, int st, void *ud) {
    (void)ud;
    exit_called++;
    exit_pid = pid;
    status = st;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s LIB MODE\n", argv[0]);
        return 2;
    }
    const char *lib = argv[1], *mode = argv[2];
    fork_proc *p = fork_new();
    if (!p) {
        fprintf(stderr, "probe: fork_new: %s\n", fork_last_error());
        return 1;
    }
    if (fork_on_exit(p, on_exit_cb, NULL) < 0) {
        fprintf(stderr, "probe: fork_on_exit: %s\n", fork_last_error());
        return 1;
    }
    int r = 0;
    const char *run = "dump_args";
    if (strcmp(mode, "require") == 0) {
        r = fork_require(p, "/nonexistent/dir/libanyfork_probe_missing.so");
    } else {
        r = fork_require(p, lib);
        if (r >= 0 && strcmp(mode, "eval") == 0)
            r = fork_eval(p, "anyfork_probe_no_such_init", NULL, 0);
        if (r >= 0 && strcmp(mode, "fail") == 0) {
            const char *a[] = {"42"};
            r = fork_eval(p, "init_status", a, 1);
        }
        if (strcmp(mode, "run") == 0)
            run = "anyfork_probe_no_such_function";
    }
    if (r < 0) {
        fprintf(stderr, "probe: setup: %s\n", fork_last_error());
        return 1;
    }
    int rr = fork_run(p, run, on_run, NULL);
    if (rr == -EPIPE) {
        /* The process died before the run was written: no callback. */
        run_result = rr;
        run_called = 1;
    } else if (rr < 0) {
        fprintf(stderr, "probe: fork_run: %s\n", fork_last_error());
        return 1;
    }
    while (fork_wait(10000) > 0) {
    }
    if (run_called != 1 || exit_called != 1) {
        fprintf(stderr, "probe: run callback ran %d times, exit callback %d times\n",
                run_called, exit_called);
        return 1;
    }
    printf("run=%d bytes=%ld read_errno=%d status=%d pid=%d\n", run_result, bytes, read_errno,
           status, (int)exit_pid);
    return 0;
}
