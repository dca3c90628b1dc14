/*
 * Functions the integration tests make their processes run. Loaded into a
 * process with fork_require("/abs/path/libchildren.so").
 *
 * Run functions:  int fn(int fd, const fork_arg *args, size_t nargs)
 * Eval functions: int fn(const fork_arg *args, size_t nargs)
 *
 * Reports go back over the comm socket in the binary format the Rust side
 * parses (tests/children/mod.rs): integers are little-endian.
 *
 *   dump:   "AFD1" u32 nargs, i32 comm_fd, u8 comm_flags, then per arg:
 *           u8 kind (0 string, 1 fd)
 *           string: u8 flags, u64 len, then len bytes (dump) or u64 FNV-1a (digest)
 *           fd:     u8 flags, i32 fd, u64 st_dev, u64 st_ino
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "anyfork.h"

/* Flags of a string argument. */
#define S_NUL_AFTER 1u  /* data[len] == 0 */
#define S_FD_MINUS1 2u  /* fd == -1 */
#define S_DATA_SET  4u  /* data != NULL */
/* Flags of an fd argument. */
#define F_NO_DATA   1u  /* data == NULL && len == 0 */
#define F_CLOEXEC   2u  /* FD_CLOEXEC is set */
#define F_FSTAT_OK  4u  /* fstat succeeded */
/* Flags of the comm socket. */
#define C_BLOCKING  1u
#define C_CLOEXEC   2u
#define C_UNIX_STREAM 4u

/* ---- a growable byte buffer ---- */

struct buf {
    unsigned char *p;
    size_t len, cap;
};

static void put(struct buf *b, const void *data, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *q = realloc(b->p, cap);
        if (!q)
            _exit(99);
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void put_u8(struct buf *b, uint8_t v) { put(b, &v, 1); }
static void put_u32(struct buf *b, uint32_t v) {
    unsigned char x[4] = {v, v >> 8, v >> 16, v >> 24};
    put(b, x, 4);
}
static void put_u64(struct buf *b, uint64_t v) {
    put_u32(b, (uint32_t)v);
    put_u32(b, (uint32_t)(v >> 32));
}

static int write_all(int fd, const void *data, size_t n) {
    const unsigned char *p = data;
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

static uint64_t fnv1a(const unsigned char *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint8_t comm_flags(int fd) {
    uint8_t f = 0;
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK))
        f |= C_BLOCKING;
    int fdfl = fcntl(fd, F_GETFD);
    if (fdfl >= 0 && (fdfl & FD_CLOEXEC))
        f |= C_CLOEXEC;
    int type = 0;
    socklen_t tl = sizeof type;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 && type == SOCK_STREAM &&
        getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_UNIX)
        f |= C_UNIX_STREAM;
    return f;
}

static void serialise(struct buf *b, int comm, const fork_arg *args, size_t nargs, int digest) {
    put(b, "AFD1", 4);
    put_u32(b, (uint32_t)nargs);
    put_u32(b, (uint32_t)comm);
    put_u8(b, comm >= 0 ? comm_flags(comm) : 0);
    for (size_t i = 0; i < nargs; i++) {
        const fork_arg *a = &args[i];
        if (a->kind == FORK_ARG_STRING) {
            uint8_t f = 0;
            if (a->fd == -1)
                f |= S_FD_MINUS1;
            if (a->data) {
                f |= S_DATA_SET;
                if (a->data[a->len] == 0)
                    f |= S_NUL_AFTER;
            }
            put_u8(b, 0);
            put_u8(b, f);
            put_u64(b, a->len);
            if (digest)
                put_u64(b, a->data ? fnv1a(a->data, a->len) : 0);
            else if (a->len)
                put(b, a->data, a->len);
        } else {
            uint8_t f = 0;
            struct stat st;
            memset(&st, 0, sizeof st);
            if (a->data == NULL && a->len == 0)
                f |= F_NO_DATA;
            int fdfl = fcntl(a->fd, F_GETFD);
            if (fdfl >= 0 && (fdfl & FD_CLOEXEC))
                f |= F_CLOEXEC;
            if (fstat(a->fd, &st) == 0)
                f |= F_FSTAT_OK;
            put_u8(b, 1);
            put_u8(b, f);
            put_u32(b, (uint32_t)a->fd);
            put_u64(b, (uint64_t)st.st_dev);
            put_u64(b, (uint64_t)st.st_ino);
        }
    }
}

static int send_buf(int fd, struct buf *b) {
    int r = write_all(fd, b->p, b->len);
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
    return r < 0 ? 98 : 0;
}

/* ---- run functions ---- */

/* Writes every argument back, strings in full. */
int dump_args(int fd, const fork_arg *args, size_t nargs) {
    struct buf b = {0};
    serialise(&b, fd, args, nargs, 0);
    return send_buf(fd, &b);
}

/* Writes every argument back, strings as length + FNV-1a 64 hash. */
int digest_args(int fd, const fork_arg *args, size_t nargs) {
    struct buf b = {0};
    serialise(&b, fd, args, nargs, 1);
    return send_buf(fd, &b);
}

/* Writes the string arguments back, one per line. */
int echo_strings(int fd, const fork_arg *args, size_t nargs) {
    struct buf b = {0};
    for (size_t i = 0; i < nargs; i++) {
        if (args[i].kind != FORK_ARG_STRING)
            continue;
        put(&b, args[i].data, args[i].len);
        put(&b, "\n", 1);
    }
    if (b.len == 0)
        return 0;
    return send_buf(fd, &b);
}

/* Text lines: "comm N", "arg N" for each fd argument, "open N" for every
 * fd in /proc/self/fd (without the one reading the directory). */
int list_fds(int fd, const fork_arg *args, size_t nargs) {
    char line[64];
    struct buf b = {0};
    int n = snprintf(line, sizeof line, "comm %d\n", fd);
    put(&b, line, (size_t)n);
    for (size_t i = 0; i < nargs; i++) {
        if (args[i].kind == FORK_ARG_FD) {
            n = snprintf(line, sizeof line, "arg %d\n", args[i].fd);
            put(&b, line, (size_t)n);
        }
    }
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 97;
    int self = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        int f = atoi(e->d_name);
        if (f == self)
            continue;
        n = snprintf(line, sizeof line, "open %d\n", f);
        put(&b, line, (size_t)n);
    }
    closedir(d);
    return send_buf(fd, &b);
}

static int first_string(const fork_arg *args, size_t nargs, const char **out) {
    for (size_t i = 0; i < nargs; i++) {
        if (args[i].kind == FORK_ARG_STRING) {
            *out = (const char *)args[i].data;
            return 1;
        }
    }
    return 0;
}

static void no_core(void) {
    struct rlimit rl = {0, 0};
    setrlimit(RLIMIT_CORE, &rl);
}

/* Writes getpid() as a little-endian u32, then ends as the last string
 * argument says: "kill" (SIGKILL itself), "segv" (SIGSEGV itself),
 * "eof" (waits for EOF on the socket, then exits 0), or a number (the exit
 * status). No string: exit 0. */
int pid_then_exit(int fd, const fork_arg *args, size_t nargs) {
    const char *how = "0";
    for (size_t i = 0; i < nargs; i++)
        if (args[i].kind == FORK_ARG_STRING)
            how = (const char *)args[i].data;
    struct buf b = {0};
    put_u32(&b, (uint32_t)getpid());
    if (send_buf(fd, &b) != 0)
        return 98;
    if (strcmp(how, "kill") == 0) {
        kill(getpid(), SIGKILL);
        pause();
    }
    if (strcmp(how, "segv") == 0) {
        no_core();
        signal(SIGSEGV, SIG_DFL);
        raise(SIGSEGV);
        pause();
    }
    if (strcmp(how, "eof") == 0) {
        char c[256];
        while (read(fd, c, sizeof c) > 0) {
        }
        return 0;
    }
    return atoi(how);
}

/* Blocks until EOF on the comm socket, then exits 0. */
int wait_eof(int fd, const fork_arg *args, size_t nargs) {
    (void)args;
    (void)nargs;
    char c[256];
    ssize_t n;
    while ((n = read(fd, c, sizeof c)) != 0) {
        if (n < 0 && errno != EINTR)
            return 96;
    }
    return 0;
}

/* Raises SIGSEGV (without a core file). */
int crash_segv(int fd, const fork_arg *args, size_t nargs) {
    (void)fd;
    (void)args;
    (void)nargs;
    no_core();
    signal(SIGSEGV, SIG_DFL);
    raise(SIGSEGV);
    return 95;
}

/* Writes the decimal number of arguments, then exits 0. */
int count_args(int fd, const fork_arg *args, size_t nargs) {
    (void)args;
    char line[32];
    int n = snprintf(line, sizeof line, "%zu\n", nargs);
    return write_all(fd, line, (size_t)n) < 0 ? 98 : 0;
}

/* ---- eval functions ---- */

/* What init_record saw, written out by dump_recorded. */
static struct buf recorded_eval;
static struct buf recorded_received;
static int init_calls;

/* Records its own arguments and fork_child_args(); returns 0. */
int init_record(const fork_arg *args, size_t nargs) {
    init_calls++;
    free(recorded_eval.p);
    free(recorded_received.p);
    memset(&recorded_eval, 0, sizeof recorded_eval);
    memset(&recorded_received, 0, sizeof recorded_received);
    serialise(&recorded_eval, -1, args, nargs, 0);
    size_t n = 12345;
    const fork_arg *all = fork_child_args(&n);
    if (all == NULL && n != 0)
        return 90;
    serialise(&recorded_received, -1, all, n, 0);
    return 0;
}

/* Writes u32 init_calls, u32 len + what init_record saw of its own args,
 * u32 len + what it saw of fork_child_args, then the run's own dump. */
int dump_recorded(int fd, const fork_arg *args, size_t nargs) {
    struct buf b = {0};
    put_u32(&b, (uint32_t)init_calls);
    put_u32(&b, (uint32_t)recorded_eval.len);
    put(&b, recorded_eval.p, recorded_eval.len);
    put_u32(&b, (uint32_t)recorded_received.len);
    put(&b, recorded_received.p, recorded_received.len);
    serialise(&b, fd, args, nargs, 0);
    return send_buf(fd, &b);
}

/* Returns its first argument as a number: 0 succeeds, anything else makes
 * the process exit with that status. */
int init_status(const fork_arg *args, size_t nargs) {
    const char *s = "0";
    first_string(args, nargs, &s);
    return atoi(s);
}

/* Writes its first argument to the first fd received so far (an fd sent
 * before the eval); returns 0, or 91 when there is no such fd. */
int init_write_fd(const fork_arg *args, size_t nargs) {
    const char *s = "";
    first_string(args, nargs, &s);
    size_t n = 0;
    const fork_arg *all = fork_child_args(&n);
    for (size_t i = 0; i < n; i++) {
        if (all[i].kind == FORK_ARG_FD)
            return write_all(all[i].fd, s, strlen(s)) < 0 ? 92 : 0;
    }
    return 91;
}

/* Sets an environment variable NAME=VALUE from its two arguments (state
 * that a template's children inherit); run function show_env prints it. */
int init_setenv(const fork_arg *args, size_t nargs) {
    if (nargs < 2)
        return 93;
    return setenv((const char *)args[0].data, (const char *)args[1].data, 1) == 0 ? 0 : 94;
}

/* Writes the value of the environment variable named by the last string
 * argument, or "(unset)". */
int show_env(int fd, const fork_arg *args, size_t nargs) {
    const char *name = "";
    for (size_t i = 0; i < nargs; i++)
        if (args[i].kind == FORK_ARG_STRING)
            name = (const char *)args[i].data;
    const char *v = getenv(name);
    if (!v)
        v = "(unset)";
    return write_all(fd, v, strlen(v)) < 0 ? 98 : 0;
}

/* Fork handlers of a loaded library: the constructor registers one that
 * counts, in each new process, the forks that made it; run function
 * show_atfork writes the count as text. */
static int forked_children;

static void count_fork(void) { forked_children++; }

__attribute__((constructor)) static void register_fork_handler(void) {
    pthread_atfork(NULL, NULL, count_fork);
}

int show_atfork(int fd, const fork_arg *args, size_t nargs) {
    (void)args;
    (void)nargs;
    char text[16];
    int n = snprintf(text, sizeof text, "%d", forked_children);
    return write_all(fd, text, (size_t)n) < 0 ? 98 : 0;
}
