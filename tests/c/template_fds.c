/*
 * fork_template_flags and fork_early_flags with and without
 * FORK_TEMPLATE_KEEP_FDS (issue 17, item 9):
 *
 *   template_fds MODE LOG       (MODE: keep, default, early-keep, early)
 *
 * The program opens LOG (its "log file", fd L), makes the library hold
 * fds of every kind (a default template with a held-back fork, a process
 * with a string queued, a fork_new_exec server with its pidfd, a finished
 * run), then makes a template of itself (fork_template_flags; for early
 * modes fork_early_flags comes first, before any other state). A process
 * forked from it runs tf_child, which writes "line from <pid>" to fd L
 * and reports which fds it holds.
 *
 * With KEEP_FDS: the line is in LOG, and the process holds exactly the
 * program's fds from before its first anyfork call, L and its comm
 * socket: none of the library's. Without: fd L is closed (or another
 * file) in the process, nothing reaches LOG, and the process holds only
 * 0, 1, 2 and its comm socket.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "anyfork.h"
#include "checks.h"

/* The open fds as "a b c " (ascending), the listing's own fd left out. */
static void list_fds(char *out, size_t cap, int extra_skip)
{
    int seen[1024] = {0};
    DIR *d = opendir("/proc/self/fd");
    if (!d) {
        snprintf(out, cap, "(no /proc)");
        return;
    }
    int self = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') {
            int fd = atoi(e->d_name);
            if (fd != self && fd != extra_skip && fd >= 0 && fd < 1024)
                seen[fd] = 1;
        }
    closedir(d);
    size_t len = 0;
    out[0] = 0;
    for (int fd = 0; fd < 1024 && len + 8 < cap; fd++)
        if (seen[fd])
            len += (size_t)snprintf(out + len, cap - len, "%d ", fd);
}

/* In the process: args are L, the log's st_dev and st_ino. Reports
 *   same <0|1>     fd L is the log file
 *   wrote <0|1>    a line went to it
 *   fds <list>     without the comm socket
 */
int tf_child(int fd, const fork_arg *args, size_t nargs)
{
    if (nargs != 3)
        return 3;
    char b[3][32];
    for (int i = 0; i < 3; i++) {
        size_t n = args[i].len < 31 ? args[i].len : 31;
        memcpy(b[i], args[i].data, n);
        b[i][n] = 0;
    }
    int log = atoi(b[0]);
    struct stat st;
    int same = fstat(log, &st) == 0 && (unsigned long long)st.st_dev == strtoull(b[1], NULL, 10) &&
               (unsigned long long)st.st_ino == strtoull(b[2], NULL, 10);
    int wrote = 0;
    if (same) {
        char line[64];
        int n = snprintf(line, sizeof line, "line from %ld\n", (long)getpid());
        wrote = write(log, line, (size_t)n) == n;
    }
    char fds[4096];
    list_fds(fds, sizeof fds, fd);
    dprintf(fd, "same %d\nwrote %d\nfds %s\n", same, wrote, fds);
    return 0;
}

static int ran_fd = -1000;
static void on_run(int fd, void *ud)
{
    (void)ud;
    ran_fd = fd;
}

static void read_all(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n > 0) {
            len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            struct pollfd pf = {fd, POLLIN, 0};
            if (poll(&pf, 1, 10000) > 0)
                continue;
        }
        break;
    }
    buf[len] = 0;
}

/* Runs `fn` in p, waits for its run callback, reads its comm socket. */
static void run_read(fork_proc *p, const char *fn, char *buf, size_t cap)
{
    ran_fd = -1000;
    if (fork_run(p, fn, on_run, NULL) < 0) {
        fprintf(stderr, "fork_run: %s\n", fork_last_error());
        exit(2);
    }
    for (int i = 0; i < 3000 && ran_fd == -1000; i++)
        fork_wait(10);
    if (ran_fd < 0) {
        fprintf(stderr, "run callback: %d: %s\n", ran_fd, fork_last_error());
        exit(2);
    }
    read_all(ran_fd, buf, cap);
    close(ran_fd);
}

static fork_proc *must(fork_proc *p, const char *what)
{
    if (!p) {
        fprintf(stderr, "%s: %s\n", what, fork_last_error());
        exit(2);
    }
    return p;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: template_fds MODE LOG\n");
        return 2;
    }
    const char *mode = argv[1];
    int keep = !strcmp(mode, "keep") || !strcmp(mode, "early-keep");
    int early = !strncmp(mode, "early", 5);
    unsigned flags = keep ? FORK_TEMPLATE_KEEP_FDS : 0;

    char before[4096];
    list_fds(before, sizeof before, -1);
    int log = open(argv[2], O_WRONLY | O_APPEND | O_CREAT | O_TRUNC, 0600);
    if (log < 0) {
        perror(argv[2]);
        return 2;
    }
    struct stat st;
    fstat(log, &st);
    char sl[16], sdev[32], sino[32];
    snprintf(sl, sizeof sl, "%d", log);
    snprintf(sdev, sizeof sdev, "%llu", (unsigned long long)st.st_dev);
    snprintf(sino, sizeof sino, "%llu", (unsigned long long)st.st_ino);

    if (early && fork_early_flags(flags) < 0) {
        fprintf(stderr, "fork_early_flags: %s\n", fork_last_error());
        return 2;
    }
    CHECK(fork_template_flags(2) == NULL && fork_last_errno() == -EINVAL,
          "fork_template_flags(2) was not refused with EINVAL: %s", fork_last_error());
    CHECK(fork_early_flags(6) == -EINVAL, "fork_early_flags(6) was not refused with EINVAL: %s",
          fork_last_error());

    /* The library's fds of every kind, held while the template is made. */
    fork_proc *sent = must(fork_new(), "fork_new");
    fork_send_arg(sent, "x", 1);
    fork_proc *server = must(fork_new_exec(), "fork_new_exec");
    fork_proc *held = must(fork_new(), "fork_new");
    char buf[8192];
    run_read(must(fork_new(), "fork_new"), "anyfork_exit", buf, sizeof buf);

    fork_proc *t = NULL;
    if (!early)
        t = must(fork_template_flags(flags), "fork_template_flags");
    fork_proc *p = must(t ? fork_fork(t) : fork_new(), "a process of the template");
    fork_send_arg(p, sl, strlen(sl));
    fork_send_arg(p, sdev, strlen(sdev));
    fork_send_arg(p, sino, strlen(sino));
    run_read(p, "tf_child", buf, sizeof buf);

    char want[4200], file[4096] = "";
    int f = open(argv[2], O_RDONLY);
    if (f >= 0) {
        read_all(f, file, sizeof file);
        close(f);
    }
    if (keep) {
        /* The program's fds from before, and the log, in order. */
        int lfd = log;
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s", before);
        want[0] = 0;
        int placed = 0;
        for (char *s = strtok(tmp, " "); s; s = strtok(NULL, " ")) {
            if (!placed && atoi(s) > lfd) {
                sprintf(want + strlen(want), "%d ", lfd);
                placed = 1;
            }
            sprintf(want + strlen(want), "%s ", s);
        }
        if (!placed)
            sprintf(want + strlen(want), "%d ", lfd);
        char expect[4400];
        snprintf(expect, sizeof expect, "same 1\nwrote 1\nfds %s\n", want);
        CHECK(!strcmp(buf, expect), "%s: the process reported\n%sexpected\n%s", mode, buf, expect);
        CHECK(strstr(file, "line from ") != NULL, "%s: the log holds \"%s\"", mode, file);
    } else {
        CHECK(!strcmp(buf, "same 0\nwrote 0\nfds 0 1 2 \n"),
              "%s: the process reported\n%sexpected same 0, wrote 0, fds 0 1 2", mode, buf);
        CHECK(file[0] == 0, "%s: the log holds \"%s\"", mode, file);
    }
    printf("%s: %s", mode, buf);

    fork_free(sent);
    fork_free(server);
    fork_free(held);
    if (t)
        fork_free(t);
    while (fork_wait(100) > 0)
        ;
    return checks_done();
}
