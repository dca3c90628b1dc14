/*
 * Error details name the caller's own values and the real cause (issue
 * 17, item 5):
 *
 *   error_details DIR
 *
 * fork_from_fd on fd 6 holding a pipe, an unconnected TCP socket on fd 7,
 * an unconnected unix socket on fd 8: each refused with the errno and a
 * message naming that fd (not an internal duplicate) and saying what is
 * wrong, and the fd left open for the caller. ANYFORK_SERVE naming a
 * directory, a file that is not executable, and a missing file: EISDIR,
 * EACCES, ENOENT from fork_new_exec and from fork_new, each message naming
 * the path. DIR is a scratch directory for those files.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "anyfork.h"
#include "checks.h"

/* fork_from_fd(fd) must fail with `err` and a message containing both
 * `name` ("fd 6") and `why`; fd stays open. */
static void from_fd_refused(int fd, int err, const char *why)
{
    char name[16];
    snprintf(name, sizeof name, "fd %d ", fd);
    fork_proc *p = fork_from_fd(fd);
    const char *msg = fork_last_error();
    CHECK(p == NULL, "fork_from_fd(%d) accepted it", fd);
    CHECK(fork_last_errno() == -err, "fork_from_fd(%d): errno %d, expected %d (%s): %s", fd,
          fork_last_errno(), -err, strerror(err), msg);
    CHECK(strstr(msg, name) != NULL, "fork_from_fd(%d): the message does not name \"%s\": %s",
          fd, name, msg);
    CHECK(strstr(msg, why) != NULL, "fork_from_fd(%d): the message does not say \"%s\": %s", fd,
          why, msg);
    CHECK(fcntl(fd, F_GETFD) >= 0, "fork_from_fd(%d) closed the caller's fd", fd);
    if (p)
        fork_free(p);
}

static void at(int fd, int want)
{
    if (fd != want && (dup2(fd, want) < 0 || close(fd) < 0)) {
        perror("dup2");
        exit(2);
    }
}

/* With ANYFORK_SERVE=path, fork_new_exec and fork_new fail with `err` and
 * a message naming path. */
static void serve_refused(const char *path, int err)
{
    setenv("ANYFORK_SERVE", path, 1);
    fork_proc *p = fork_new_exec();
    const char *msg = fork_last_error();
    CHECK(p == NULL, "fork_new_exec with ANYFORK_SERVE=%s succeeded", path);
    CHECK(fork_last_errno() == -err, "ANYFORK_SERVE=%s: fork_new_exec errno %d, expected %d (%s): %s",
          path, fork_last_errno(), -err, strerror(err), msg);
    CHECK(strstr(msg, path) != NULL, "fork_new_exec: the message does not name %s: %s", path,
          msg);
    if (p)
        fork_free(p);
    p = fork_new();
    msg = fork_last_error();
    CHECK(p == NULL, "fork_new with ANYFORK_SERVE=%s succeeded", path);
    CHECK(fork_last_errno() == -err, "ANYFORK_SERVE=%s: fork_new errno %d, expected %d (%s): %s",
          path, fork_last_errno(), -err, strerror(err), msg);
    CHECK(strstr(msg, path) != NULL, "fork_new: the message does not name %s: %s", path, msg);
    if (p)
        fork_free(p);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: error_details DIR\n");
        return 2;
    }
    int pp[2];
    if (pipe(pp) < 0)
        return 2;
    at(pp[0], 6);
    from_fd_refused(6, ENOTSOCK, "not a socket");

    int tcp = socket(AF_INET, SOCK_STREAM, 0);
    if (tcp < 0)
        return 2;
    at(tcp, 7);
    from_fd_refused(7, EAFNOSUPPORT, "not a unix socket");

    int un = socket(AF_UNIX, SOCK_STREAM, 0);
    if (un < 0)
        return 2;
    at(un, 8);
    from_fd_refused(8, ENOTCONN, "not connected");

    char dir[4096], file[4200], missing[4200];
    snprintf(dir, sizeof dir, "%s/serve-dir", argv[1]);
    snprintf(file, sizeof file, "%s/serve-not-executable", argv[1]);
    snprintf(missing, sizeof missing, "%s/serve-missing", argv[1]);
    if ((mkdir(dir, 0700) < 0 && errno != EEXIST)) {
        perror(dir);
        return 2;
    }
    int f = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (f < 0 || write(f, "#!/bin/sh\n", 10) != 10 || close(f) < 0 || chmod(file, 0644) < 0) {
        perror(file);
        return 2;
    }
    unlink(missing);
    serve_refused(dir, EISDIR);
    /* Root too: exec needs an x bit whoever asks. */
    serve_refused(file, EACCES);
    serve_refused(missing, ENOENT);
    return checks_done();
}
