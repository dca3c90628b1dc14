/*
 * template.c: the manual's "stingy standalone program" -- no worker
 * library, no anyfork-serve, no other file: the program itself is the
 * template.
 *
 * main() first builds some state in memory (a prime sieve), then calls
 * fork_template(). The copy that call makes keeps the sieve and serves as
 * a template; from then on the program forks 10 workers from it
 * (fork_fork), sends each its number and runs worker_run() -- a function
 * of this very program -- in it. Each worker counts the primes in its
 * slice of the sieve and reports on its comm socket. The program itself
 * frees its sieve right after fork_template() (only the template needs
 * it), checks every report against a slow trial-division count, checks
 * that every worker exited with status 0, and finally frees the template
 * and waits until it exited, so nothing is left behind.
 *
 * Build: link with -rdynamic, so that the template finds worker_run with
 * dlsym (the Makefile does):
 *   cc -Wall -Wextra -Werror -Iinclude c-examples/template.c -rdynamic \
 *      -Ltarget/release -lanyfork -o template
 *
 * Usage: template        (exits 0 when every report is right)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "anyfork.h"

#define WORKERS 10
#define LIMIT 200000 /* the sieve covers 0 .. LIMIT-1 */

/*
 * The prepared state: sieve[n] is 1 when n is prime. Built before
 * fork_template(), so the template (and every worker forked from it) has
 * its own copy; the program frees its copy afterwards.
 */
static unsigned char *sieve;

/* The slice [*lo, *hi) that worker number n (1 .. WORKERS) counts. */
static void slice_of(int n, long *lo, long *hi)
{
    *lo = (long)(n - 1) * (LIMIT / WORKERS);
    *hi = (long)n * (LIMIT / WORKERS);
}

/* Writes all of buf to fd (a blocking socket in the worker). */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/*
 * The workers' run function. Exported (-rdynamic), not static: the
 * template looks it up by name. args[0] is the worker's number, sent
 * after the fork. Returns the worker's exit status.
 */
int worker_run(int fd, const fork_arg *args, size_t nargs);
int worker_run(int fd, const fork_arg *args, size_t nargs)
{
    if (nargs != 1 || args[0].kind != FORK_ARG_STRING) {
        fprintf(stderr, "worker_run: expected one string argument, got %zu\n", nargs);
        return 2;
    }
    if (sieve == NULL) {
        fprintf(stderr, "worker_run: the sieve was not prepared\n");
        return 3;
    }
    char *end;
    long n = strtol((const char *)args[0].data, &end, 10);
    if (*end != '\0' || n < 1 || n > WORKERS) {
        fprintf(stderr, "worker_run: bad worker number %s\n", (const char *)args[0].data);
        return 2;
    }
    long lo, hi, count = 0;
    slice_of((int)n, &lo, &hi);
    for (long i = lo; i < hi; i++)
        count += sieve[i];

    char line[128];
    int len = snprintf(line, sizeof line, "%ld %ld %ld %ld %ld\n", n, (long)getpid(), lo, hi,
                       count);
    if (len < 0 || (size_t)len >= sizeof line)
        return 4;
    if (write_all(fd, line, (size_t)len) < 0) {
        perror("worker_run: write");
        return 5;
    }
    return 0;
}

/* Builds the sieve of Eratosthenes. Returns 0 or -1. */
static int prepare_state(void)
{
    sieve = malloc(LIMIT);
    if (sieve == NULL) {
        perror("malloc");
        return -1;
    }
    memset(sieve, 1, LIMIT);
    sieve[0] = sieve[1] = 0;
    for (long i = 2; i * i < LIMIT; i++)
        if (sieve[i])
            for (long j = i * i; j < LIMIT; j += i)
                sieve[j] = 0;
    return 0;
}

/* The slow, independent check the program uses after freeing its sieve. */
static long count_primes(long lo, long hi)
{
    long count = 0;
    for (long n = lo; n < hi; n++) {
        if (n < 2)
            continue;
        int prime = 1;
        for (long d = 2; d * d <= n; d++)
            if (n % d == 0) {
                prime = 0;
                break;
            }
        count += prime;
    }
    return count;
}

/* One worker as the callbacks see it. */
struct worker {
    int number;
    int run_done;  /* the run callback ran */
    int fd;        /* our end of its comm socket, or -errno */
    int exit_done; /* the exit callback ran */
    pid_t pid;
    int status;    /* wait status, or -errno */
};

static void on_run(int fd, void *userdata)
{
    struct worker *w = userdata;
    w->run_done = 1;
    w->fd = fd;
    if (fd < 0)
        fprintf(stderr, "template: worker %d could not start: %s\n", w->number,
                fork_last_error());
}

static void on_exit_cb(pid_t pid, int status, void *userdata)
{
    struct worker *w = userdata;
    w->exit_done = 1;
    w->pid = pid;
    w->status = status;
    if (status < 0)
        fprintf(stderr, "template: exit of worker %d unknown: %s\n", w->number,
                fork_last_error());
}

/* Reads the nonblocking fd to EOF into buf (NUL-terminated). Returns 0 or -1. */
static int read_to_eof(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    for (;;) {
        if (len + 1 >= cap) {
            fprintf(stderr, "template: a report is too long\n");
            return -1;
        }
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n > 0) {
            len += (size_t)n;
            continue;
        }
        if (n == 0)
            break;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            perror("template: read");
            return -1;
        }
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int r = poll(&pfd, 1, 10000);
        if (r < 0 && errno != EINTR) {
            perror("template: poll");
            return -1;
        }
        if (r == 0) {
            fprintf(stderr, "template: no report within 10 s\n");
            return -1;
        }
    }
    buf[len] = '\0';
    return 0;
}

/* Dispatches until *done is set; returns 0, or -1 after 10 s of silence. */
static int wait_for(const int *done, const char *what)
{
    while (!*done) {
        int n = fork_wait(10000);
        if (n < 0) {
            fprintf(stderr, "fork_wait: %s\n", fork_last_error());
            return -1;
        }
        if (n == 0 && !*done) {
            fprintf(stderr, "template: %s did not happen within 10 s\n", what);
            return -1;
        }
    }
    return 0;
}

/* Checks one worker's report and status; returns 1 if right. */
static int check(struct worker *w)
{
    char report[256];
    int ok = w->fd >= 0 && read_to_eof(w->fd, report, sizeof report) == 0;
    if (w->fd >= 0 && close(w->fd) < 0) {
        perror("close");
        ok = 0;
    }
    long n, pid, lo, hi, count;
    if (ok && sscanf(report, "%ld %ld %ld %ld %ld", &n, &pid, &lo, &hi, &count) != 5) {
        fprintf(stderr, "template: worker %d sent a bad report: %s\n", w->number, report);
        ok = 0;
    }
    if (ok) {
        long want_lo, want_hi;
        slice_of(w->number, &want_lo, &want_hi);
        long want = count_primes(want_lo, want_hi);
        if (n != w->number || lo != want_lo || hi != want_hi || count != want || pid != w->pid) {
            fprintf(stderr, "template: worker %d reported \"%.*s\", expected %d %ld %ld %ld %ld\n",
                    w->number, (int)strcspn(report, "\n"), report, w->number, (long)w->pid,
                    want_lo, want_hi, want);
            ok = 0;
        } else {
            printf("worker %2d (pid %ld): %5ld primes in [%6ld, %6ld)\n", w->number, pid, count,
                   lo, hi);
        }
    }
    if (w->status < 0 || !WIFEXITED(w->status) || WEXITSTATUS(w->status) != 0) {
        fprintf(stderr, "template: worker %d (pid %ld) failed, wait status %d\n", w->number,
                (long)w->pid, w->status);
        ok = 0;
    }
    return ok;
}

int main(void)
{
    /* 1. Prepare the state the workers need. */
    if (prepare_state() < 0)
        return 1;

    /* 2. Preserve it in a template: a fork of this program, made now. */
    fork_proc *tmpl = fork_template();
    if (tmpl == NULL) {
        fprintf(stderr, "fork_template: %s\n", fork_last_error());
        return 1;
    }
    pid_t tpid = fork_pid(tmpl);
    if (tpid < 0) {
        fprintf(stderr, "fork_pid: %s\n", fork_last_error());
        fork_free(tmpl);
        return 1;
    }
    printf("template: pid %ld, sieve of %d numbers prepared\n", (long)tpid, LIMIT);

    /* Only the template needs the sieve now. */
    free(sieve);
    sieve = NULL;

    /* 3. Fork the workers from it. */
    struct worker workers[WORKERS];
    int ok = 1, started = 0;
    for (int i = 0; i < WORKERS; i++) {
        struct worker *w = &workers[i];
        *w = (struct worker){ .number = i + 1, .fd = -1, .pid = -1, .status = -1 };
        fork_proc *p = fork_fork(tmpl);
        if (p == NULL) {
            fprintf(stderr, "fork_fork: %s\n", fork_last_error());
            ok = 0;
            break;
        }
        char num[16];
        int len = snprintf(num, sizeof num, "%d", w->number);
        if (len < 0 || (size_t)len >= sizeof num || fork_send_arg(p, num, (size_t)len) < 0 ||
            fork_on_exit(p, on_exit_cb, w) < 0) {
            fprintf(stderr, "preparing worker %d: %s\n", w->number, fork_last_error());
            fork_free(p);
            ok = 0;
            break;
        }
        if (fork_run(p, "worker_run", on_run, w) < 0) {
            fprintf(stderr, "fork_run: %s\n", fork_last_error());
            ok = 0;
            break;
        }
        started++;
    }

    /* 4. Collect the reports. */
    for (int i = 0; i < started; i++) {
        if (wait_for(&workers[i].run_done, "a worker's start") < 0 ||
            wait_for(&workers[i].exit_done, "a worker's exit") < 0)
            return 1;
        if (!check(&workers[i]))
            ok = 0;
    }

    /* 5. Done with the template: it sees EOF and exits; wait for that. */
    int tmpl_exited = 0;
    struct worker t = { .number = 0, .fd = -1, .pid = -1, .status = -1 };
    if (fork_on_exit(tmpl, on_exit_cb, &t) < 0) {
        fprintf(stderr, "fork_on_exit: %s\n", fork_last_error());
        fork_free(tmpl);
        return 1;
    }
    fork_free(tmpl);
    if (wait_for(&t.exit_done, "the template's exit") < 0)
        return 1;
    tmpl_exited = t.status >= 0 && WIFEXITED(t.status) && WEXITSTATUS(t.status) == 0;
    if (!tmpl_exited) {
        fprintf(stderr, "template: the template (pid %ld) ended with wait status %d\n",
                (long)t.pid, t.status);
        ok = 0;
    } else {
        printf("template: the template (pid %ld) exited\n", (long)t.pid);
    }

    if (!ok || started != WORKERS)
        return 1;
    printf("template: all %d workers reported correctly\n", WORKERS);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        perror("writing stdout");
        return 1;
    }
    return 0;
}
