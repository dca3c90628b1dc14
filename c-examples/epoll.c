/*
 * epoll.c: anyfork inside a hand-written epoll loop.
 *
 * The whole library needs one watcher: fork_loop_fd() goes into our epoll
 * set (level-triggered EPOLLIN) and fork_loop_dispatch() is called
 * whenever it is readable. Everything else is ordinary epoll code.
 *
 * The program loads libecho_worker.so once into a template
 * (fork_new_exec + fork_require), then forks 1,000 workers from it, at
 * most 64 at a time. Worker n gets the string "n", writes "hello n\n" back
 * over its comm socket and exits. The parent watches each comm socket in
 * the same epoll set, checks the line when EOF arrives, and checks the
 * exit status the template reports for each worker. Finally it frees the
 * template and waits for it to exit. Exit status 0 only if all 1,000
 * answered correctly and exited 0.
 *
 * Usage: epoll [path/to/libecho_worker.so]
 * (default: libecho_worker.so in the directory of this executable)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "anyfork.h"

#define TOTAL 1000
#define MAX_IN_FLIGHT 64
#define STALL_MS 10000 /* give up if nothing happens for this long */

struct job {
    int n;
    int fd;              /* our end of the comm socket while open, else -1 */
    char buf[32];        /* what the worker wrote */
    size_t len;
    int answer;          /* 0 pending, 1 correct, -1 wrong or failed */
    int exited;          /* the exit callback ran */
    int status;          /* wait status, or -errno */
    int counted;
};

static struct job jobs[TOTAL];
static fork_proc *tmpl;
static int ep = -1;
static int next_job, in_flight, finished, good, stop_starting;
static int tmpl_done, tmpl_status, loop_done;

static void start_jobs(void);

/* A job is over once its answer and its exit status are both known. */
static void job_step(struct job *j)
{
    if (j->answer == 0 || !j->exited || j->counted)
        return;
    j->counted = 1;
    in_flight--;
    finished++;
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
    loop_done = 1;
    if (finished < TOTAL)
        fprintf(stderr, "the template (pid %ld) exited early: %d\n", (long)pid, wait_status);
}

/* Every job is over: let the template go; its exit ends the loop. */
static void finish(void)
{
    if (tmpl == NULL)
        return;
    fork_free(tmpl);
    tmpl = NULL;
}

static void on_exit_cb(pid_t pid, int wait_status, void *userdata)
{
    struct job *j = userdata;
    (void)pid;
    j->exited = 1;
    j->status = wait_status;
    job_step(j);
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
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = j };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        perror("epoll_ctl ADD");
        if (close(fd) < 0)
            perror("close");
        j->fd = -1;
        j->answer = -1;
        job_step(j);
    }
}

/* The comm socket of job j is readable: collect the line, then EOF. */
static void on_readable(struct job *j)
{
    for (;;) {
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
        break;
    }
    if (epoll_ctl(ep, EPOLL_CTL_DEL, j->fd, NULL) < 0)
        perror("epoll_ctl DEL");
    if (close(j->fd) < 0)
        perror("close");
    j->fd = -1;
    job_step(j);
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
    if (in_flight == 0 && (next_job == TOTAL || stop_starting))
        finish();
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

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        perror("epoll_create1");
        return 1;
    }
    /* The one watcher for the whole library; data.ptr NULL marks it. */
    int lfd = fork_loop_fd();
    if (lfd < 0) {
        fprintf(stderr, "fork_loop_fd: %s\n", fork_last_error());
        return 1;
    }
    struct epoll_event lev = { .events = EPOLLIN, .data.ptr = NULL };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0) {
        perror("epoll_ctl ADD loop fd");
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

    int ok = 1;
    while (!loop_done) {
        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, STALL_MS);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("epoll_wait");
            ok = 0;
            break;
        }
        if (n == 0) {
            fprintf(stderr, "stalled: nothing happened for %d ms (%d of %d finished)\n",
                    STALL_MS, finished, TOTAL);
            ok = 0;
            break;
        }
        for (int i = 0; i < n; i++) {
            struct job *j = evs[i].data.ptr;
            if (j == NULL) {
                if (fork_loop_dispatch() < 0) {
                    fprintf(stderr, "fork_loop_dispatch: %s\n", fork_last_error());
                    ok = 0;
                    loop_done = 1;
                }
            } else if (j->fd >= 0) {
                on_readable(j);
            }
        }
    }

    if (tmpl != NULL)
        fork_free(tmpl); /* stopped early: the template sees EOF and exits */
    if (close(ep) < 0) {
        perror("close");
        ok = 0;
    }
    if (!tmpl_done || tmpl_status < 0 || !WIFEXITED(tmpl_status) ||
        WEXITSTATUS(tmpl_status) != 0) {
        fprintf(stderr, "the template did not exit cleanly (status %d)\n", tmpl_status);
        ok = 0;
    }
    printf("epoll: %d of %d workers answered correctly\n", good, TOTAL);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        perror("writing stdout");
        ok = 0;
    }
    return ok && good == TOTAL ? 0 : 1;
}
