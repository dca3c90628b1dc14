/*
 * What happens to processes the caller lets go of (issue 17, item 8):
 *
 * - freed before anything was sent to it (fork_new, fork_fork, then
 *   fork_free): the process is never made; its exit callback gets pid -1
 *   and -ECANCELED;
 * - freed after something was sent (a string): the process is made,
 *   reads EOF before any run and exits with status 0; the same for a
 *   fork_new_exec server, which exists from the start;
 * - a detached fork_exec (NULL callback) of a missing program exits with
 *   status 127, on the template's posix_spawn path (nothing sent before)
 *   and on the forked anyfork_exec path (a string sent before): the
 *   failure message goes to a comm socket whose other end is closed,
 *   and must not kill the process with SIGPIPE.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "anyfork.h"
#include "checks.h"

struct outcome {
    int done;
    pid_t pid;
    int status;
    char error[512];
};

static void on_exit_cb(pid_t pid, int status, void *ud)
{
    struct outcome *o = ud;
    o->done++;
    o->pid = pid;
    o->status = status;
    snprintf(o->error, sizeof o->error, "%s", status < 0 ? fork_last_error() : "");
}

static void wait_for(struct outcome *o, const char *what)
{
    for (int i = 0; i < 2000 && !o->done; i++)
        fork_wait(10);
    CHECK(o->done == 1, "%s: the exit callback ran %d times", what, o->done);
}

static fork_proc *made(fork_proc *p, const char *what)
{
    if (!p) {
        fprintf(stderr, "%s: %s\n", what, fork_last_error());
        exit(2);
    }
    return p;
}

static void status_is(const struct outcome *o, int code, const char *what)
{
    char desc[64];
    if (o->status < 0)
        snprintf(desc, sizeof desc, "error %d", o->status);
    else if (WIFSIGNALED(o->status))
        snprintf(desc, sizeof desc, "killed by signal %d", WTERMSIG(o->status));
    else
        snprintf(desc, sizeof desc, "exit %d", WEXITSTATUS(o->status));
    CHECK(o->pid > 0, "%s: pid %d (%s)", what, o->pid, o->error);
    CHECK(o->status >= 0 && WIFEXITED(o->status) && WEXITSTATUS(o->status) == code,
          "%s: %s, expected exit %d (%s)", what, desc, code, o->error);
}

int main(void)
{
    /* Freed before anything was sent: never made. */
    {
        struct outcome o = {0};
        fork_proc *p = made(fork_new(), "fork_new");
        fork_on_exit(p, on_exit_cb, &o);
        fork_free(p);
        wait_for(&o, "freed unsent (fork_new)");
        CHECK(o.pid == -1 && o.status == -ECANCELED,
              "freed unsent (fork_new): pid %d status %d, expected -1 and -ECANCELED (%s)", o.pid,
              o.status, o.error);
    }
    {
        struct outcome o = {0};
        fork_proc *t = made(fork_new(), "fork_new");
        fork_proc *p = made(fork_fork(t), "fork_fork");
        fork_on_exit(p, on_exit_cb, &o);
        fork_free(p);
        fork_free(t);
        wait_for(&o, "freed unsent (fork_fork)");
        CHECK(o.pid == -1 && o.status == -ECANCELED,
              "freed unsent (fork_fork): pid %d status %d, expected -1 and -ECANCELED (%s)", o.pid,
              o.status, o.error);
    }

    /* Freed after a string was sent: made, EOF, exit 0. */
    {
        struct outcome o = {0};
        fork_proc *p = made(fork_new(), "fork_new");
        fork_on_exit(p, on_exit_cb, &o);
        if (fork_send_arg(p, "x", 1) < 0)
            return 2;
        fork_free(p);
        wait_for(&o, "freed after a string");
        status_is(&o, 0, "freed after a string");
    }
    {
        struct outcome o = {0};
        fork_proc *p = made(fork_new_exec(), "fork_new_exec");
        fork_on_exit(p, on_exit_cb, &o);
        fork_free(p);
        wait_for(&o, "a freed fork_new_exec server");
        status_is(&o, 0, "a freed fork_new_exec server");
    }

    /* Detached execs of a missing program: 127 on both paths. */
    const char *argv[] = {"/nonexistent/anyfork-no-such-program", NULL};
    const char *rest[] = {"an-argument", NULL};
    for (int forked = 0; forked <= 1; forked++) {
        for (int i = 0; i < 5; i++) {
            struct outcome o = {0};
            fork_proc *p = made(fork_new(), "fork_new");
            fork_on_exit(p, on_exit_cb, &o);
            /* A string sent first takes the forked anyfork_exec path; it
             * becomes argv[0], the missing program, and `rest` follows. */
            if (forked && fork_send_arg(p, argv[0], strlen(argv[0])) < 0)
                return 2;
            const char *const *a = forked ? rest : argv;
            if (fork_exec(p, a, NULL, NULL, NULL) < 0) {
                fprintf(stderr, "fork_exec: %s\n", fork_last_error());
                return 2;
            }
            wait_for(&o, forked ? "detached forked exec" : "detached spawned exec");
            status_is(&o, 127, forked ? "detached forked exec" : "detached spawned exec");
        }
    }
    while (fork_wait(100) > 0)
        ;
    return checks_done();
}
