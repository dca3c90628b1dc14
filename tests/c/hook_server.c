/*
 * A custom template server that forks through a fork hook
 * (fork_set_fork_hook), started by tests/hook.rs through
 * fork_new_exec_argv(); with --template, a program that sets the hook and
 * then calls fork_template().
 *
 * The hook stands for an interpreter's own fork: before the fork it
 * counts the call in the parent and runs "prepare" work; after it, the
 * child records that it was made by the hook (its pid) and the parent
 * that it saw the child, as pthread_atfork handlers would.
 *
 * Evals (the dispatcher):
 *   hook_fail N ERR   the next N calls of the hook fail: they return -1
 *                     with errno ERR (0 leaves errno 0) and make no child;
 *   anything else     succeeds.
 * Runs:
 *   hook_report       writes one line on the comm socket:
 *                     "calls=<hook calls in the template before this
 *                     process> prepared=<prepare runs> parent_saw=<pid the
 *                     parent saw last> made_by_hook=<0|1> pid=<pid>
 *                     ppid=<ppid> signalfds=<signalfds open>
 *                     ud=<0|1> usr1=<the server's SIGUSR1 handler is
 *                     kept> term_dfl=<SIGTERM is at its default>".
 */
#include "modes_util.h"

#include <signal.h>
#include <sys/wait.h>

static int marker = 7;
static int calls;         /* hook calls in this process (and its parents) */
static int prepared;      /* "before fork" work done */
static pid_t made_by;     /* the pid the hook's child side recorded */
static pid_t parent_saw;  /* the last pid the hook's parent side saw */
static int fail_left;     /* hook calls still to fail */
static int fail_errno;

static pid_t hook(void *ud)
{
    if (ud != &marker)
        abort(); /* the userdata must come back as it was set */
    calls++;
    if (fail_left > 0) {
        fail_left--;
        errno = fail_errno;
        return -1;
    }
    prepared++;
    pid_t pid = fork();
    if (pid == 0)
        made_by = getpid();
    else if (pid > 0)
        parent_saw = pid;
    return pid;
}

/* Signalfds open in this process (the server's must be closed). */
static int signalfds(void)
{
    int n = 0;
    for (int fd = 0; fd < 1024; fd++) {
        char path[64], link[256];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t k = readlink(path, link, sizeof link - 1);
        if (k > 0) {
            link[k] = '\0';
            n += strstr(link, "signalfd") != NULL;
        }
    }
    return n;
}

static void on_usr1(int sig)
{
    (void)sig;
}

static int handled(int sig, void (*want)(int))
{
    struct sigaction sa;
    return sigaction(sig, NULL, &sa) == 0 && sa.sa_handler == want;
}

static int report(int fd)
{
    return mu_dprintf(fd,
                      "calls=%d prepared=%d parent_saw=%d made_by_hook=%d pid=%d ppid=%d "
                      "signalfds=%d ud=%d usr1=%d term_dfl=%d\n",
                      calls, prepared, (int)parent_saw, made_by == getpid(), (int)getpid(),
                      (int)getppid(), signalfds(), marker == 7,
                      handled(SIGUSR1, on_usr1), handled(SIGTERM, SIG_DFL)) < 0
               ? 12
               : 0;
}

static int dispatch(fork_call_kind kind, const char *name, int fd, const fork_arg *args,
                    size_t nargs, void *userdata)
{
    (void)userdata;
    if (kind == FORK_CALL_EVAL) {
        if (strcmp(name, "hook_fail") == 0) {
            if (nargs != 2)
                return 3;
            fail_left = atoi((const char *)args[0].data);
            fail_errno = atoi((const char *)args[1].data);
        }
        return 0;
    }
    if (strcmp(name, "hook_report") == 0)
        return report(fd);
    return FORK_DISPATCH_PASS;
}

/* --template: the program sets the hook, forks a template of itself
 * through it, and has two processes of that template report. */
static int template_mode(void)
{
    fork_set_fork_hook(hook, &marker);
    fork_set_dispatch(dispatch, NULL);
    fork_proc *t = fork_template();
    if (t == NULL) {
        fprintf(stderr, "fork_template: %s\n", fork_last_error());
        return 1;
    }
    printf("program pid=%d calls=%d\n", (int)getpid(), calls);
    static const char *labels[] = { "child0", "child1" };
    for (int i = 0; i < 2; i++) {
        struct mu_proc p = MU_PROC_INIT;
        fork_proc *c = fork_fork(t);
        if (c == NULL || fork_on_exit(c, mu_on_exit, &p) < 0
            || fork_run(c, "hook_report", mu_on_run, &p) < 0) {
            fprintf(stderr, "fork/run: %s\n", fork_last_error());
            return 1;
        }
        if (mu_finish(&p, labels[i]) != 0)
            return 1;
    }
    /* The template itself, as a process: its own report. */
    struct mu_proc p = MU_PROC_INIT;
    if (fork_on_exit(t, mu_on_exit, &p) < 0 || fork_run(t, "hook_report", mu_on_run, &p) < 0) {
        fprintf(stderr, "run template: %s\n", fork_last_error());
        return 1;
    }
    if (mu_finish(&p, "template") != 0)
        return 1;
    return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--template") == 0)
        return template_mode();
    const char *env = getenv("ANYFORK_FD");
    if (env == NULL) {
        fprintf(stderr, "hook_server: ANYFORK_FD is not set\n");
        return 2;
    }
    fork_set_fork_hook(hook, &marker);
    fork_set_dispatch(dispatch, NULL);
    signal(SIGUSR1, on_usr1);
    int r = fork_serve(atoi(env));
    fprintf(stderr, "hook_server: fork_serve returned %d: %s\n", r, fork_last_error());
    return 1;
}
