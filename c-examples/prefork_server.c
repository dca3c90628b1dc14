/*
 * prefork_server.c: a pool of server processes all accepting on one socket.
 *
 * The classic pre-forking server, built the anyfork way:
 *   1. this program opens a listening TCP socket on 127.0.0.1 (port 0: the
 *      kernel picks a free one);
 *   2. it starts a fresh template server (fork_new_exec), loads the worker
 *      code into it (fork_require) and sends it the listening socket;
 *   3. it forks four workers from that template (fork_fork). Each one
 *      inherits the code and the socket, gets its own id string and enters
 *      prefork_run() in prefork_worker.c, which accepts clients and answers
 *      each with its id;
 *   4. acting as a client, it connects several times and checks every
 *      answer;
 *   5. it shuts the pool down: closing a worker's comm socket tells it to
 *      stop; once the template has reported every worker's exit, freeing
 *      the template makes it exit too. Nothing is left running.
 * It exits 0 only if every request was answered and every process exited 0.
 *
 * Usage: prefork_server [path/to/libprefork_worker.so]
 * (default: libprefork_worker.so in the directory of this executable)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "anyfork.h"

#define NWORKERS 4
#define NREQUESTS 16
#define TIMEOUT_MS 10000

/* What the parent knows about one process of the pool. */
struct member {
    const char *name;
    int run_done, exit_done;
    int comm_fd; /* our end of its comm socket, or -errno, or -1 */
    pid_t pid;
    int status;  /* wait status, or -errno */
};

static struct member workers[NWORKERS];
static struct member template_state = { .name = "template", .comm_fd = -1, .pid = -1 };

static void on_run(int fd, void *userdata)
{
    struct member *m = userdata;
    m->run_done = 1;
    m->comm_fd = fd;
    if (fd < 0)
        fprintf(stderr, "%s did not start: %s\n", m->name, fork_last_error());
}

static void on_exit_cb(pid_t pid, int wait_status, void *userdata)
{
    struct member *m = userdata;
    m->exit_done = 1;
    m->pid = pid;
    m->status = wait_status;
    if (wait_status < 0)
        fprintf(stderr, "%s: exit status unknown: %s\n", m->name, fork_last_error());
}

static long now_ms(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
        return 0; /* cannot happen with CLOCK_MONOTONIC */
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Runs callbacks until done() holds or TIMEOUT_MS pass. Returns 0, or
 * -1 on an error or a timeout.
 */
static int wait_until(int (*done)(void), const char *what)
{
    long deadline = now_ms() + TIMEOUT_MS;
    while (!done()) {
        long left = deadline - now_ms();
        if (left <= 0) {
            fprintf(stderr, "timed out waiting for %s\n", what);
            return -1;
        }
        int n = fork_wait((int)left);
        if (n < 0) {
            fprintf(stderr, "fork_wait: %s\n", fork_last_error());
            return -1;
        }
        if (n == 0 && fork_pending() == 0 && !done()) {
            fprintf(stderr, "nothing left to wait for, but %s did not happen\n", what);
            return -1;
        }
    }
    return 0;
}

static int started; /* workers whose fork_run succeeded */

static int all_running(void)
{
    for (int i = 0; i < started; i++)
        if (!workers[i].run_done)
            return 0;
    return 1;
}

static int all_workers_exited(void)
{
    for (int i = 0; i < started; i++)
        if (!workers[i].exit_done)
            return 0;
    return 1;
}

static int template_exited(void)
{
    return template_state.exit_done;
}

static int exited_zero(const struct member *m)
{
    if (m->status >= 0 && WIFEXITED(m->status) && WEXITSTATUS(m->status) == 0) {
        printf("%s (pid %ld) exited with status 0\n", m->name, (long)m->pid);
        return 1;
    }
    fprintf(stderr, "%s (pid %ld) ended badly: wait status %d\n", m->name, (long)m->pid,
            m->status);
    return 0;
}

/* The worker library: argv[1], else beside this executable. */
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
    if (n < 0) {
        perror("readlink /proc/self/exe");
        return -1;
    }
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash == NULL)
        return -1;
    *slash = '\0';
    int len = snprintf(out, size, "%s/%s", exe, file);
    return len < 0 || (size_t)len >= size ? -1 : 0;
}

/* A nonblocking listening socket on 127.0.0.1; its port goes to *port. */
static int make_listener(unsigned short *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("socket");
        return -1;
    }
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = 0 };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 64) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
        perror("bind/listen/getsockname");
        if (close(fd) < 0)
            perror("close");
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

/*
 * One client request: connects, reads the answer to EOF and returns the
 * id of the worker that answered (1..NWORKERS), or -1.
 */
static int request(unsigned short port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("client socket");
        return -1;
    }
    int id = -1;
    struct timeval tv = { .tv_sec = TIMEOUT_MS / 1000 };
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    char buf[128];
    size_t len = 0;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0) {
        perror("setsockopt");
        goto out;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        perror("connect");
        goto out;
    }
    for (;;) {
        if (len + 1 >= sizeof buf) {
            fprintf(stderr, "answer too long\n");
            goto out;
        }
        ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("reading the answer");
            goto out;
        }
        len += (size_t)n;
    }
    buf[len] = '\0';
    int got, end = 0;
    if (sscanf(buf, "hello from worker %d\n%n", &got, &end) == 1 && (size_t)end == len &&
        got >= 1 && got <= NWORKERS) {
        id = got;
    } else {
        fprintf(stderr, "unexpected answer: \"%s\"\n", buf);
    }
out:
    if (close(fd) < 0) {
        perror("close");
        id = -1;
    }
    return id;
}

/*
 * Stops the pool: closes every comm socket (each worker sees EOF and
 * returns), waits until the template has reported every worker's exit,
 * then frees the template and waits for its exit. Returns 0 if everyone
 * exited 0.
 */
static int shutdown_pool(fork_proc *tmpl)
{
    int ok = 1;
    for (int i = 0; i < started; i++) {
        if (workers[i].comm_fd >= 0 && close(workers[i].comm_fd) < 0) {
            perror("close");
            ok = 0;
        }
        workers[i].comm_fd = -1;
    }
    if (wait_until(all_workers_exited, "the workers to exit") < 0)
        ok = 0;
    /* Freeing a handle that never ran makes its process exit. */
    fork_free(tmpl);
    if (wait_until(template_exited, "the template to exit") < 0)
        return 0;
    for (int i = 0; i < started; i++)
        ok &= exited_zero(&workers[i]);
    ok &= exited_zero(&template_state);
    return ok;
}

int main(int argc, char **argv)
{
    static char names[NWORKERS][32], ids[NWORKERS][16];
    char lib[PATH_MAX];
    if (argc > 2) {
        fprintf(stderr, "usage: %s [libprefork_worker.so]\n", argv[0]);
        return 2;
    }
    if (worker_path(lib, sizeof lib, argc, argv, "libprefork_worker.so") < 0) {
        fprintf(stderr, "cannot make the worker library's path\n");
        return 1;
    }

    unsigned short port;
    int listener = make_listener(&port);
    if (listener < 0)
        return 1;
    printf("listening on 127.0.0.1:%u\n", (unsigned)port);

    /* The template: a fresh server with the worker code and the socket. */
    fork_proc *tmpl = fork_new_exec();
    if (tmpl == NULL) {
        fprintf(stderr, "fork_new_exec: %s\n", fork_last_error());
        return 1;
    }
    int ok = 1;
    if (fork_on_exit(tmpl, on_exit_cb, &template_state) < 0 || fork_require(tmpl, lib) < 0 ||
        fork_send_fd(tmpl, listener) < 0) {
        fprintf(stderr, "preparing the template: %s\n", fork_last_error());
        ok = 0;
    }
    /* The pool owns the socket now (the library sent its own duplicate). */
    if (close(listener) < 0) {
        perror("close");
        ok = 0;
    }

    /* The workers: forks of the template, each with its id. */
    for (int i = 0; ok && i < NWORKERS; i++) {
        struct member *w = &workers[i];
        int len = snprintf(ids[i], sizeof ids[i], "%d", i + 1);
        if (len >= 0)
            len = snprintf(names[i], sizeof names[i], "worker %d", i + 1);
        w->name = names[i];
        w->comm_fd = -1;
        w->pid = -1;
        fork_proc *p = fork_fork(tmpl);
        if (p == NULL) {
            fprintf(stderr, "fork_fork: %s\n", fork_last_error());
            ok = 0;
            break;
        }
        if (len < 0 || fork_send_arg(p, ids[i], strlen(ids[i])) < 0 ||
            fork_on_exit(p, on_exit_cb, w) < 0) {
            fprintf(stderr, "preparing %s: %s\n", w->name, fork_last_error());
            fork_free(p);
            ok = 0;
            break;
        }
        if (fork_run(p, "prefork_run", on_run, w) < 0) {
            fprintf(stderr, "fork_run: %s\n", fork_last_error());
            ok = 0;
            break;
        }
        started++;
    }
    if (ok && wait_until(all_running, "the workers to start") < 0)
        ok = 0;
    for (int i = 0; ok && i < started; i++)
        if (workers[i].comm_fd < 0)
            ok = 0;

    /* Be a client. */
    int answers[NWORKERS + 1] = { 0 };
    for (int r = 0; ok && r < NREQUESTS; r++) {
        int id = request(port);
        if (id < 0) {
            ok = 0;
            break;
        }
        answers[id]++;
        printf("request %d answered by worker %d\n", r + 1, id);
    }
    if (ok) {
        printf("answers per worker:");
        for (int i = 1; i <= NWORKERS; i++)
            printf(" %d:%d", i, answers[i]);
        printf("\n");
    }

    if (!shutdown_pool(tmpl))
        ok = 0;
    if (!ok) {
        fprintf(stderr, "prefork_server: FAILED\n");
        return 1;
    }
    printf("prefork_server: %d requests answered, pool shut down, all good\n", NREQUESTS);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        perror("writing stdout");
        return 1;
    }
    return 0;
}
