/*
 * Every C function of anyfork given bad input: NULL handles and pointers,
 * negative and closed fds, empty and missing names, a process that is gone.
 * Each call must fail with the documented negative errno (or NULL / -1),
 * leave a non-empty fork_last_error() naming the call, never call a
 * callback, and never crash. Bad calls must not disturb good handles:
 * a process that received failing calls still runs with exactly the
 * arguments that were accepted.
 *
 *   api_errors /abs/path/libchildren.so
 *
 * Exits 0 when every check passed; prints each failed check on stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "anyfork.h"
#include "checks.h"

/* The last error is non-empty and mentions `call`. */
static void check_msg(const char *call, int line) {
    const char *e = fork_last_error();
    checks++;
    if (e == NULL || e[0] == '\0') {
        failures++;
        fprintf(stderr, "FAIL line %d: %s: fork_last_error() is empty\n", line, call);
    } else if (strstr(e, call) == NULL) {
        failures++;
        fprintf(stderr, "FAIL line %d: %s: fork_last_error() does not name the call: \"%s\"\n",
                line, call, e);
    }
}

/* An int call that must return exactly -err with a message, and
 * fork_last_errno() must agree. */
#define EXPECT_ERR(call, err, expr)                                             \
    do {                                                                        \
        int r_ = (expr);                                                        \
        CHECK(r_ == -(err), "%s: %s returned %d, want %d (-%s)", call, #expr, r_, \
              -(err), #err);                                                    \
        CHECK(fork_last_errno() == r_, "%s: fork_last_errno() %d != %d", call,   \
              fork_last_errno(), r_);                                           \
        check_msg(call, __LINE__);                                              \
    } while (0)

/* An int call whose errno is not documented: any negative value. */
#define EXPECT_NEG(call, expr)                                                  \
    do {                                                                        \
        int r_ = (expr);                                                        \
        CHECK(r_ < 0, "%s: %s returned %d, want an error", call, #expr, r_);    \
        CHECK(fork_last_errno() == r_, "%s: fork_last_errno() %d != %d", call,   \
              fork_last_errno(), r_);                                           \
        check_msg(call, __LINE__);                                              \
    } while (0)

/* A pointer call that must return NULL with a message and a negative
 * fork_last_errno(). */
#define EXPECT_NULL(call, expr)                                  \
    do {                                                         \
        void *r_ = (void *)(expr);                               \
        CHECK(r_ == NULL, "%s: %s did not return NULL", call, #expr); \
        CHECK(fork_last_errno() < 0, "%s: fork_last_errno() is %d", call, \
              fork_last_errno());                                \
        check_msg(call, __LINE__);                               \
    } while (0)

static int run_cb_calls = 0;
static void run_cb(int fd, void *ud) {
    (void)ud;
    run_cb_calls++;
    if (fd >= 0)
        close(fd);
}

static int exit_cb_calls = 0;
static void exit_cb(pid_t pid, int status, void *ud) {
    (void)pid;
    (void)status;
    (void)ud;
    exit_cb_calls++;
}

static int good_fd = -1, good_cb_calls = 0;
static void good_cb(int fd, void *ud) {
    (void)ud;
    good_cb_calls++;
    good_fd = fd;
}

/* Reads a nonblocking fd to EOF into buf (NUL-terminated). */
static ssize_t read_all(int fd, char *buf, size_t cap) {
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n > 0) {
            len += (size_t)n;
            if (len == cap - 1)
                break;
            continue;
        }
        if (n == 0)
            break;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {
            struct pollfd p = {fd, POLLIN, 0};
            if (poll(&p, 1, 10000) <= 0)
                return -1;
            continue;
        }
        return -1;
    }
    buf[len] = 0;
    return (ssize_t)len;
}

/* Dispatches until fn-specific counter reaches `want` or 10 s pass. */
static void wait_for(int *counter, int want) {
    for (int i = 0; i < 1000 && *counter < want; i++)
        fork_wait(10);
}

static void *other_thread(void *arg) {
    (void)arg;
    const char *e = fork_last_error();
    return (void *)(e != NULL && e[0] == '\0' ? (void *)1 : NULL);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s LIBCHILDREN\n", argv[0]);
        return 2;
    }
    const char *lib = argv[1];

    /* Before any failure the message is "", not NULL. */
    const char *e0 = fork_last_error();
    CHECK(e0 != NULL && e0[0] == '\0', "fork_last_error() before any error is not \"\"");

    /* Server not found: fork_new_exec and fork_new fail with a message
     * naming what was tried, and work once the environment is fixed. */
    setenv("ANYFORK_SERVE", "/nonexistent/anyfork-serve", 1);
    EXPECT_NULL("fork_new_exec", fork_new_exec());
    CHECK(strstr(fork_last_error(), "/nonexistent/anyfork-serve") != NULL,
          "fork_new_exec: message does not name the path tried: \"%s\"", fork_last_error());
    EXPECT_NULL("fork_new", fork_new());
    unsetenv("ANYFORK_SERVE");

    /* NULL handles everywhere. */
    const char *one[] = {"a"};
    EXPECT_NULL("fork_fork", fork_fork(NULL));
    EXPECT_ERR("fork_ahead", EINVAL, fork_ahead(NULL, 1));
    EXPECT_ERR("fork_send_fd", EINVAL, fork_send_fd(NULL, 0));
    EXPECT_ERR("fork_send_arg", EINVAL, fork_send_arg(NULL, "x", 1));
    EXPECT_ERR("fork_send_arg", EINVAL, fork_send_arg(NULL, NULL, 0));
    EXPECT_ERR("fork_require", EINVAL, fork_require(NULL, lib));
    EXPECT_ERR("fork_eval", EINVAL, fork_eval(NULL, "init_status", one, 1));
    EXPECT_ERR("fork_run", EINVAL, fork_run(NULL, "dump_args", run_cb, NULL));
    EXPECT_ERR("fork_on_exit", EINVAL, fork_on_exit(NULL, exit_cb, NULL));
    CHECK(fork_pid(NULL) == -1, "fork_pid(NULL) != -1");
    CHECK(fork_last_errno() == -EINVAL, "fork_pid(NULL): fork_last_errno() %d", fork_last_errno());
    check_msg("fork_pid", __LINE__);
    fork_free(NULL); /* a no-op */
    const void *one_data[] = {"a"};
    size_t one_len[] = {1};
    EXPECT_ERR("fork_eval_n", EINVAL, fork_eval_n(NULL, "init_status", one_data, one_len, 1));
    EXPECT_ERR("fork_exec", EINVAL, fork_exec(NULL, one, NULL, run_cb, NULL));
    EXPECT_NEG("fork_to_fd", fork_to_fd(NULL));

    /* Functions that take an fd: negative, closed, not a socket. */
    {
        int pfd[2];
        if (pipe2(pfd, O_CLOEXEC) != 0)
            return 1;
        /* Closed last, so no fd opened meanwhile takes its number. */
        int closed_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        close(closed_fd);
        EXPECT_ERR("fork_serve", EBADF, fork_serve(-1));
        EXPECT_ERR("fork_serve", EBADF, fork_serve(closed_fd));
        EXPECT_ERR("fork_serve", ENOTSOCK, fork_serve(pfd[0]));
        EXPECT_NULL("fork_from_fd", fork_from_fd(-1));
        EXPECT_NULL("fork_from_fd", fork_from_fd(closed_fd));
        EXPECT_NULL("fork_from_fd", fork_from_fd(pfd[0]));
        CHECK(fcntl(pfd[0], F_GETFD) >= 0, "fork_from_fd closed an fd it refused");
        /* fork_from_fd is fork_from_fd_flags(fd, 0); messages name the former. */
        EXPECT_NULL("fork_from_fd", fork_from_fd_flags(-1, 0));
        EXPECT_NULL("fork_from_fd", fork_from_fd_flags(closed_fd, 0));
        close(pfd[0]);
        close(pfd[1]);
    }

    /* Custom servers: no argv, an empty argv, a program that is not there. */
    {
        const char *empty[] = {NULL};
        const char *blank[] = {"", NULL};
        const char *missing[] = {"/nonexistent/anyfork-test-server", NULL};
        EXPECT_NULL("fork_new_exec_argv", fork_new_exec_argv(NULL));
        EXPECT_NULL("fork_new_exec_argv", fork_new_exec_argv(empty));
        EXPECT_NULL("fork_new_exec_argv", fork_new_exec_argv(blank));
        EXPECT_NULL("fork_new_exec_argv", fork_new_exec_argv(missing));
    }

    /* The error is per thread: another thread still sees "". */
    pthread_t th;
    void *ok = NULL;
    if (pthread_create(&th, NULL, other_thread, NULL) == 0 && pthread_join(th, &ok) == 0)
        CHECK(ok != NULL, "fork_last_error() leaked to another thread");
    else
        CHECK(0, "pthread_create failed");

    /* A live process: every bad argument fails and sends nothing. */
    fork_proc *p = fork_new();
    CHECK(p != NULL, "fork_new: %s", fork_last_error());
    if (!p)
        return 1;
    int closed = open("/dev/null", O_RDONLY | O_CLOEXEC);
    close(closed);
    EXPECT_ERR("fork_send_fd", EBADF, fork_send_fd(p, -1));
    EXPECT_ERR("fork_send_fd", EBADF, fork_send_fd(p, -12345));
    EXPECT_ERR("fork_send_fd", EBADF, fork_send_fd(p, closed));
    EXPECT_ERR("fork_send_fd", EBADF, fork_send_fd(p, 1 << 20));
    EXPECT_ERR("fork_send_arg", EINVAL, fork_send_arg(p, NULL, 5));
    EXPECT_ERR("fork_require", EINVAL, fork_require(p, NULL));
    EXPECT_ERR("fork_require", EINVAL, fork_require(p, ""));
    EXPECT_ERR("fork_eval", EINVAL, fork_eval(p, NULL, one, 1));
    EXPECT_ERR("fork_eval", EINVAL, fork_eval(p, "", one, 1));
    EXPECT_ERR("fork_eval", EINVAL, fork_eval(p, "init_status", NULL, 2));
    const char *with_null[] = {"a", NULL};
    EXPECT_ERR("fork_eval", EINVAL, fork_eval(p, "init_status", with_null, 2));
    EXPECT_ERR("fork_on_exit", EINVAL, fork_on_exit(p, NULL, NULL));
    EXPECT_ERR("fork_eval_n", EINVAL, fork_eval_n(p, NULL, one_data, one_len, 1));
    EXPECT_ERR("fork_eval_n", EINVAL, fork_eval_n(p, "", one_data, one_len, 1));
    EXPECT_ERR("fork_eval_n", EINVAL, fork_eval_n(p, "init_status", NULL, one_len, 1));
    EXPECT_ERR("fork_eval_n", EINVAL, fork_eval_n(p, "init_status", one_data, NULL, 1));
    {
        const void *null_data[] = {NULL};
        size_t three[] = {3};
        EXPECT_ERR("fork_eval_n", EINVAL, fork_eval_n(p, "init_status", null_data, three, 1));
    }

    /* Good calls still work on the same handle; a zero-length NULL string
     * is allowed. */
    CHECK(fork_require(p, lib) == 0, "fork_require: %s", fork_last_error());
    CHECK(fork_send_arg(p, NULL, 0) == 0, "fork_send_arg(p, NULL, 0): %s", fork_last_error());
    CHECK(fork_send_fd(p, 0) == 0, "fork_send_fd(p, 0): %s", fork_last_error());
    CHECK(fork_eval(p, "init_status", NULL, 0) == 0, "fork_eval(p, f, NULL, 0): %s",
          fork_last_error());
    CHECK(fork_pid(p) > 0, "fork_pid: %s", fork_last_error());
    CHECK(fork_run(p, "count_args", good_cb, NULL) == 0, "fork_run: %s", fork_last_error());
    wait_for(&good_cb_calls, 1);
    CHECK(good_cb_calls == 1, "the good run callback ran %d times", good_cb_calls);
    if (good_fd >= 0) {
        char buf[64];
        ssize_t n = read_all(good_fd, buf, sizeof buf);
        /* Exactly the empty string and fd 0 arrived. */
        CHECK(n > 0 && strcmp(buf, "2\n") == 0, "the child got \"%s\" arguments, want 2",
              n > 0 ? buf : "(nothing)");
        close(good_fd);
    } else {
        CHECK(0, "the good run callback got %d", good_fd);
    }

    /* fork_run consumes the handle even when it fails, and never calls
     * the callback. */
    fork_proc *q = fork_new();
    CHECK(q != NULL, "fork_new: %s", fork_last_error());
    EXPECT_ERR("fork_run", EINVAL, fork_run(q, NULL, run_cb, NULL));
    q = fork_new();
    CHECK(q != NULL, "fork_new: %s", fork_last_error());
    EXPECT_ERR("fork_run", EINVAL, fork_run(q, "", run_cb, NULL));
    /* fork_exec consumes it the same way. */
    q = fork_new();
    CHECK(q != NULL, "fork_new: %s", fork_last_error());
    EXPECT_ERR("fork_exec", EINVAL, fork_exec(q, NULL, NULL, run_cb, NULL));
    q = fork_new();
    CHECK(q != NULL, "fork_new: %s", fork_last_error());
    {
        const char *no_prog[] = {NULL};
        EXPECT_NEG("fork_exec", fork_exec(q, no_prog, NULL, run_cb, NULL));
    }

    /* A process that is gone: calls fail with -EPIPE, callbacks never run. */
    fork_proc *t = fork_new_exec();
    CHECK(t != NULL, "fork_new_exec: %s", fork_last_error());
    if (t) {
        pid_t pid = fork_pid(t);
        CHECK(pid > 0, "fork_pid of a new_exec process: %d", (int)pid);
        CHECK(fork_on_exit(t, exit_cb, NULL) == 0, "fork_on_exit: %s", fork_last_error());
        EXPECT_ERR("fork_ahead", EINVAL, fork_ahead(t, 65));
        CHECK(strstr(fork_last_error(), "64") != NULL, "fork_ahead: no limit in \"%s\"",
              fork_last_error());
        kill(pid, SIGKILL);
        int r = 0;
        for (int i = 0; i < 1000; i++) {
            r = fork_send_arg(t, "x", 1);
            if (r < 0)
                break;
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        CHECK(r == -EPIPE, "fork_send_arg to a killed process returned %d, want -EPIPE", r);
        check_msg("fork_send_arg", __LINE__);
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        EXPECT_ERR("fork_send_fd", EPIPE, fork_send_fd(t, fd));
        close(fd);
        EXPECT_NULL("fork_fork", fork_fork(t));
        EXPECT_NEG("fork_ahead", fork_ahead(t, 2));
        EXPECT_ERR("fork_run", EPIPE, fork_run(t, "dump_args", run_cb, NULL));
        wait_for(&exit_cb_calls, 1);
        CHECK(exit_cb_calls == 1, "the killed template's exit callback ran %d times",
              exit_cb_calls);
    }

    /* Loop calls with nothing wrong work, and the dispatch of all the
     * above never ran a callback of a failed call. */
    CHECK(fork_loop_fd() >= 0, "fork_loop_fd: %s", fork_last_error());
    CHECK(fork_loop_dispatch() >= 0, "fork_loop_dispatch: %s", fork_last_error());
    for (int i = 0; i < 50 && fork_pending() > 0; i++)
        fork_wait(10);
    CHECK(fork_wait(0) >= 0, "fork_wait(0): %s", fork_last_error());
    CHECK(run_cb_calls == 0, "a callback of a failed fork_run ran %d times", run_cb_calls);
    CHECK(fork_pending() == 0, "%zu callbacks still pending", fork_pending());

    /* Outside a child, fork_child_args has nothing. */
    size_t n = 99;
    CHECK(fork_child_args(&n) == NULL && n == 0, "fork_child_args outside a child");
    CHECK(fork_child_args(NULL) == NULL, "fork_child_args(NULL)");

    return checks_done();
}
