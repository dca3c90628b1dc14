/*
 * The functions every test makes its processes run: the one child library
 * of the Rust tests (tests/common/children.rs builds and loads it), of the
 * C programs beside this file and of `make sanitize`. Loaded with
 * fork_require("/abs/path/libchildren.so") into anyfork-serve or a
 * process of it; built without -lanyfork (the server exports
 * fork_child_args).
 *
 * Run functions:  int fn(int fd, const fork_arg *args, size_t nargs)
 * Eval functions: int fn(const fork_arg *args, size_t nargs)
 *
 * Three kinds of report go back over the comm socket:
 *
 * - binary (dump_args, digest_args, dump_recorded, pid_then_exit), which
 *   tests/common/report.rs parses; integers are little-endian:
 *
 *   dump:   "AFD1" u32 nargs, i32 comm_fd, u8 comm_flags, then per arg:
 *           u8 kind (0 string, 1 fd)
 *           string: u8 flags, u64 len, then len bytes (dump) or u64 FNV-1a (digest)
 *           fd:     u8 flags, i32 fd, u64 st_dev, u64 st_ino
 *
 * - text, one item a line, that both Rust and C tests read (list_fds,
 *   rl_report, rl_hold, rl_die, echo_strings, count_args, show_env, ...);
 *
 * - the report of tests/modes.rs's C programs (modes_report, described in
 *   modes_util.h).
 */
#include "modes_util.h"

#include <dirent.h>
#include <grp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>

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

/* ---- a growable buffer, written out in one go at the end ---- */

struct buf {
    unsigned char *p;
    size_t len, cap;
};

/* Makes room for n more bytes. */
static void reserve(struct buf *b, size_t n) {
    if (b->len + n <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n)
        cap *= 2;
    unsigned char *q = realloc(b->p, cap);
    if (!q)
        _exit(99);
    b->p = q;
    b->cap = cap;
}

static void put(struct buf *b, const void *data, size_t n) {
    reserve(b, n);
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

/* Appends printf-formatted text. */
static void add(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(struct buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        _exit(99);
    reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf((char *)b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Writes the buffer to fd and empties it; 0, or 98 when the write failed. */
static int send_buf(int fd, struct buf *b) {
    int r = mu_write_all(fd, b->p, b->len);
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
    return r < 0 ? 98 : 0;
}

/* ---- looking at arguments and fds ---- */

static uint64_t fnv1a(const unsigned char *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static int cloexec(int fd) {
    int f = fcntl(fd, F_GETFD);
    return f >= 0 && (f & FD_CLOEXEC) ? 1 : 0;
}

static uint8_t comm_flags(int fd) {
    uint8_t f = 0;
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK))
        f |= C_BLOCKING;
    if (cloexec(fd))
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

/* The first string argument, or dflt. */
static const char *first_string(const fork_arg *args, size_t nargs, const char *dflt) {
    for (size_t i = 0; i < nargs; i++)
        if (args[i].kind == FORK_ARG_STRING)
            return (const char *)args[i].data;
    return dflt;
}

/* The last string argument, or dflt. */
static const char *last_string(const fork_arg *args, size_t nargs, const char *dflt) {
    for (size_t i = nargs; i-- > 0;)
        if (args[i].kind == FORK_ARG_STRING)
            return (const char *)args[i].data;
    return dflt;
}

/* The fd of the n-th fd argument (from 0), or -1. */
static int nth_fd(const fork_arg *args, size_t nargs, int n) {
    for (size_t i = 0; i < nargs; i++)
        if (args[i].kind == FORK_ARG_FD && n-- == 0)
            return args[i].fd;
    return -1;
}

/* Appends "open FD\n" (with_target: "open FD TARGET\n") for every fd in
 * /proc/self/fd but the one reading the directory; -1 when it cannot be
 * read. */
static int add_open_fds(struct buf *b, int with_target) {
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int self = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        int n = atoi(e->d_name);
        if (n == self)
            continue;
        if (!with_target) {
            add(b, "open %d\n", n);
            continue;
        }
        char path[64], target[512];
        snprintf(path, sizeof path, "/proc/self/fd/%d", n);
        ssize_t l = readlink(path, target, sizeof target - 1);
        target[l > 0 ? l : 0] = 0;
        add(b, "open %d %s\n", n, target);
    }
    closedir(d);
    return 0;
}

/* No core file when this process crashes on purpose. */
static void no_core(void) {
    struct rlimit rl = {0, 0};
    setrlimit(RLIMIT_CORE, &rl);
}

/* Reads fd until EOF; 0, or 96 on a read error. */
static int read_to_eof(int fd) {
    char c[256];
    ssize_t n;
    while ((n = read(fd, c, sizeof c)) != 0)
        if (n < 0 && errno != EINTR)
            return 96;
    return 0;
}

/* ---- the binary dump ---- */

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
            if (cloexec(a->fd))
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

/* Writes the string arguments back, each followed by a newline. */
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
    struct buf b = {0};
    add(&b, "comm %d\n", fd);
    for (size_t i = 0; i < nargs; i++)
        if (args[i].kind == FORK_ARG_FD)
            add(&b, "arg %d\n", args[i].fd);
    if (add_open_fds(&b, 0) < 0)
        return 97;
    return send_buf(fd, &b);
}

/* Describes the process on the comm socket, one item a line:
 *   pid P / ppid P / uid U
 *   comm FD cloexec=C
 *   arg I S LEN TEXT        (a string argument; TEXT is the bytes as sent)
 *   arg I F FD cloexec=C
 *   open FD TARGET          (every open fd, from /proc/self/fd)
 *   sig NAME HEX            (SigPnd, ShdPnd, SigBlk, SigIgn, SigCgt)
 * then exits 0. */
int rl_report(int fd, const fork_arg *args, size_t nargs) {
    struct buf b = {0};
    add(&b, "pid %d\nppid %d\nuid %d\n", (int)getpid(), (int)getppid(), (int)getuid());
    add(&b, "comm %d cloexec=%d\n", fd, cloexec(fd));
    for (size_t i = 0; i < nargs; i++) {
        if (args[i].kind == FORK_ARG_STRING)
            add(&b, "arg %zu S %zu %s\n", i, args[i].len, (const char *)args[i].data);
        else
            add(&b, "arg %zu F %d cloexec=%d\n", i, args[i].fd, cloexec(args[i].fd));
    }
    if (add_open_fds(&b, 1) < 0)
        return 90;
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
                add(&b, "sig %.*s %s\n", (int)(kl - 1), keys[k], v);
            }
        }
    }
    fclose(st);
    return send_buf(fd, &b);
}

/* Writes the common report of tests/modes.rs (modes_util.h) on the comm
 * socket and "arg <i> from <pid>" into every fd argument. */
int modes_report(int fd, const fork_arg *args, size_t nargs) {
    return mu_report_args(fd, args, nargs);
}

/* Exits with the number in its last string argument (99 without one). */
int modes_status(int fd, const fork_arg *args, size_t nargs) {
    (void)fd;
    const char *s = last_string(args, nargs, NULL);
    return s ? atoi(s) : 99;
}

/* Writes getpid() as a little-endian u32, then ends as the last string
 * argument says: "kill" (SIGKILL itself), "segv" (SIGSEGV itself),
 * "eof" (waits for EOF on the socket, then exits 0), or a number (the exit
 * status). No string: exit 0. */
int pid_then_exit(int fd, const fork_arg *args, size_t nargs) {
    const char *how = last_string(args, nargs, "0");
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

/* Writes "pid PID\n", then ends as its first string says: "segv" raises
 * SIGSEGV (no core file), "wait" blocks until EOF on the comm socket and
 * exits 0 (the test kills it meanwhile), "abort" calls abort(). */
int rl_die(int fd, const fork_arg *args, size_t nargs) {
    const char *how = first_string(args, nargs, "wait");
    char line[64];
    int n = snprintf(line, sizeof line, "pid %d\n", (int)getpid());
    if (mu_write_all(fd, line, (size_t)n) != 0)
        return 98;
    no_core();
    if (strcmp(how, "segv") == 0) {
        volatile int *p = (volatile int *)(uintptr_t)8;
        *p = 1; /* a real invalid access, not raise() */
        return 94;
    }
    if (strcmp(how, "abort") == 0)
        abort();
    return read_to_eof(fd);
}

/* Blocks until EOF on the comm socket, then exits 0. */
int wait_eof(int fd, const fork_arg *args, size_t nargs) {
    (void)args;
    (void)nargs;
    return read_to_eof(fd);
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
    if (mu_write_all(fd, line, (size_t)n) != 0)
        return 98;
    int r = read_to_eof(in);
    if (r != 0)
        return r;
    n = snprintf(line, sizeof line, "finished %d\n", (int)getpid());
    return mu_write_all(out, line, (size_t)n) == 0 ? 0 : 95;
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
    no_core();
    return recurse(NULL, 0);
}

/* Writes the decimal number of arguments, then exits 0. */
int count_args(int fd, const fork_arg *args, size_t nargs) {
    (void)args;
    char line[32];
    int n = snprintf(line, sizeof line, "%zu\n", nargs);
    return mu_write_all(fd, line, (size_t)n) < 0 ? 98 : 0;
}

/* Writes its first string argument to its first fd argument. */
int rl_write_arg(int fd, const fork_arg *args, size_t nargs) {
    (void)fd;
    const char *s = first_string(args, nargs, "");
    int out = nth_fd(args, nargs, 0);
    return out >= 0 && mu_write_all(out, s, strlen(s)) == 0 ? 0 : 98;
}

/* Writes the value of the environment variable named by the last string
 * argument, or "(unset)". */
int show_env(int fd, const fork_arg *args, size_t nargs) {
    const char *v = getenv(last_string(args, nargs, ""));
    if (!v)
        v = "(unset)";
    return mu_write_all(fd, v, strlen(v)) < 0 ? 98 : 0;
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
    return atoi(first_string(args, nargs, "0"));
}

/* Writes its first argument to the first fd received so far (an fd sent
 * before the eval); returns 0, or 91 when there is no such fd. */
int init_write_fd(const fork_arg *args, size_t nargs) {
    const char *s = first_string(args, nargs, "");
    size_t n = 0;
    const fork_arg *all = fork_child_args(&n);
    for (size_t i = 0; i < n; i++) {
        if (all[i].kind == FORK_ARG_FD)
            return mu_write_all(all[i].fd, s, strlen(s)) < 0 ? 92 : 0;
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

/* ---- fork handlers ---- */

/* The constructor registers a fork handler that counts, in each new
 * process, the forks that made it; run function show_atfork writes the
 * count as text. */
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
    return mu_write_all(fd, text, (size_t)n) < 0 ? 98 : 0;
}

/* Writes "ready PID\n", then never reads its comm socket again: it waits
 * for a signal (the test kills it). A process that holds up its stream. */
int ignore_input(int fd, const fork_arg *args, size_t nargs) {
    (void)args;
    (void)nargs;
    char line[32];
    int n = snprintf(line, sizeof line, "ready %d\n", (int)getpid());
    if (mu_write_all(fd, line, (size_t)n) < 0)
        return 98;
    for (;;)
        pause();
}
