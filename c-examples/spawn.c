/*
 * spawn.c: anyfork as a faster fork+exec (the manual's example).
 *
 * Runs `/bin/echo hi` with its standard output going to a file and its
 * standard error going to the comm socket, then prints both. The process
 * comes from fork_new() -- a fork of the small default template, not of
 * this program -- and the anyfork_exec builtin turns it into the program:
 *
 *   - fork_eval(p, "anyfork_comm_fd", {"2"}) makes the comm socket the
 *     program's fd 2 (stderr);
 *   - fds sent become the program's 0, 1, 2, ... in the order sent, so
 *     /dev/null goes first (stdin) and the output file second (stdout);
 *   - fork_exec(p, argv, NULL, ...) sends argv and runs the builtin (a
 *     NULL envp keeps the template's environment).
 *
 * Whatever the program writes to stderr -- or the reason the exec failed
 * -- arrives on the comm socket; fork_on_exit gives the exit status
 * (127 when the program could not be executed).
 *
 * Usage: spawn [program [args...]]   (default: /bin/echo hi)
 * Exits with the program's exit status (1 if anyfork itself failed).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "anyfork.h"

struct result {
    int run_done, exit_done;
    int fd;      /* our end of the comm socket, or -errno */
    pid_t pid;
    int status;  /* wait status, or -errno */
};

static void on_run(int fd, void *userdata)
{
    struct result *r = userdata;
    r->run_done = 1;
    r->fd = fd;
    if (fd < 0)
        fprintf(stderr, "spawn: the process could not start: %s\n", fork_last_error());
}

static void on_exit_cb(pid_t pid, int status, void *userdata)
{
    struct result *r = userdata;
    r->exit_done = 1;
    r->pid = pid;
    r->status = status;
    if (status < 0)
        fprintf(stderr, "spawn: exit status unknown: %s\n", fork_last_error());
}

/*
 * Reads fd to EOF into a malloc'd, NUL-terminated buffer (*out), polling
 * while it would block. Returns the length or -1.
 */
static ssize_t slurp(int fd, char **out)
{
    size_t len = 0, cap = 256;
    char *buf = malloc(cap);
    if (buf == NULL) {
        perror("malloc");
        return -1;
    }
    for (;;) {
        if (len + 1 >= cap) {
            char *bigger = realloc(buf, cap * 2);
            if (bigger == NULL) {
                perror("realloc");
                free(buf);
                return -1;
            }
            buf = bigger;
            cap *= 2;
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
            perror("spawn: read");
            free(buf);
            return -1;
        }
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int r = poll(&pfd, 1, 30000);
        if (r < 0 && errno != EINTR) {
            perror("spawn: poll");
            free(buf);
            return -1;
        }
        if (r == 0) {
            fprintf(stderr, "spawn: the program kept its stderr open for 30 s\n");
            free(buf);
            return -1;
        }
    }
    buf[len] = '\0';
    *out = buf;
    return (ssize_t)len;
}

/* Prints a captured stream, indented, with a title. */
static void show(const char *title, const char *text, ssize_t len)
{
    printf("%s (%zd bytes):\n", title, len);
    const char *line = text;
    while (*line != '\0') {
        size_t n = strcspn(line, "\n");
        printf("  | %.*s\n", (int)n, line);
        line += n + (line[n] == '\n');
    }
}

int main(int argc, char **argv)
{
    static const char *const echo_hi[] = { "/bin/echo", "hi", NULL };
    const char *const *cmd = argc > 1 ? (const char *const *)argv + 1 : echo_hi;

    /* The program's stdout: a fresh temporary file (the manual uses /tmp/log). */
    const char *tmpdir = getenv("TMPDIR");
    char path[4096];
    int len = snprintf(path, sizeof path, "%s/anyfork-spawn-XXXXXX",
                       tmpdir != NULL && *tmpdir != '\0' ? tmpdir : "/tmp");
    if (len < 0 || (size_t)len >= sizeof path) {
        fprintf(stderr, "spawn: TMPDIR is too long\n");
        return 1;
    }
    int out = mkostemp(path, O_CLOEXEC);
    if (out < 0) {
        perror("mkostemp");
        return 1;
    }
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull < 0) {
        perror("open /dev/null");
        unlink(path);
        return 1;
    }

    fork_proc *p = fork_new();
    if (p == NULL) {
        fprintf(stderr, "fork_new: %s\n", fork_last_error());
        unlink(path);
        return 1;
    }
    struct result res = { .fd = -1, .pid = -1, .status = -1 };
    static const char *const two[] = { "2" };
    const char *what = NULL;
    if (fork_eval(p, "anyfork_comm_fd", two, 1) < 0)
        what = "fork_eval anyfork_comm_fd";
    else if (fork_send_fd(p, devnull) < 0) /* becomes fd 0 */
        what = "fork_send_fd /dev/null";
    else if (fork_send_fd(p, out) < 0) /* becomes fd 1 */
        what = "fork_send_fd output file";
    else if (fork_on_exit(p, on_exit_cb, &res) < 0)
        what = "fork_on_exit";
    if (what != NULL) {
        fprintf(stderr, "%s: %s\n", what, fork_last_error());
        fork_free(p);
        unlink(path);
        return 1;
    }
    /* The library holds duplicates; ours are not needed for sending. */
    if (close(devnull) < 0) {
        perror("close");
        unlink(path);
        return 1;
    }
    /* fork_exec consumes p whatever happens. */
    if (fork_exec(p, cmd, NULL, on_run, &res) < 0) {
        fprintf(stderr, "fork_exec: %s\n", fork_last_error());
        unlink(path);
        return 1;
    }

    while (!res.run_done || !res.exit_done) {
        int n = fork_wait(30000);
        if (n < 0) {
            fprintf(stderr, "fork_wait: %s\n", fork_last_error());
            unlink(path);
            return 1;
        }
        if (n == 0 && (!res.run_done || !res.exit_done)) {
            fprintf(stderr, "spawn: the program did not finish within 30 s\n");
            unlink(path);
            return 1;
        }
    }
    if (res.fd < 0 || res.status < 0) {
        unlink(path);
        return 1;
    }

    /* The program ended: its stderr (the comm socket) is at EOF. */
    char *err = NULL, *stdout_text = NULL;
    ssize_t err_len = slurp(res.fd, &err);
    if (close(res.fd) < 0)
        perror("close");
    ssize_t out_len = -1;
    if (lseek(out, 0, SEEK_SET) < 0)
        perror("lseek");
    else
        out_len = slurp(out, &stdout_text);
    if (close(out) < 0)
        perror("close");
    if (unlink(path) < 0)
        perror("unlink");
    if (err_len < 0 || out_len < 0) {
        free(err);
        free(stdout_text);
        return 1;
    }

    printf("ran:");
    for (const char *const *a = cmd; *a != NULL; a++)
        printf(" %s", *a);
    printf("\n");
    show("stdout, from the file", stdout_text, out_len);
    show("stderr, from the comm socket", err, err_len);
    free(err);
    free(stdout_text);

    int code;
    if (WIFEXITED(res.status)) {
        code = WEXITSTATUS(res.status);
        printf("pid %ld exited with status %d\n", (long)res.pid, code);
    } else if (WIFSIGNALED(res.status)) {
        printf("pid %ld was killed by signal %d\n", (long)res.pid, WTERMSIG(res.status));
        code = 128 + WTERMSIG(res.status);
    } else {
        printf("pid %ld ended with wait status %d\n", (long)res.pid, res.status);
        code = 1;
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        perror("writing stdout");
        return 1;
    }
    return code;
}
