/*
 * fork_from_fd and the peer's uid (tests/hygiene.rs). Must run as root.
 *
 *   foreign_uid /abs/path/libchildren.so
 *
 * A child drops to nobody (65534), starts a template of its own there
 * (fork_new_exec, so the socketpair is made by nobody), sends it a string,
 * gives the socket up with fork_to_fd and passes it to us over a unix
 * socket. fork_from_fd and fork_from_fd_flags(fd, 0) must refuse it with
 * -EPERM semantics (NULL, a message naming the uid and the opt-in flag)
 * and leave the fd ours and open; fork_from_fd_flags(fd,
 * FORK_FROM_FD_ANY_UID) must accept it, and a process forked from it must
 * run as nobody with the string it was sent.
 *
 * Exits 0 when every check passed; prints each failed one on stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "anyfork.h"
#include "caller.h"
#include "checks.h"

static int send_fd(int chan, int fd) {
    char byte = 'f';
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } u;
    memset(&u, 0, sizeof u);
    struct msghdr m = {0};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = u.buf;
    m.msg_controllen = sizeof u.buf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    return sendmsg(chan, &m, 0) == 1 ? 0 : -1;
}

static int recv_fd(int chan) {
    char byte;
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } u;
    struct msghdr m = {0};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = u.buf;
    m.msg_controllen = sizeof u.buf;
    if (recvmsg(chan, &m, MSG_CMSG_CLOEXEC) != 1)
        return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    if (!c || c->cmsg_type != SCM_RIGHTS)
        return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
}

/* The child: becomes nobody, makes a template, hands its socket over. */
static int nobody(int chan) {
    if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0) {
        perror("dropping to nobody");
        return 1;
    }
    fork_proc *t = fork_new_exec();
    if (!t) {
        fprintf(stderr, "fork_new_exec as nobody: %s\n", fork_last_error());
        return 1;
    }
    if (fork_send_arg(t, "from nobody", 11) < 0) {
        fprintf(stderr, "fork_send_arg: %s\n", fork_last_error());
        return 1;
    }
    int fd = fork_to_fd(t);
    if (fd < 0 || send_fd(chan, fd) < 0) {
        fprintf(stderr, "fork_to_fd/send: %s\n", fork_last_error());
        return 1;
    }
    close(fd);
    /* Stay until the parent is done, so the template's pid stays ours. */
    char c;
    while (read(chan, &c, 1) > 0) {
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: foreign_uid LIB\n");
        return 2;
    }
    if (getuid() != 0) {
        printf("skipped: not root\n");
        return 0;
    }
    const char *lib = argv[1];
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        perror("socketpair");
        return 2;
    }
    pid_t child = fork();
    if (child == 0) {
        close(sv[0]);
        _exit(nobody(sv[1]));
    }
    close(sv[1]);
    int fd = recv_fd(sv[0]);
    CHECK(fd >= 0, "no fd from the nobody child");
    if (fd < 0)
        return 1;

    CHECK(fork_from_fd(fd) == NULL, "fork_from_fd accepted a peer running as nobody");
    const char *e = fork_last_error();
    CHECK(strstr(e, "fork_from_fd") && strstr(e, "65534") && strstr(e, "FORK_FROM_FD_ANY_UID"),
          "the refusal does not name the call, the uid and the flag: \"%s\"", e);
    CHECK(fcntl(fd, F_GETFD) >= 0, "a refused fd was closed");
    CHECK(fork_from_fd_flags(fd, 0) == NULL, "fork_from_fd_flags(fd, 0) accepted nobody");
    CHECK(fcntl(fd, F_GETFD) >= 0, "a refused fd was closed");

    fork_proc *t = fork_from_fd_flags(fd, FORK_FROM_FD_ANY_UID);
    CHECK(t != NULL, "FORK_FROM_FD_ANY_UID: %s", fork_last_error());
    if (t) {
        fork_proc *k = fork_fork(t);
        CHECK(k != NULL, "fork_fork: %s", fork_last_error());
        if (k && fork_require(k, lib) == 0) {
            char buf[8192];
            int len = run_read(k, "rl_report", buf, sizeof buf);
            CHECK(len >= 0, "running rl_report: the run callback got %d: %s", run_fd,
                  fork_last_error());
            if (len < 0)
                buf[0] = 0;
            CHECK(strstr(buf, "\nuid 65534\n") != NULL, "the process does not run as nobody:\n%s",
                  buf);
            CHECK(strstr(buf, "arg 0 S 11 from nobody\n") != NULL,
                  "the process did not get the template's string:\n%s", buf);
        } else {
            CHECK(0, "running in the adopted template: %s", fork_last_error());
        }
        fork_free(t);
    }
    close(sv[0]);
    int st = 0;
    waitpid(child, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the nobody child ended with %#x", st);
    for (int i = 0; i < 100 && fork_pending() > 0; i++)
        fork_wait(10);

    return checks_done();
}
