/*
 * A program that forks itself with fork() after using anyfork, without
 * calling fork_reset_after_fork (issue 17 item 3), driven by
 * tests/fork_and_threads.rs.
 *
 * Before the fork the parent has a process whose run and exit callbacks
 * are pending and a handle it has not run. In the child: nothing of the
 * parent's is pending, the inherited handle is refused with -EBADF, none
 * of the parent's callbacks runs, and processes of its own work. The
 * parent then gets each of its callbacks exactly once. The child reports
 * through its exit status (the number of failed checks).
 */
#include <anyfork.h>

#include <errno.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checks.h"

static int parent_runs, parent_exits, child_runs, child_exits, child_status = -1;

static void parent_ran(int fd, void *ud)
{
    (void)ud;
    parent_runs++;
    if (fd >= 0)
        close(fd);
}

static void parent_exited(pid_t pid, int status, void *ud)
{
    (void)pid;
    (void)status;
    (void)ud;
    parent_exits++;
}

static void child_ran(int fd, void *ud)
{
    (void)ud;
    child_runs++;
    if (fd >= 0)
        close(fd);
}

static void child_exited(pid_t pid, int status, void *ud)
{
    (void)pid;
    (void)ud;
    child_exits++;
    child_status = status;
}

static int in_child(fork_proc *held)
{
    CHECK(fork_pending() == 0, "the child sees the parent's %zu pending", fork_pending());
    int rc = fork_send_arg(held, "x", 1);
    CHECK(rc == -EBADF, "an inherited handle gave %d, not -EBADF", rc);
    CHECK(strstr(fork_last_error(), "parent") != NULL, "message: %s", fork_last_error());
    fork_free(held);
    for (int i = 0; i < 3; i++) {
        fork_proc *p = fork_new();
        CHECK(p != NULL, "fork_new in the child: %s", fork_last_error());
        if (p == NULL)
            break;
        CHECK(fork_on_exit(p, child_exited, NULL) == 0, "on_exit: %s", fork_last_error());
        CHECK(fork_send_arg(p, "7", 1) == 0, "send_arg: %s", fork_last_error());
        CHECK(fork_run(p, "anyfork_exit", child_ran, NULL) == 0, "run: %s", fork_last_error());
    }
    while (fork_wait(10000) > 0)
        ;
    CHECK(child_runs == 3 && child_exits == 3, "child callbacks: %d runs, %d exits",
          child_runs, child_exits);
    CHECK(WIFEXITED(child_status) && WEXITSTATUS(child_status) == 7, "status %#x",
          child_status);
    CHECK(parent_runs == 0 && parent_exits == 0, "the parent's callbacks ran in the child");
    return failures;
}

int main(void)
{
    fork_proc *p = fork_new();
    CHECK(p != NULL, "fork_new: %s", fork_last_error());
    fork_proc *held = fork_new();
    CHECK(held != NULL && fork_send_arg(held, "a", 1) == 0, "held: %s", fork_last_error());
    CHECK(fork_on_exit(p, parent_exited, NULL) == 0, "on_exit: %s", fork_last_error());
    CHECK(fork_run(p, "anyfork_exit", parent_ran, NULL) == 0, "run: %s", fork_last_error());
    CHECK(fork_pending() >= 2, "pending %zu", fork_pending());

    pid_t pid = fork();
    if (pid == 0)
        _exit(in_child(held) ? 1 : 0);
    CHECK(pid > 0, "fork: %s", strerror(errno));
    int st = 0;
    CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child's checks failed (status %#x)", st);

    /* The parent's own state is untouched by the child. */
    fork_free(held);
    while (fork_wait(10000) > 0)
        ;
    CHECK(parent_runs == 1 && parent_exits == 1, "parent callbacks: %d runs, %d exits",
          parent_runs, parent_exits);
    fork_proc *q = fork_new();
    CHECK(q != NULL && fork_run(q, "anyfork_exit", parent_ran, NULL) == 0,
          "the parent's template after the fork: %s", fork_last_error());
    while (fork_wait(10000) > 0)
        ;
    CHECK(parent_runs == 2, "parent runs %d", parent_runs);
    return checks_done();
}
