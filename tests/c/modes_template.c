/*
 * fork_template, driven by tests/modes.rs. Link with -rdynamic.
 *
 * Usage: modes_template STATE
 *
 * Puts STATE in memory, calls fork_template(), then changes its own copy
 * of the state: children of the template must see STATE. It evaluates
 * tmpl_init("i1", "i2") in the template, sends it a string and the write
 * end of a pipe, evaluates tmpl_note("note") there (which finds the pipe
 * through fork_child_args), and forks three children from it:
 *   a: gets "after-a" and the pipe again, runs tmpl_run (report);
 *   b: gets "after-b", runs tmpl_run;
 *   c: gets "7", runs tmpl_status (exits with that number).
 * Prints "template pid <pid>", each child's report (see modes_util.h),
 * what the pipe got, and finally the template's own exit after
 * fork_free ("template exit <wait status>").
 */
#include "modes_util.h"

#include <sys/wait.h>

static char *state;                /* prepared from argv before the template */
static char init_seen[256] = "none"; /* what tmpl_init got, in the template */

/* Eval function: remembers its strings (joined by '+') and how many
 * arguments the process had received when it ran. */
int tmpl_init(const fork_arg *args, size_t nargs);
int tmpl_init(const fork_arg *args, size_t nargs)
{
    size_t had = 99;
    (void)fork_child_args(&had);
    size_t off = 0;
    init_seen[0] = '\0';
    for (size_t i = 0; i < nargs; i++) {
        int n = snprintf(init_seen + off, sizeof init_seen - off, "%s%s", i ? "+" : "",
                         (const char *)args[i].data);
        if (n < 0 || (size_t)n >= sizeof init_seen - off)
            return 3;
        off += (size_t)n;
    }
    int n = snprintf(init_seen + off, sizeof init_seen - off, " seen %zu", had);
    return n < 0 || (size_t)n >= sizeof init_seen - off ? 3 : 0;
}

/* Eval function, after arguments were sent: finds the fd among them with
 * fork_child_args and writes "eval <note> from <pid> saw <n>" into it. */
int tmpl_note(const fork_arg *args, size_t nargs);
int tmpl_note(const fork_arg *args, size_t nargs)
{
    size_t n = 0;
    const fork_arg *had = fork_child_args(&n);
    if (nargs != 1 || had == NULL)
        return 4;
    for (size_t i = 0; i < n; i++)
        if (had[i].kind == FORK_ARG_FD)
            return mu_dprintf(had[i].fd, "eval %s from %ld saw %zu\n",
                              (const char *)args[0].data, (long)getpid(), n) < 0 ? 5 : 0;
    return 6;
}

/* Run function: the program's state, what tmpl_init saw, the arguments. */
int tmpl_run(int fd, const fork_arg *args, size_t nargs);
int tmpl_run(int fd, const fork_arg *args, size_t nargs)
{
    if (mu_dprintf(fd, "state %s\ninit %s\n", state ? state : "(null)", init_seen) < 0)
        return 12;
    return mu_report_args(fd, args, nargs);
}

/* Run function: exits with the number in its last string argument. */
int tmpl_status(int fd, const fork_arg *args, size_t nargs);
int tmpl_status(int fd, const fork_arg *args, size_t nargs)
{
    (void)fd;
    for (size_t i = nargs; i-- > 0;)
        if (args[i].kind == FORK_ARG_STRING)
            return atoi((const char *)args[i].data);
    return 99;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: modes_template STATE\n");
        return 2;
    }
    state = strdup(argv[1]);
    int pfd[2];
    if (state == NULL || pipe2(pfd, O_CLOEXEC) < 0) {
        perror("setup");
        return 1;
    }

    fork_proc *t = MU_CHECK_PTR(fork_template());
    pid_t tpid = fork_pid(t);
    if (tpid <= 0 || tpid == getpid()) {
        fprintf(stderr, "fork_pid(template) = %ld: %s\n", (long)tpid, fork_last_error());
        return 1;
    }
    size_t outside = 5;
    const fork_arg *none = fork_child_args(&outside);
    printf("template pid %ld\noutside child_args null=%d n=%zu\n", (long)tpid, none == NULL,
           outside);
    fflush(stdout);

    /* Our copy changes; the template keeps the one it was forked with. */
    free(state);
    state = strdup("changed-after-template");

    static const char *const init_args[] = { "i1", "i2" };
    MU_CHECK(fork_eval(t, "tmpl_init", init_args, 2));
    MU_CHECK(fork_send_arg(t, "before", 6));
    MU_CHECK(fork_send_fd(t, pfd[1]));
    static const char *const note_args[] = { "note" };
    MU_CHECK(fork_eval(t, "tmpl_note", note_args, 1));

    struct mu_proc ra = MU_PROC_INIT, rb = MU_PROC_INIT, rc = MU_PROC_INIT;
    fork_proc *a = MU_CHECK_PTR(fork_fork(t));
    fork_proc *b = MU_CHECK_PTR(fork_fork(t));
    fork_proc *c = MU_CHECK_PTR(fork_fork(t));
    MU_CHECK(fork_send_arg(a, "after-a", 7));
    MU_CHECK(fork_send_fd(a, pfd[1]));
    MU_CHECK(fork_send_arg(b, "after-b", 7));
    MU_CHECK(fork_send_arg(c, "7", 1));
    MU_CHECK(fork_on_exit(a, mu_on_exit, &ra));
    MU_CHECK(fork_on_exit(b, mu_on_exit, &rb));
    MU_CHECK(fork_on_exit(c, mu_on_exit, &rc));
    MU_CHECK(fork_run(a, "tmpl_run", mu_on_run, &ra));
    MU_CHECK(fork_run(b, "tmpl_run", mu_on_run, &rb));
    MU_CHECK(fork_run(c, "tmpl_status", mu_on_run, &rc));
    if (close(pfd[1]) < 0) {
        perror("close");
        return 1;
    }
    if (mu_finish(&ra, "a") < 0 || mu_finish(&rb, "b") < 0 || mu_finish(&rc, "c") < 0)
        return 1;
    printf("pids a %ld b %ld c %ld\n", (long)ra.pid, (long)rb.pid, (long)rc.pid);
    if (mu_show_pipe(pfd[0], "all") < 0)
        return 1;

    /* Freed, the template sees EOF and exits; its exit is reported. */
    struct mu_proc rt = MU_PROC_INIT;
    MU_CHECK(fork_on_exit(t, mu_on_exit, &rt));
    fork_free(t);
    if (mu_wait_flag(&rt.exit_done, "the template's exit") < 0)
        return 1;
    printf("template exit %d pid %ld\n", rt.status, (long)rt.pid);
    return fflush(stdout) == 0 ? 0 : 1;
}
