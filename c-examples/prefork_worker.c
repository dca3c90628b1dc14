/*
 * prefork_worker.c: one server process of prefork_server.c's pool.
 *
 * Built as libprefork_worker.so and loaded into the pool's template with
 * fork_require(), so every worker forked from the template has it already.
 * A worker enters prefork_run() with:
 *
 *   fd       its end of the comm socket (nothing is sent on it: its EOF is
 *            the parent's way of saying "stop")
 *   args[0]  FORK_ARG_FD      the listening socket, shared by all workers
 *                             (sent to the template, so cloned into each)
 *   args[1]  FORK_ARG_STRING  this worker's id
 *
 * It waits for either a client or EOF on the comm socket. Each client gets
 * "hello from worker <id>\n" and is closed. The listening socket is
 * nonblocking (the parent made it so), because all workers are woken for
 * the same connection and only one of them gets it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "anyfork.h"

static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
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

int prefork_run(int fd, const fork_arg *args, size_t nargs)
{
    if (nargs != 2 || args[0].kind != FORK_ARG_FD || args[1].kind != FORK_ARG_STRING) {
        fprintf(stderr, "prefork_run: expected (listener, id), got %zu arguments\n", nargs);
        return 2;
    }
    int listener = args[0].fd;
    const char *id = (const char *)args[1].data;

    char answer[128];
    int len = snprintf(answer, sizeof answer, "hello from worker %s\n", id);
    if (len < 0 || (size_t)len >= sizeof answer) {
        fprintf(stderr, "prefork_run: id too long\n");
        return 2;
    }

    for (;;) {
        struct pollfd pfd[2] = {
            { .fd = listener, .events = POLLIN },
            { .fd = fd, .events = POLLIN },
        };
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            perror("prefork_run: poll");
            return 1;
        }

        if (pfd[1].revents != 0) {
            char buf[64];
            ssize_t n = read(fd, buf, sizeof buf);
            if (n == 0)
                return 0; /* the parent closed its end: shut down */
            if (n < 0 && errno != EINTR && errno != EAGAIN) {
                if (errno == ECONNRESET)
                    return 0;
                perror("prefork_run: reading the comm socket");
                return 1;
            }
            /* Anything the parent sends is ignored. */
        }

        if (pfd[0].revents & POLLIN) {
            int client = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
            if (client < 0) {
                /* Another worker was faster, or the client gave up. */
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
                    errno == ECONNABORTED)
                    continue;
                perror("prefork_run: accept4");
                return 1;
            }
            if (write_all(client, answer, (size_t)len) < 0)
                perror("prefork_run: answering a client"); /* its problem, not ours */
            if (close(client) < 0)
                perror("prefork_run: close");
        } else if (pfd[0].revents != 0) {
            fprintf(stderr, "prefork_run: the listening socket failed (revents %#x)\n",
                    (unsigned)pfd[0].revents);
            return 1;
        }
    }
}
