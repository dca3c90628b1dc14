/*
 * fork_to_fd / fork_from_fd between two processes, driven by
 * tests/modes.rs.
 *
 * Usage: modes_handoff LIB      the sender (starts the receiver itself)
 *        modes_handoff --errors fork_from_fd on fds it must refuse
 *
 * The sender makes a template (fork_new_exec), loads LIB (modes_lib.c)
 * into it and sends it "from-sender" and the write end of a pipe. It
 * forks one child "s" from it itself, then gives the template up with
 * fork_to_fd and passes the socket over a unix socketpair (SCM_RIGHTS) to
 * the receiver: this program again, spawned as "modes_handoff --recv"
 * with its end of the socketpair as fd 3. The receiver adopts it with
 * fork_from_fd, sends it "receiver-to-template" and forks:
 *   r1: gets "from-receiver", runs modes_report;
 *   r2: gets "5", runs modes_status (exit status 5).
 * Everything prints to the shared stdout with labels; afterwards the
 * sender prints what the pipe got and whether the template went away
 * once the receiver (its last owner) exited.
 */
#include "modes_util.h"

#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

static int send_fd(int sock, int fd)
{
    char byte = 'T';
    struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } u;
    memset(&u, 0, sizeof u);
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                          .msg_controllen = sizeof u.buf };
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    return sendmsg(sock, &msg, MSG_NOSIGNAL) == 1 ? 0 : -1;
}

static int recv_fd(int sock)
{
    char byte;
    struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } u;
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                          .msg_controllen = sizeof u.buf };
    if (recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) != 1 || (msg.msg_flags & MSG_CTRUNC))
        return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (c == NULL || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int)))
        return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
}

static int receiver(void)
{
    int fd = recv_fd(3);
    if (fd < 0) {
        perror("recv_fd");
        return 1;
    }
    close(3);
    fork_proc *t = MU_CHECK_PTR(fork_from_fd(fd));
    printf("recv adopted fd %d, pid known: %s\n", fd, fork_pid(t) < 0 ? "no" : "yes");
    MU_CHECK(fork_send_arg(t, "receiver-to-template", 20));

    struct mu_proc r1 = MU_PROC_INIT, r2 = MU_PROC_INIT;
    fork_proc *a = MU_CHECK_PTR(fork_fork(t));
    fork_proc *b = MU_CHECK_PTR(fork_fork(t));
    MU_CHECK(fork_send_arg(a, "from-receiver", 13));
    MU_CHECK(fork_send_arg(b, "5", 1));
    MU_CHECK(fork_on_exit(a, mu_on_exit, &r1));
    MU_CHECK(fork_on_exit(b, mu_on_exit, &r2));
    MU_CHECK(fork_run(a, "modes_report", mu_on_run, &r1));
    MU_CHECK(fork_run(b, "modes_status", mu_on_run, &r2));
    if (mu_finish(&r1, "r1") < 0 || mu_finish(&r2, "r2") < 0)
        return 1;
    printf("recv pids r1 %ld r2 %ld\n", (long)r1.pid, (long)r2.pid);
    fork_free(t);
    return fflush(stdout) == 0 ? 0 : 1;
}

/* Waits up to 10 s for pid to be gone (or a zombie). Returns 1 if it went. */
static int gone(pid_t pid)
{
    for (int i = 0; i < 1000; i++) {
        char path[64], stat[512];
        snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            return 1;
        size_t n = fread(stat, 1, sizeof stat - 1, f);
        fclose(f);
        stat[n] = '\0';
        char *close_paren = strrchr(stat, ')');
        if (close_paren == NULL || close_paren[2] == 'Z' || close_paren[2] == 'X')
            return 1;
        struct timespec ts = { 0, 10 * 1000 * 1000 };
        nanosleep(&ts, NULL);
        /* A direct child of ours: let the library reap it. */
        (void)fork_wait(0);
    }
    return 0;
}

static int sender(const char *self, const char *lib)
{
    int sv[2], pfd[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || pipe2(pfd, O_CLOEXEC) < 0) {
        perror("setup");
        return 1;
    }
    fork_proc *t = MU_CHECK_PTR(fork_new_exec());
    pid_t tpid = fork_pid(t);
    if (tpid <= 0) {
        fprintf(stderr, "fork_pid: %s\n", fork_last_error());
        return 1;
    }
    MU_CHECK(fork_require(t, lib));
    MU_CHECK(fork_send_arg(t, "from-sender", 11));
    MU_CHECK(fork_send_fd(t, pfd[1]));

    struct mu_proc rs = MU_PROC_INIT;
    fork_proc *s = MU_CHECK_PTR(fork_fork(t));
    MU_CHECK(fork_send_arg(s, "sender-child", 12));
    MU_CHECK(fork_on_exit(s, mu_on_exit, &rs));
    MU_CHECK(fork_run(s, "modes_report", mu_on_run, &rs));

    int fd = fork_to_fd(t);
    if (fd < 0) {
        fprintf(stderr, "fork_to_fd: %d %s\n", fd, fork_last_error());
        return 1;
    }
    int fl = fcntl(fd, F_GETFL);
    printf("send gave up fd %d (template pid %ld) nonblocking=%d\n", fd, (long)tpid,
           fl >= 0 && (fl & O_NONBLOCK) != 0);
    if (mu_finish(&rs, "s") < 0)
        return 1;
    if (fflush(stdout) != 0)
        return 1;

    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) != 0 ||
        posix_spawn_file_actions_adddup2(&fa, sv[1], 3) != 0) {
        fprintf(stderr, "posix_spawn_file_actions\n");
        return 1;
    }
    char *const rargv[] = { (char *)self, "--recv", NULL };
    pid_t rpid;
    int err = posix_spawn(&rpid, self, &fa, NULL, rargv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (err != 0) {
        fprintf(stderr, "posix_spawn: %s\n", strerror(err));
        return 1;
    }
    close(sv[1]);
    if (send_fd(sv[0], fd) < 0) {
        perror("send_fd");
        return 1;
    }
    /* The receiver holds the only copy now. */
    close(fd);
    close(sv[0]);
    close(pfd[1]);

    int st;
    while (waitpid(rpid, &st, 0) < 0) {
        if (errno != EINTR) {
            perror("waitpid");
            return 1;
        }
    }
    printf("send receiver status %d\n", st);
    printf("send template gone %d\n", gone(tpid));
    if (mu_show_pipe(pfd[0], "send") < 0)
        return 1;
    return fflush(stdout) == 0 ? 0 : 1;
}

/* fork_from_fd on fds that are not a template's socket. */
static int errors(void)
{
    int pfd[2], dg[2];
    if (pipe(pfd) < 0 || socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) < 0) {
        perror("setup");
        return 1;
    }
    fork_proc *p = fork_from_fd(pfd[0]);
    printf("pipe: %s; fd still open %d; %s\n", p ? "adopted" : "NULL",
           fcntl(pfd[0], F_GETFD) >= 0, fork_last_error());
    p = fork_from_fd(dg[0]);
    printf("dgram: %s; fd still open %d; %s\n", p ? "adopted" : "NULL",
           fcntl(dg[0], F_GETFD) >= 0, fork_last_error());
    int closed = dup(0);
    if (closed < 0 || close(closed) < 0) {
        perror("dup");
        return 1;
    }
    p = fork_from_fd(closed);
    printf("closed: %s; %s\n", p ? "adopted" : "NULL", fork_last_error());
    p = fork_from_fd(-1);
    printf("negative: %s; %s\n", p ? "adopted" : "NULL", fork_last_error());
    p = fork_from_fd_flags(pfd[0], 0x80);
    printf("flags: %s; %s\n", p ? "adopted" : "NULL", fork_last_error());
    int r = fork_to_fd(NULL);
    printf("to_fd NULL: %d; %s\n", r, fork_last_error());
    return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--recv") == 0)
        return receiver();
    if (argc == 2 && strcmp(argv[1], "--errors") == 0)
        return errors();
    if (argc != 2) {
        fprintf(stderr, "usage: modes_handoff LIB | --errors\n");
        return 2;
    }
    return sender("/proc/self/exe", argv[1]);
}
