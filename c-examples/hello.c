/*
 * hello.c: the smallest complete anyfork program.
 *
 * It creates one process with fork_new() (a fork of the library's default
 * template, not of this program), loads libhello_worker.so into it, and
 * hands it three arguments: the write end of a pipe and two strings. The
 * child (hello_worker.c) answers with a greeting made of both strings on
 * the comm socket and writes its pid into the pipe. This program has no
 * event loop, so it lets fork_wait() run the callbacks, then checks the
 * greeting, the pipe, and the child's exit status; it exits 0 only if all
 * three are right.
 *
 * Usage: hello [path/to/libhello_worker.so]
 * (default: libhello_worker.so in the directory of this executable)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "anyfork.h"

/* What the callbacks found out. */
struct result {
    int run_done;    /* the run callback ran */
    int comm_fd;     /* our end of the comm socket, or -errno */
    int exit_done;   /* the exit callback ran */
    pid_t pid;       /* the child's pid */
    int status;      /* its wait status, or -errno */
};

static void on_run(int fd, void *userdata)
{
    struct result *r = userdata;
    r->run_done = 1;
    r->comm_fd = fd;
    if (fd < 0)
        fprintf(stderr, "hello: the child could not be started: %s\n", fork_last_error());
}

static void on_exit_cb(pid_t pid, int wait_status, void *userdata)
{
    struct result *r = userdata;
    r->exit_done = 1;
    r->pid = pid;
    r->status = wait_status;
    if (wait_status < 0)
        fprintf(stderr, "hello: exit status unknown: %s\n", fork_last_error());
}

/*
 * The worker library: argv[1] if given, else libNAME.so beside this
 * executable (found through /proc/self/exe). Returns 0 or -1.
 */
static int worker_path(char *out, size_t size, int argc, char **argv, const char *file)
{
    if (argc > 1) {
        if (strlen(argv[1]) >= size) {
            fprintf(stderr, "worker path too long\n");
            return -1;
        }
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
    if (slash == NULL) {
        fprintf(stderr, "unexpected /proc/self/exe: %s\n", exe);
        return -1;
    }
    *slash = '\0';
    int len = snprintf(out, size, "%s/%s", exe, file);
    if (len < 0 || (size_t)len >= size) {
        fprintf(stderr, "worker path too long\n");
        return -1;
    }
    return 0;
}

/*
 * Reads fd (blocking or not) until EOF into buf, which gets a NUL; waits
 * at most timeout_ms for each chunk. Returns the length or -1.
 */
static ssize_t read_to_eof(int fd, char *buf, size_t cap, int timeout_ms)
{
    size_t len = 0;
    for (;;) {
        if (len + 1 >= cap) {
            fprintf(stderr, "hello: more output than expected\n");
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
            perror("hello: read");
            return -1;
        }
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int r = poll(&pfd, 1, timeout_ms);
        if (r < 0 && errno != EINTR) {
            perror("hello: poll");
            return -1;
        }
        if (r == 0) {
            fprintf(stderr, "hello: timed out reading\n");
            return -1;
        }
    }
    buf[len] = '\0';
    return (ssize_t)len;
}

int main(int argc, char **argv)
{
    char lib[PATH_MAX];
    if (argc > 2) {
        fprintf(stderr, "usage: %s [libhello_worker.so]\n", argv[0]);
        return 2;
    }
    if (worker_path(lib, sizeof lib, argc, argv, "libhello_worker.so") < 0)
        return 1;

    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        perror("pipe2");
        return 1;
    }

    fork_proc *p = fork_new();
    if (p == NULL) {
        fprintf(stderr, "fork_new: %s\n", fork_last_error());
        return 1;
    }

    struct result res = { .comm_fd = -1, .pid = -1 };
    const char *what = NULL;
    if (fork_require(p, lib) < 0)
        what = "fork_require";
    else if (fork_send_fd(p, pipefd[1]) < 0)
        what = "fork_send_fd";
    else if (fork_send_arg(p, "Hello", 5) < 0 || fork_send_arg(p, "world", 5) < 0)
        what = "fork_send_arg";
    else if (fork_on_exit(p, on_exit_cb, &res) < 0)
        what = "fork_on_exit";
    if (what != NULL) {
        fprintf(stderr, "%s: %s\n", what, fork_last_error());
        fork_free(p); /* the process sees EOF and exits */
        return 1;
    }
    /* The library holds its own duplicate; ours would keep the pipe open. */
    if (close(pipefd[1]) < 0) {
        perror("close");
        return 1;
    }
    /* fork_run consumes p whatever happens. */
    if (fork_run(p, "hello_run", on_run, &res) < 0) {
        fprintf(stderr, "fork_run: %s\n", fork_last_error());
        return 1;
    }

    /* No event loop here: fork_wait dispatches until callbacks ran. */
    while (!res.run_done || !res.exit_done) {
        int n = fork_wait(10000);
        if (n < 0) {
            fprintf(stderr, "fork_wait: %s\n", fork_last_error());
            return 1;
        }
        if (n == 0) {
            fprintf(stderr, "hello: no answer within 10 s (%zu callbacks pending)\n",
                    fork_pending());
            return 1;
        }
    }
    if (res.comm_fd < 0)
        return 1;

    int ok = 1;
    char said[256], piped[256];
    if (read_to_eof(res.comm_fd, said, sizeof said, 10000) < 0)
        ok = 0;
    else
        printf("the child said on the comm socket: %s", said);
    if (close(res.comm_fd) < 0) {
        perror("close");
        ok = 0;
    }
    if (read_to_eof(pipefd[0], piped, sizeof piped, 10000) < 0)
        ok = 0;
    else
        printf("the child wrote into the pipe: %s", piped);
    if (close(pipefd[0]) < 0) {
        perror("close");
        ok = 0;
    }

    if (ok && strcmp(said, "Hello, world!\n") != 0) {
        fprintf(stderr, "hello: unexpected greeting\n");
        ok = 0;
    }
    char expect[64];
    int elen = snprintf(expect, sizeof expect, "pid %ld\n", (long)res.pid);
    if (elen < 0 || (size_t)elen >= sizeof expect)
        ok = 0;
    if (ok && strcmp(piped, expect) != 0) {
        fprintf(stderr, "hello: the pipe does not hold the child's pid %ld\n", (long)res.pid);
        ok = 0;
    }
    if (res.status < 0 || !WIFEXITED(res.status) || WEXITSTATUS(res.status) != 0) {
        fprintf(stderr, "hello: the child (pid %ld) failed, wait status %d\n", (long)res.pid,
                res.status);
        ok = 0;
    } else {
        printf("the child (pid %ld) exited with status 0\n", (long)res.pid);
    }

    if (!ok)
        return 1;
    printf("hello: all good\n");
    if (fflush(stdout) != 0 || ferror(stdout)) {
        perror("writing stdout");
        return 1;
    }
    return 0;
}
