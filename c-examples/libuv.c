/*
 * libuv.c: anyfork inside a libuv event loop.
 *
 * The whole library needs one handle: a uv_poll_t on fork_loop_fd() whose
 * callback calls fork_loop_dispatch(). Everything else is ordinary libuv
 * code.
 *
 * The program loads libecho_worker.so once into a template
 * (fork_new_exec + fork_require), then forks 1,000 workers from it, at
 * most 64 at a time. Worker n gets the string "n", writes "hello n\n" back
 * over its comm socket and exits. The parent watches each comm socket with
 * a uv_poll_t of its own, checks the line when EOF arrives, and checks the
 * exit status the template reports for each worker. Finally it frees the
 * template; when the template's exit is reported, every handle is closed
 * and uv_run() returns. Exit status 0 only if all 1,000 answered correctly
 * and exited 0.
 *
 * Usage: libuv [path/to/libecho_worker.so]
 * (default: libecho_worker.so in the directory of this executable)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "anyfork.h"

#define TOTAL 1000
#define MAX_IN_FLIGHT 64
#define STALL_MS 10000 /* give up if nothing happens for this long */

struct job {
    uv_poll_t poll;      /* watches the comm socket; poll.data points back here */
    int n;
    int fd;              /* our end of the comm socket while open, else -1 */
    char buf[32];        /* what the worker wrote */
    size_t len;
    int answer;          /* 0 pending, 1 correct, -1 wrong or failed */
    int exited;          /* the exit callback ran */
    int status;          /* wait status, or -errno */
    int counted;
};

static uv_loop_t loop;
static uv_poll_t loop_watcher; /* the one handle on fork_loop_fd() */
static uv_timer_t watchdog;    /* restarted whenever a worker finishes */
static struct job jobs[TOTAL];
static fork_proc *tmpl;
static int next_job, in_flight, finished, good, stop_starting, broken;
static int tmpl_done, tmpl_status;

static void start_jobs(void);

static void uv_check(int rc, const char *what)
{
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", what, uv_strerror(rc));
        broken = 1;
    }
}

/* Closes every open handle, so that uv_run() returns. */
static void close_handle(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void stop_loop(void)
{
    uv_walk(&loop, close_handle, NULL);
}

/* A job is over once its answer and its exit status are both known. */
static void job_step(struct job *j)
{
    if (j->answer == 0 || !j->exited || j->counted)
        return;
    j->counted = 1;
    in_flight--;
    finished++;
    uv_check(uv_timer_again(&watchdog), "uv_timer_again");
    if (j->answer > 0 && j->status >= 0 && WIFEXITED(j->status) && WEXITSTATUS(j->status) == 0)
        good++;
    else
        fprintf(stderr, "worker %d failed (answer %s, wait status %d)\n", j->n,
                j->answer > 0 ? "right" : "wrong", j->status);
    start_jobs();
}

static void on_template_exit(pid_t pid, int wait_status, void *userdata)
{
    (void)userdata;
    tmpl_done = 1;
    tmpl_status = wait_status;
    if (finished < TOTAL)
        fprintf(stderr, "the template (pid %ld) exited early: %d\n", (long)pid, wait_status);
    stop_loop();
}

static void on_exit_cb(pid_t pid, int wait_status, void *userdata)
{
    struct job *j = userdata;
    (void)pid;
    j->exited = 1;
    j->status = wait_status;
    job_step(j);
}

/* The poll handle is closed: now the fd may go. */
static void on_job_closed(uv_handle_t *h)
{
    struct job *j = h->data;
    if (close(j->fd) < 0)
        perror("close");
    j->fd = -1;
    job_step(j);
}

/* The comm socket of a job is readable: collect the line, then EOF. */
static void on_readable(uv_poll_t *h, int status, int events)
{
    struct job *j = h->data;
    (void)events;
    if (status < 0) {
        fprintf(stderr, "worker %d: poll: %s\n", j->n, uv_strerror(status));
        j->answer = -1;
    }
    while (j->answer == 0) {
        if (j->len == sizeof j->buf) {
            j->answer = -1; /* more than any right answer */
            break;
        }
        ssize_t n = read(j->fd, j->buf + j->len, sizeof j->buf - j->len);
        if (n > 0) {
            j->len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return; /* more later */
        if (n < 0) {
            fprintf(stderr, "worker %d: read: %s\n", j->n, strerror(errno));
            j->answer = -1;
            break;
        }
        /* EOF: the worker is done writing. */
        char want[32];
        int len = snprintf(want, sizeof want, "hello %d\n", j->n);
        j->answer = len > 0 && (size_t)len == j->len && memcmp(want, j->buf, j->len) == 0 ? 1 : -1;
        if (j->answer < 0)
            fprintf(stderr, "worker %d: unexpected answer \"%.*s\"\n", j->n, (int)j->len, j->buf);
    }
    uv_close((uv_handle_t *)h, on_job_closed);
}

static void on_run(int fd, void *userdata)
{
    struct job *j = userdata;
    if (fd < 0) {
        fprintf(stderr, "worker %d did not start: %s\n", j->n, fork_last_error());
        j->answer = -1;
        job_step(j);
        return;
    }
    j->fd = fd;
    int rc = uv_poll_init(&loop, &j->poll, fd);
    if (rc == 0) {
        j->poll.data = j;
        rc = uv_poll_start(&j->poll, UV_READABLE, on_readable);
        if (rc < 0) {
            uv_check(rc, "uv_poll_start");
            j->answer = -1;
            uv_close((uv_handle_t *)&j->poll, on_job_closed);
        }
        return;
    }
    uv_check(rc, "uv_poll_init");
    if (close(fd) < 0)
        perror("close");
    j->fd = -1;
    j->answer = -1;
    job_step(j);
}

/* The library has work: the only place anyfork callbacks run. */
static void on_loop_fd(uv_poll_t *h, int status, int events)
{
    (void)h;
    (void)events;
    if (status < 0) {
        uv_check(status, "polling fork_loop_fd");
        stop_loop();
        return;
    }
    if (fork_loop_dispatch() < 0) {
        fprintf(stderr, "fork_loop_dispatch: %s\n", fork_last_error());
        broken = 1;
        stop_loop();
    }
}

static void on_stall(uv_timer_t *t)
{
    (void)t;
    fprintf(stderr, "stalled: nothing happened for %d ms (%d of %d finished)\n", STALL_MS,
            finished, TOTAL);
    broken = 1;
    stop_loop();
}

static void start_one(struct job *j)
{
    char num[16];
    int len = snprintf(num, sizeof num, "%d", j->n);
    fork_proc *p = fork_fork(tmpl);
    if (p == NULL) {
        fprintf(stderr, "fork_fork: %s\n", fork_last_error());
        stop_starting = 1;
        return;
    }
    if (len < 0 || fork_send_arg(p, num, (size_t)len) < 0 || fork_on_exit(p, on_exit_cb, j) < 0) {
        fprintf(stderr, "preparing worker %d: %s\n", j->n, fork_last_error());
        fork_free(p);
        stop_starting = 1;
        return;
    }
    if (fork_run(p, "echo_run", on_run, j) < 0) {
        fprintf(stderr, "fork_run: %s\n", fork_last_error());
        stop_starting = 1;
        return;
    }
    in_flight++;
    next_job++;
}

static void start_jobs(void)
{
    while (!stop_starting && next_job < TOTAL && in_flight < MAX_IN_FLIGHT)
        start_one(&jobs[next_job]);
    /* Every job is over: let the template go; its exit ends the loop. */
    if (in_flight == 0 && (next_job == TOTAL || stop_starting) && tmpl != NULL) {
        fork_free(tmpl);
        tmpl = NULL;
    }
}

static int worker_path(char *out, size_t size, int argc, char **argv, const char *file)
{
    if (argc > 1) {
        if (strlen(argv[1]) >= size)
            return -1;
        strcpy(out, argv[1]);
        return 0;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n < 0)
        return -1;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash == NULL)
        return -1;
    *slash = '\0';
    int len = snprintf(out, size, "%s/%s", exe, file);
    return len < 0 || (size_t)len >= size ? -1 : 0;
}

int main(int argc, char **argv)
{
    char lib[PATH_MAX];
    if (argc > 2) {
        fprintf(stderr, "usage: %s [libecho_worker.so]\n", argv[0]);
        return 2;
    }
    if (worker_path(lib, sizeof lib, argc, argv, "libecho_worker.so") < 0) {
        fprintf(stderr, "cannot make the worker library's path\n");
        return 1;
    }
    for (int i = 0; i < TOTAL; i++) {
        jobs[i].n = i + 1;
        jobs[i].fd = -1;
    }

    int rc = uv_loop_init(&loop);
    if (rc < 0) {
        fprintf(stderr, "uv_loop_init: %s\n", uv_strerror(rc));
        return 1;
    }
    int lfd = fork_loop_fd();
    if (lfd < 0) {
        fprintf(stderr, "fork_loop_fd: %s\n", fork_last_error());
        return 1;
    }
    if ((rc = uv_poll_init(&loop, &loop_watcher, lfd)) < 0 ||
        (rc = uv_poll_start(&loop_watcher, UV_READABLE, on_loop_fd)) < 0 ||
        (rc = uv_timer_init(&loop, &watchdog)) < 0 ||
        (rc = uv_timer_start(&watchdog, on_stall, STALL_MS, STALL_MS)) < 0) {
        fprintf(stderr, "setting up the loop: %s\n", uv_strerror(rc));
        return 1;
    }

    tmpl = fork_new_exec();
    if (tmpl == NULL) {
        fprintf(stderr, "fork_new_exec: %s\n", fork_last_error());
        return 1;
    }
    if (fork_on_exit(tmpl, on_template_exit, NULL) < 0 || fork_require(tmpl, lib) < 0) {
        fprintf(stderr, "preparing the template: %s\n", fork_last_error());
        fork_free(tmpl);
        return 1;
    }
    start_jobs();

    /* Returns once every handle is closed (stop_loop). */
    rc = uv_run(&loop, UV_RUN_DEFAULT);
    int ok = !broken;
    if (rc != 0) {
        fprintf(stderr, "uv_run returned with active handles\n");
        ok = 0;
    }
    if (tmpl != NULL)
        fork_free(tmpl); /* stopped early: the template sees EOF and exits */
    rc = uv_loop_close(&loop);
    if (rc < 0) {
        fprintf(stderr, "uv_loop_close: %s\n", uv_strerror(rc));
        ok = 0;
    }

    if (!tmpl_done || tmpl_status < 0 || !WIFEXITED(tmpl_status) ||
        WEXITSTATUS(tmpl_status) != 0) {
        fprintf(stderr, "the template did not exit cleanly (status %d)\n", tmpl_status);
        ok = 0;
    }
    printf("libuv: %d of %d workers answered correctly\n", good, TOTAL);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        perror("writing stdout");
        ok = 0;
    }
    return ok && good == TOTAL ? 0 : 1;
}
