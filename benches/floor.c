/*
 * The "floor template" of the spawn benchmark: the least a template server
 * can do per process and still be one.
 *
 * Fd 0 is a unix stream socket to the benchmark. Each request is one byte
 * with one fd attached (SCM_RIGHTS): the new process's end of a fresh
 * socketpair. The server forks; the child _exits at once, which closes its
 * copy of that fd; the server closes its own copy. When both are gone the
 * benchmark sees EOF on its end: the process was created and has ended.
 *
 * Children are reaped by the kernel (SIGCHLD ignored), so a creation costs
 * exactly one recvmsg, one fork and one close here. EOF on fd 0 ends the
 * server. The benchmark compiles this with `cc -O2 -static` when a static
 * libc is installed, so the process is as small as a process gets.
 *
 * A request byte 'S' instead asks for the least a template can do to run
 * a program for its caller: posix_spawn /bin/true, wait for it, then close
 * the fd (the EOF says "exited", as waitpid would).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* The fd attached to the request just read, or -1 if none came. */
static int attached_fd(struct msghdr *msg)
{
    struct cmsghdr *c;
    int fd = -1;

    for (c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
            c->cmsg_len >= CMSG_LEN(sizeof(int))) {
            memcpy(&fd, CMSG_DATA(c), sizeof fd);
        }
    }
    return fd;
}

extern char **environ;

/* Spawns /bin/true and waits for it. SIGCHLD is ignored, so the kernel
 * reaps it: waitpid returns (ECHILD) once it has exited. */
static void spawn_true(void)
{
    char *argv[] = {"/bin/true", NULL};
    pid_t pid;

    if (posix_spawn(&pid, argv[0], NULL, NULL, argv, environ) == 0)
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
}

int main(void)
{
    const int ctl = 0;

    signal(SIGCHLD, SIG_IGN);
    for (;;) {
        char byte;
        union {
            char buf[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } ctrl;
        struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
        struct msghdr msg = {
            .msg_iov = &iov,
            .msg_iovlen = 1,
            .msg_control = ctrl.buf,
            .msg_controllen = sizeof ctrl.buf,
        };
        ssize_t n = recvmsg(ctl, &msg, MSG_CMSG_CLOEXEC);

        if (n == 0)
            _exit(0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            _exit(1);
        }
        if (msg.msg_flags & MSG_CTRUNC)
            _exit(2);

        int fd = attached_fd(&msg);
        if (fd < 0)
            continue;
        if (byte == 'S') {
            spawn_true();
            close(fd);
            continue;
        }
        pid_t pid = fork();
        if (pid == 0)
            _exit(0);
        close(fd);
    }
}
