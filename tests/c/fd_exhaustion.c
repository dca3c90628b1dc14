/*
 * The caller runs out of fds (RLIMIT_NOFILE lowered, the rest filled with
 * /dev/null): every call that needs a new fd fails with -EMFILE (or NULL)
 * and a message, calls that need none still work, and nothing is half-sent:
 * once fds are free again, the process that saw the failures runs with
 * exactly the arguments whose calls succeeded.
 *
 *   fd_exhaustion /abs/path/libchildren.so
 *
 * Exits 0 when every check passed; prints each failed one on stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "anyfork.h"
#include "caller.h"
#include "checks.h"

/* The last error names `call` and says the fds ran out. */
static void check_emfile_msg(const char *call, int line) {
    const char *e = fork_last_error();
    checks++;
    if (!e || !strstr(e, call) ||
        !(strstr(e, "Too many open files") || strstr(e, "EMFILE") || strstr(e, "fds"))) {
        failures++;
        fprintf(stderr, "FAIL line %d: %s: the message does not say the fds ran out: \"%s\"\n",
                line, call, e ? e : "(null)");
    }
}

static int fill[4096], nfill;

/* Opens /dev/null until the limit is reached. */
static void exhaust(void) {
    for (;;) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            if (errno != EMFILE) {
                perror("open");
                exit(2);
            }
            return;
        }
        if (nfill == (int)(sizeof fill / sizeof fill[0])) {
            fprintf(stderr, "the limit is too high to fill\n");
            exit(2);
        }
        fill[nfill++] = fd;
    }
}

static void release(int n) {
    while (n-- > 0 && nfill > 0)
        close(fill[--nfill]);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: fd_exhaustion LIB\n");
        return 2;
    }
    const char *lib = argv[1];
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = 64;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        perror("setrlimit");
        return 2;
    }

    /* Nothing exists yet: the loop fd, the default template and a new
     * server all need fds. */
    exhaust();
    int r = fork_loop_fd();
    CHECK(r == -EMFILE, "fork_loop_fd with no fd left returned %d", r);
    check_emfile_msg("fork_loop_fd", __LINE__);
    CHECK(fork_new() == NULL, "fork_new with no fd left succeeded");
    check_emfile_msg("fork_new", __LINE__);
    CHECK(fork_new_exec() == NULL, "fork_new_exec with no fd left succeeded");
    check_emfile_msg("fork_new_exec", __LINE__);
    CHECK(fork_template() == NULL, "fork_template with no fd left succeeded");
    check_emfile_msg("fork_template", __LINE__);

    /* Enough for the loop, the default template and one process. */
    release(12);
    fork_proc *p = fork_new();
    CHECK(p != NULL, "fork_new with 12 fds free: %s", fork_last_error());
    fork_proc *t = fork_new_exec();
    CHECK(t != NULL, "fork_new_exec: %s", fork_last_error());
    if (!p || !t)
        return 1;
    CHECK(fork_require(p, lib) == 0, "fork_require: %s", fork_last_error());
    CHECK(fork_send_arg(p, "before", 6) == 0, "fork_send_arg: %s", fork_last_error());

    /* Out of fds with live handles. */
    exhaust();
    r = fork_send_fd(p, 2);
    CHECK(r == -EMFILE, "fork_send_fd with no fd left returned %d", r);
    check_emfile_msg("fork_send_fd", __LINE__);
    /* fork_new and fork_fork need no fd: a new process's socket is made by
       the call that sends its first command, which then fails with EMFILE
       and sends nothing; the process stays held for a later command. */
    fork_proc *held = fork_new();
    CHECK(held != NULL, "fork_new with no fd left: %s", fork_last_error());
    r = held ? fork_send_arg(held, "lost", 4) : -EMFILE;
    CHECK(r == -EMFILE, "the first command to a new process with no fd left returned %d", r);
    check_emfile_msg("fork_send_arg", __LINE__);
    fork_proc *kid = fork_fork(t);
    CHECK(kid != NULL, "fork_fork with no fd left: %s", fork_last_error());
    r = kid ? fork_run(kid, "echo_strings", ran, NULL) : -EMFILE;
    CHECK(r == -EMFILE, "fork_run of a new fork with no fd left returned %d", r);
    check_emfile_msg("fork_run", __LINE__);
    /* A detached run or exec of a new process needs no fd at all. */
    fork_proc *bare = fork_fork(t);
    r = bare ? fork_run(bare, "anyfork_exit", NULL, NULL) : -1;
    CHECK(r == 0, "a detached fork_run with no fd left: %s", fork_last_error());
    fork_proc *spawned = fork_fork(t);
    const char *true_argv[] = {"/bin/true", NULL};
    r = spawned ? fork_exec(spawned, true_argv, NULL, NULL, NULL) : -1;
    CHECK(r == 0, "a detached fork_exec with no fd left: %s", fork_last_error());
    CHECK(fork_new_exec() == NULL, "fork_new_exec with no fd left succeeded");
    check_emfile_msg("fork_new_exec", __LINE__);
    /* Calls that need no fd still work. */
    CHECK(fork_send_arg(p, "during", 6) == 0, "fork_send_arg: %s", fork_last_error());
    CHECK(fork_eval(p, "rl_nproc", NULL, 0) == 0, "fork_eval: %s", fork_last_error());
    CHECK(fork_pid(p) > 0, "fork_pid: %s", fork_last_error());
    CHECK(fork_wait(0) >= 0, "fork_wait: %s", fork_last_error());
    CHECK(fork_loop_dispatch() >= 0, "fork_loop_dispatch: %s", fork_last_error());

    /* Free again: the same handles carry on, in sync. */
    release(nfill);
    if (held) {
        /* Its failed command was not sent: it echoes only what follows. */
        CHECK(fork_require(held, lib) == 0 && fork_send_arg(held, "held", 4) == 0,
              "sending to the held process: %s", fork_last_error());
        char hb[64];
        int hn = run_read(held, "echo_strings", hb, sizeof hb);
        CHECK(hn == 5 && strcmp(hb, "held\n") == 0, "the held process echoed \"%s\"", hb);
    }
    CHECK(fork_send_fd(p, 2) == 0, "fork_send_fd: %s", fork_last_error());
    CHECK(fork_send_arg(p, "after", 5) == 0, "fork_send_arg: %s", fork_last_error());
    char buf[8192];
    int n = run_read(p, "rl_report", buf, sizeof buf);
    CHECK(n > 0, "the report of the process that saw EMFILE: %s", fork_last_error());
    /* Exactly: "before", "during", the fd, "after". */
    const char *a0 = strstr(buf, "arg 0 S 6 before\n");
    const char *a1 = strstr(buf, "arg 1 S 6 during\n");
    const char *a2 = strstr(buf, "arg 2 F ");
    const char *a3 = strstr(buf, "arg 3 S 5 after\n");
    CHECK(a0 && a1 && a2 && a3 && !strstr(buf, "arg 4 "),
          "the process got other arguments than the successful calls sent:\n%s", buf);

    fork_proc *k = fork_fork(t);
    CHECK(k != NULL, "fork_fork after EMFILE: %s", fork_last_error());
    if (k) {
        CHECK(fork_require(k, lib) == 0 && fork_send_arg(k, "ok", 2) == 0, "sending: %s",
              fork_last_error());
        n = run_read(k, "echo_strings", buf, sizeof buf);
        CHECK(n == 3 && strcmp(buf, "ok\n") == 0, "the template after EMFILE answered \"%s\"", buf);
    }
    fork_proc *q = fork_new();
    CHECK(q != NULL, "fork_new after EMFILE: %s", fork_last_error());
    if (q) {
        CHECK(fork_require(q, lib) == 0 && fork_send_arg(q, "ok", 2) == 0, "sending: %s",
              fork_last_error());
        n = run_read(q, "echo_strings", buf, sizeof buf);
        CHECK(n == 3 && strcmp(buf, "ok\n") == 0, "the default template answered \"%s\"", buf);
    }
    fork_free(t);
    for (int i = 0; i < 100 && fork_pending() > 0; i++)
        fork_wait(10);

    return checks_done();
}
