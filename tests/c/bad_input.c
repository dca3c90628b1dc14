/*
 * Bad input to the C functions that tests/c/api_errors.c does not cover:
 * fork_exec, fork_new_exec_argv, fork_to_fd on a dead process, strings of
 * 4 GiB, names too long or not UTF-8, a freed-then-NULLed handle, odd
 * timeouts, a replaced exit callback (which runs once, with -ECANCELED). Each call must fail with its errno
 * and a message naming the call (never crash), a failed call must never
 * run its callback, and a handle that saw failures must still work with
 * exactly what was accepted.
 *
 *   bad_input /abs/path/libchildren.so [size_max]
 *
 * With "size_max", only checks that a length of SIZE_MAX (what a failed
 * read() returns, cast to size_t) is -E2BIG like any length of 4 GiB or
 * more, not an abort.
 *
 * Exits 0 when every check passed; prints each failed one on stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "anyfork.h"
#include "caller.h"
#include "checks.h"

/* The last error names `call` and contains `word` (if not NULL). */
static void check_msg(const char *call, const char *word, int line) {
    const char *e = fork_last_error();
    checks++;
    if (!e || !strstr(e, call) || (word && !strstr(e, word))) {
        failures++;
        fprintf(stderr, "FAIL line %d: %s: the message does not name the call%s%s: \"%s\"\n", line,
                call, word ? " and " : "", word ? word : "", e ? e : "(null)");
    }
}

#define EXPECT_ERR(call, word, err, expr)                                            \
    do {                                                                             \
        int r_ = (expr);                                                             \
        CHECK(r_ == -(err), "%s: %s returned %d, want -%s", call, #expr, r_, #err); \
        check_msg(call, word, __LINE__);                                             \
    } while (0)

#define EXPECT_NULL(call, word, expr)                                 \
    do {                                                              \
        void *r_ = (void *)(expr);                                    \
        CHECK(r_ == NULL, "%s: %s did not return NULL", call, #expr); \
        check_msg(call, word, __LINE__);                              \
    } while (0)

static int bad_cb_calls;
static void bad_cb(int fd, void *ud) {
    (void)ud;
    bad_cb_calls++;
    if (fd >= 0)
        close(fd);
}

static int exit_calls[2], exit_status = -1000, replaced_pid, replaced_status;
static void exit_a(pid_t pid, int st, void *ud) {
    (void)ud;
    exit_calls[0]++;
    replaced_pid = pid;
    replaced_status = st;
}
static void exit_b(pid_t pid, int st, void *ud) {
    (void)pid;
    (void)ud;
    exit_calls[1]++;
    exit_status = st;
}

/* valgrind runs this program with its preload library. */
static int under_valgrind(void) {
    const char *pre = getenv("LD_PRELOAD");
    return pre && strstr(pre, "valgrind");
}

static void settle(void) {
    for (int i = 0; i < 300 && fork_pending() > 0; i++)
        fork_wait(10);
}

int main(int argc, char **argv) {
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: bad_input LIB [size_max]\n");
        return 2;
    }
    const char *lib = argv[1];
    char buf[16384];
    fork_proc *p;

    if (argc == 3) {
        p = fork_new();
        CHECK(p != NULL, "fork_new: %s", fork_last_error());
        char small[16] = "0123456789abcdef";
        ssize_t failed_read = -1;
        EXPECT_ERR("fork_send_arg", "4 GiB", E2BIG, fork_send_arg(p, small, (size_t)failed_read));
        EXPECT_ERR("fork_send_arg", "4 GiB", E2BIG,
                   fork_send_arg(p, small, (size_t)PTRDIFF_MAX + 1));
        fork_free(p);
        goto done;
    }

    /* A freed-then-NULLed handle is a NULL handle everywhere. */
    p = fork_new();
    CHECK(p != NULL, "fork_new: %s", fork_last_error());
    fork_free(p);
    p = NULL;
    fork_free(p);
    EXPECT_ERR("fork_send_arg", "NULL", EINVAL, fork_send_arg(p, "x", 1));
    EXPECT_ERR("fork_send_fd", "NULL", EINVAL, fork_send_fd(p, 0));
    EXPECT_NULL("fork_fork", "NULL", fork_fork(p));
    EXPECT_ERR("fork_run", "NULL", EINVAL, fork_run(p, "echo_strings", bad_cb, NULL));
    EXPECT_ERR("fork_to_fd", "NULL", EINVAL, fork_to_fd(p));
    const char *argv_ok[] = {"/bin/true", NULL};
    EXPECT_ERR("fork_exec", "NULL", EINVAL, fork_exec(p, argv_ok, NULL, bad_cb, NULL));
    CHECK(fork_pid(p) == -1, "fork_pid(NULL)");

    /* fork_exec: bad argv consumes the handle and never calls back. */
    p = fork_new();
    EXPECT_ERR("fork_exec", "argv", EINVAL, fork_exec(p, NULL, NULL, bad_cb, NULL));
    const char *empty_argv[] = {NULL};
    p = fork_new();
    EXPECT_ERR("fork_exec", "argv", EINVAL, fork_exec(p, empty_argv, NULL, bad_cb, NULL));

    /* fork_new_exec_argv: nothing to run, or nothing there. */
    EXPECT_NULL("fork_new_exec_argv", "argv", fork_new_exec_argv(NULL));
    EXPECT_NULL("fork_new_exec_argv", "argv", fork_new_exec_argv(empty_argv));
    const char *missing[] = {"/nonexistent/anyfork-custom-server", NULL};
    const char *not_in_path[] = {"anyfork-no-such-server-in-path", NULL};
    if (!under_valgrind()) {
        EXPECT_NULL("fork_new_exec_argv", "/nonexistent/anyfork-custom-server",
                    fork_new_exec_argv(missing));
        EXPECT_NULL("fork_new_exec_argv", "anyfork-no-such-server-in-path",
                    fork_new_exec_argv(not_in_path));
    } else {
        /* valgrind emulates posix_spawn with fork + exec, so the exec
         * failure cannot be reported by posix_spawn: the server exits 127
         * and the handle fails later (or at once, if the hello frame
         * already met a closed socket). Either way: no crash, no leak. */
        fork_free(fork_new_exec_argv(missing));
        fork_free(fork_new_exec_argv(not_in_path));
    }

    /* Names and strings the protocol cannot carry. */
    p = fork_new();
    CHECK(p != NULL, "fork_new: %s", fork_last_error());
    if (!p)
        return 1;
    CHECK(fork_require(p, lib) == 0, "fork_require: %s", fork_last_error());
    CHECK(fork_send_arg(p, "first", 5) == 0, "fork_send_arg: %s", fork_last_error());
    char *longname = malloc(5001);
    memset(longname, 'f', 5000);
    longname[5000] = 0;
    EXPECT_ERR("fork_require", "longer", ENAMETOOLONG, fork_require(p, longname));
    EXPECT_ERR("fork_eval", "longer", ENAMETOOLONG, fork_eval(p, longname, NULL, 0));
    EXPECT_ERR("fork_require", "UTF-8", EINVAL, fork_require(p, "/tmp/lib\xff\xfe.so"));
    EXPECT_ERR("fork_eval", "UTF-8", EINVAL, fork_eval(p, "rl_\xc3", NULL, 0));
    /* A string of 4 GiB: refused before a byte of it is read (the pages
     * are reserved, never touched). */
    size_t four_g = (size_t)1 << 32;
    void *huge = mmap(NULL, four_g, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (huge != MAP_FAILED) {
        EXPECT_ERR("fork_send_arg", "4 GiB", E2BIG, fork_send_arg(p, huge, four_g));
        munmap(huge, four_g);
    } else {
        CHECK(0, "mmap of 4 GiB failed");
    }
    /* An fd that is not open any more, and one far above any limit. */
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    close(fd);
    EXPECT_ERR("fork_send_fd", "not open", EBADF, fork_send_fd(p, fd));
    EXPECT_ERR("fork_send_fd", NULL, EBADF, fork_send_fd(p, INT_MAX));
    EXPECT_ERR("fork_send_fd", "negative", EBADF, fork_send_fd(p, INT_MIN));
    /* The exit callback: NULL refused, a second one replaces the first. */
    EXPECT_ERR("fork_on_exit", "NULL", EINVAL, fork_on_exit(p, NULL, NULL));
    CHECK(fork_on_exit(p, exit_a, NULL) == 0, "fork_on_exit: %s", fork_last_error());
    CHECK(fork_on_exit(p, exit_b, NULL) == 0, "fork_on_exit: %s", fork_last_error());
    CHECK(fork_send_arg(p, "last", 4) == 0, "fork_send_arg: %s", fork_last_error());
    /* The handle still works, and got only what was accepted. */
    int n = run_read(p, "rl_report", buf, sizeof buf);
    CHECK(n > 0, "the report: %s", fork_last_error());
    CHECK(strstr(buf, "arg 0 S 5 first\n") && strstr(buf, "arg 1 S 4 last\n") &&
              !strstr(buf, "arg 2 "),
          "the process got more than was accepted:\n%s", buf);
    CHECK(run_calls == 1, "the run callback ran %d times", run_calls);
    settle();
    /* Each exit callback runs exactly once: the replaced one with pid -1
     * and -ECANCELED, the new one with the status. */
    CHECK(exit_calls[0] == 1 && exit_calls[1] == 1,
          "exit callbacks: the replaced one ran %d times, the new one %d times", exit_calls[0],
          exit_calls[1]);
    CHECK(replaced_pid == -1 && replaced_status == -ECANCELED,
          "the replaced exit callback got pid %d, status %d", replaced_pid, replaced_status);
    CHECK(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0, "exit status %#x",
          exit_status);

    /* fork_run with a name too long: consumed, no callback. */
    p = fork_new();
    EXPECT_ERR("fork_run", "longer", ENAMETOOLONG, fork_run(p, longname, bad_cb, NULL));
    free(longname);

    /* A process that is gone: fork_to_fd and fork_exec fail with EPIPE
     * (or the error that killed it) and consume the handle. */
    fork_proc *t = fork_new_exec();
    CHECK(t != NULL, "fork_new_exec: %s", fork_last_error());
    if (t) {
        kill(fork_pid(t), SIGKILL);
        int r = 0;
        for (int i = 0; i < 500 && r >= 0; i++) {
            r = fork_send_arg(t, "x", 1);
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        CHECK(r == -EPIPE, "writing to a killed server gave %d", r);
        r = fork_to_fd(t);
        CHECK(r < 0, "fork_to_fd of a dead process gave fd %d", r);
        check_msg("fork_to_fd", NULL, __LINE__);
    }
    t = fork_new_exec();
    if (t) {
        kill(fork_pid(t), SIGKILL);
        int r = 0;
        for (int i = 0; i < 500 && r >= 0; i++) {
            r = fork_send_arg(t, "x", 1);
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        EXPECT_ERR("fork_exec", NULL, EPIPE, fork_exec(t, argv_ok, NULL, bad_cb, NULL));
    }

    /* Timeouts: anything negative waits without limit, but with nothing
     * waiting every wait returns at once. */
    settle();
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    CHECK(fork_wait(INT_MIN) == 0, "fork_wait(INT_MIN) with nothing waiting");
    CHECK(fork_wait(-1) == 0, "fork_wait(-1) with nothing waiting");
    CHECK(fork_wait(INT_MAX) == 0, "fork_wait(INT_MAX) with nothing waiting");
    clock_gettime(CLOCK_MONOTONIC, &b);
    CHECK(b.tv_sec - a.tv_sec < 2, "waiting with nothing to wait for took seconds");

    /* A dispatcher set and cleared in the caller changes nothing here. */
    fork_set_dispatch(NULL, NULL);

    settle();
    CHECK(bad_cb_calls == 0, "a callback of a failed call ran %d times", bad_cb_calls);
    CHECK(fork_pending() == 0, "%zu callbacks pending", fork_pending());

done:
    return checks_done();
}
