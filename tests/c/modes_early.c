/*
 * fork_early, driven by tests/modes.rs. Link with -rdynamic.
 *
 * Usage: modes_early
 *
 * Calls fork_early() first, then sets `set_after` (which the early copy
 * never sees). Then:
 *   t: fork_new_exec() (a fork of the early template), evaluates
 *      early_init("E1") and gets "t-before"; it is not run but forked:
 *   a: fork_fork(t), gets "a-after" and the write end of a pipe, runs
 *      early_run;
 *   n: fork_new() (the default template, also made through the early
 *      one), gets "n-arg", runs early_run;
 *   x: fork_new_exec() run directly with no arguments.
 * early_run reports set_after, what early_init saw, its executable and
 * its parent's executable, then the common report (modes_util.h).
 * Prints "self exe <path>", the reports, and the pipe.
 */
#include "modes_util.h"

#include <limits.h>

static int set_after;
static char init_seen[64] = "none";

int early_init(const fork_arg *args, size_t nargs);
int early_init(const fork_arg *args, size_t nargs)
{
    if (nargs != 1 || args[0].len >= sizeof init_seen)
        return 3;
    memcpy(init_seen, args[0].data, args[0].len + 1);
    return 0;
}

static void exe_of(pid_t pid, char *out, size_t cap)
{
    char link[64];
    snprintf(link, sizeof link, "/proc/%ld/exe", (long)pid);
    ssize_t n = readlink(link, out, cap - 1);
    if (n < 0)
        snprintf(out, cap, "(%s)", strerror(errno));
    else
        out[n] = '\0';
}

int early_run(int fd, const fork_arg *args, size_t nargs);
int early_run(int fd, const fork_arg *args, size_t nargs)
{
    char exe[PATH_MAX], pexe[PATH_MAX];
    exe_of(getpid(), exe, sizeof exe);
    exe_of(getppid(), pexe, sizeof pexe);
    if (mu_dprintf(fd, "set_after %d\ninit %s\nexe %s\nparent_exe %s\n", set_after, init_seen,
                   exe, pexe) < 0)
        return 12;
    return mu_report_args(fd, args, nargs);
}

int main(void)
{
    MU_CHECK(fork_early());
    set_after = 1;

    char exe[PATH_MAX];
    exe_of(getpid(), exe, sizeof exe);
    printf("self exe %s\n", exe);

    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0) {
        perror("pipe2");
        return 1;
    }

    fork_proc *t = MU_CHECK_PTR(fork_new_exec());
    static const char *const init_args[] = { "E1" };
    MU_CHECK(fork_eval(t, "early_init", init_args, 1));
    MU_CHECK(fork_send_arg(t, "t-before", 8));

    struct mu_proc ra = MU_PROC_INIT, rn = MU_PROC_INIT, rx = MU_PROC_INIT;
    fork_proc *a = MU_CHECK_PTR(fork_fork(t));
    MU_CHECK(fork_send_arg(a, "a-after", 7));
    MU_CHECK(fork_send_fd(a, pfd[1]));
    MU_CHECK(fork_on_exit(a, mu_on_exit, &ra));
    MU_CHECK(fork_run(a, "early_run", mu_on_run, &ra));

    fork_proc *n = MU_CHECK_PTR(fork_new());
    MU_CHECK(fork_send_arg(n, "n-arg", 5));
    MU_CHECK(fork_on_exit(n, mu_on_exit, &rn));
    MU_CHECK(fork_run(n, "early_run", mu_on_run, &rn));

    fork_proc *x = MU_CHECK_PTR(fork_new_exec());
    MU_CHECK(fork_on_exit(x, mu_on_exit, &rx));
    MU_CHECK(fork_run(x, "early_run", mu_on_run, &rx));

    if (close(pfd[1]) < 0) {
        perror("close");
        return 1;
    }
    if (mu_finish(&ra, "a") < 0 || mu_finish(&rn, "n") < 0 || mu_finish(&rx, "x") < 0)
        return 1;
    if (mu_show_pipe(pfd[0], "a") < 0)
        return 1;
    fork_free(t);
    return fflush(stdout) == 0 ? 0 : 1;
}
