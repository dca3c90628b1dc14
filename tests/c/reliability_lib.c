/*
 * Child-side functions of the reliability and hygiene tests (tests/faults.rs,
 * tests/faults_default_template.rs, tests/hygiene.rs and the C helpers
 * next to this file). Loaded into a process with
 * fork_require("/abs/path/libreliability.so"); needs no libanyfork.
 *
 * Run functions:  int fn(int fd, const fork_arg *args, size_t nargs)
 * Eval functions: int fn(const fork_arg *args, size_t nargs)
 *
 * Reports are text, one item per line, so that both Rust and C tests can
 * read them.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "anyfork.h"

/* ---- helpers ---- */

static int write_all(int fd, const void *data, size_t n) {
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* A growable text buffer written out in one go at the end. */
struct text {
    char *p;
    size_t len, cap;
};

static void add(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(struct text *t, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = t->cap - t->len;
        int n = vsnprintf(t->p ? t->p + t->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0)
            _exit(99);
        if ((size_t)n < room) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap ? t->cap * 2 : 4096;
        while (cap < t->len + (size_t)n + 1)
            cap *= 2;
        char *q = realloc(t->p, cap);
        if (!q)
            _exit(99);
        t->p = q;
        t->cap = cap;
    }
}

static int cloexec(int fd) {
    int f = fcntl(fd, F_GETFD);
    return f >= 0 && (f & FD_CLOEXEC) ? 1 : 0;
}

static const char *first_string(const fork_arg *args, size_t nargs, const char *dflt) {
    for (size_t i = 0; i < nargs; i++)
        if (args[i].kind == FORK_ARG_STRING)
            return (const char *)args[i].data;
    return dflt;
}

static int nth_fd(const fork_arg *args, size_t nargs, int n) {
    for (size_t i = 0; i < nargs; i++)
        if (args[i].kind == FORK_ARG_FD && n-- == 0)
            return args[i].fd;
    return -1;
}

/* ---- eval functions ---- */

/* Drops every privilege: supplementary groups, gid and uid become nobody
 * (65534). As root this is what makes RLIMIT_NPROC apply at all. */
int rl_become_nobody(const fork_arg *args, size_t nargs) {
    (void)args;
    (void)nargs;
    if (setgroups(0, NULL) != 0)
        return 80;
    if (setgid(65534) != 0)
        return 81;
    if (setuid(65534) != 0)
        return 82;
    return getuid() == 65534 && geteuid() == 65534 ? 0 : 83;
}

/* Sets the soft RLIMIT_NPROC: "0" makes every fork of this process fail
 * (EAGAIN) once it runs unprivileged; "hard" raises it back to the hard
 * limit, which an unprivileged process may do. */
int rl_nproc(const fork_arg *args, size_t nargs) {
    const char *what = first_string(args, nargs, "hard");
    struct rlimit rl;
    if (getrlimit(RLIMIT_NPROC, &rl) != 0)
        return 84;
    rl.rlim_cur = strcmp(what, "hard") == 0 ? rl.rlim_max : (rlim_t)strtoul(what, NULL, 10);
    return setrlimit(RLIMIT_NPROC, &rl) == 0 ? 0 : 85;
}

/* Sets the soft RLIMIT_NOFILE of the process to its first string. */
int rl_nofile(const fork_arg *args, size_t nargs) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 86;
    rl.rlim_cur = (rlim_t)strtoul(first_string(args, nargs, "64"), NULL, 10);
    return setrlimit(RLIMIT_NOFILE, &rl) == 0 ? 0 : 87;
}

/* ---- run functions ---- */

/* Describes the process on the comm socket, one item a line:
 *   pid P / ppid P / uid U
 *   comm FD cloexec=C
 *   arg I S LEN TEXT        (a string argument; TEXT is the bytes as sent)
 *   arg I F FD cloexec=C
 *   open FD TARGET          (every open fd, from /proc/self/fd)
 *   sig NAME HEX            (SigPnd, ShdPnd, SigBlk, SigIgn, SigCgt)
 * then exits 0. */
int rl_report(int fd, const fork_arg *args, size_t nargs) {
    struct text t = {0};
    add(&t, "pid %d\nppid %d\nuid %d\n", (int)getpid(), (int)getppid(), (int)getuid());
    add(&t, "comm %d cloexec=%d\n", fd, cloexec(fd));
    for (size_t i = 0; i < nargs; i++) {
        if (args[i].kind == FORK_ARG_STRING)
            add(&t, "arg %zu S %zu %s\n", i, args[i].len, (const char *)args[i].data);
        else
            add(&t, "arg %zu F %d cloexec=%d\n", i, args[i].fd, cloexec(args[i].fd));
    }
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 90;
    int self = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        int n = atoi(e->d_name);
        if (n == self)
            continue;
        char path[64], target[512];
        snprintf(path, sizeof path, "/proc/self/fd/%d", n);
        ssize_t l = readlink(path, target, sizeof target - 1);
        target[l > 0 ? l : 0] = 0;
        add(&t, "open %d %s\n", n, target);
    }
    closedir(d);
    FILE *st = fopen("/proc/self/status", "r");
    if (!st)
        return 91;
    char line[256];
    while (fgets(line, sizeof line, st)) {
        static const char *keys[] = {"SigPnd:", "ShdPnd:", "SigBlk:", "SigIgn:", "SigCgt:"};
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
            size_t kl = strlen(keys[k]);
            if (strncmp(line, keys[k], kl) == 0) {
                char *v = line + kl;
                while (*v == ' ' || *v == '\t')
                    v++;
                v[strcspn(v, "\n")] = 0;
                add(&t, "sig %.*s %s\n", (int)(kl - 1), keys[k], v);
            }
        }
    }
    fclose(st);
    int rc = write_all(fd, t.p, t.len) == 0 ? 0 : 98;
    free(t.p);
    return rc;
}

/* Writes its string arguments back, each followed by a newline. */
int rl_echo(int fd, const fork_arg *args, size_t nargs) {
    for (size_t i = 0; i < nargs; i++) {
        if (args[i].kind != FORK_ARG_STRING)
            continue;
        if (write_all(fd, args[i].data, args[i].len) != 0 || write_all(fd, "\n", 1) != 0)
            return 98;
    }
    return 0;
}

/* Writes "running PID\n" on the comm socket, then reads its first fd
 * argument until EOF (whatever happens to the caller meanwhile), then
 * writes "finished PID\n" to its second fd argument and exits 0. */
int rl_hold(int fd, const fork_arg *args, size_t nargs) {
    int in = nth_fd(args, nargs, 0), out = nth_fd(args, nargs, 1);
    if (in < 0 || out < 0)
        return 97;
    char line[64];
    int n = snprintf(line, sizeof line, "running %d\n", (int)getpid());
    if (write_all(fd, line, (size_t)n) != 0)
        return 98;
    char buf[256];
    ssize_t r;
    while ((r = read(in, buf, sizeof buf)) != 0)
        if (r < 0 && errno != EINTR)
            return 96;
    n = snprintf(line, sizeof line, "finished %d\n", (int)getpid());
    return write_all(out, line, (size_t)n) == 0 ? 0 : 95;
}

/* Writes "pid PID\n", then ends as its first string says: "segv" raises
 * SIGSEGV (no core file), "wait" blocks until EOF on the comm socket and
 * exits 0 (the test kills it meanwhile), "abort" calls abort(). */
int rl_die(int fd, const fork_arg *args, size_t nargs) {
    const char *how = first_string(args, nargs, "wait");
    char line[64];
    int n = snprintf(line, sizeof line, "pid %d\n", (int)getpid());
    if (write_all(fd, line, (size_t)n) != 0)
        return 98;
    struct rlimit none = {0, 0};
    setrlimit(RLIMIT_CORE, &none);
    if (strcmp(how, "segv") == 0) {
        volatile int *p = (volatile int *)(uintptr_t)8;
        *p = 1; /* a real invalid access, not raise() */
        return 94;
    }
    if (strcmp(how, "abort") == 0)
        abort();
    char buf[64];
    ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) != 0)
        if (r < 0 && errno != EINTR)
            return 96;
    return 0;
}

static volatile int keep_going = 1;

static int recurse(volatile char *prev, int depth) {
    volatile char frame[1024];
    frame[0] = (char)depth;
    frame[1023] = prev ? prev[0] : 0;
    if (!keep_going)
        return frame[1023];
    return recurse(frame, depth + 1) + frame[1];
}

/* Overflows its stack by unbounded recursion (no core file): a plain
 * SIGSEGV in a process with default dispositions. */
int rl_overflow(int fd, const fork_arg *args, size_t nargs) {
    (void)fd;
    (void)args;
    (void)nargs;
    struct rlimit none = {0, 0};
    setrlimit(RLIMIT_CORE, &none);
    return recurse(NULL, 0);
}

/* Writes its first string argument to its first fd argument. */
int rl_write_arg(int fd, const fork_arg *args, size_t nargs) {
    (void)fd;
    const char *s = first_string(args, nargs, "");
    int out = nth_fd(args, nargs, 0);
    return out >= 0 && write_all(out, s, strlen(s)) == 0 ? 0 : 98;
}
