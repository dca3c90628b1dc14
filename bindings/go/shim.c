/*
 * shim.c: see shim.h. The trampolines read fork_last_error() here, on the
 * thread that dispatches, before anything else can overwrite it.
 */
#include "shim.h"
#include "_cgo_export.h"

/* The panic sink of the Wait or Dispatch running on this thread (0: none):
 * callbacks run only inside those calls, on their thread. */
static __thread uintptr_t afgo_sink;

uintptr_t afgo_current_sink(void)
{
    return afgo_sink;
}

static void afgo_run_done(int fd, void *ud)
{
    goRunDone(fd, (uintptr_t)ud, fd < 0 ? (char *)fork_last_error() : NULL, afgo_sink);
}

static void afgo_exit_done(pid_t pid, int status, void *ud)
{
    goExitDone(pid, status, (uintptr_t)ud, status < 0 ? (char *)fork_last_error() : NULL,
               afgo_sink);
}

int afgo_wait(int timeout_ms, uintptr_t sink)
{
    uintptr_t outer = afgo_sink; /* a Wait inside a callback nests */
    afgo_sink = sink;
    int r = fork_wait(timeout_ms);
    afgo_sink = outer;
    return r;
}

int afgo_dispatch(uintptr_t sink)
{
    uintptr_t outer = afgo_sink;
    afgo_sink = sink;
    int r = fork_loop_dispatch();
    afgo_sink = outer;
    return r;
}

int afgo_run(fork_proc *p, const char *name, uintptr_t h)
{
    return fork_run(p, name, h != 0 ? afgo_run_done : NULL, (void *)h);
}

int afgo_exec(fork_proc *p, char **argv, char **envp, uintptr_t h)
{
    return fork_exec(p, (const char *const *)argv, (const char *const *)envp,
                     h != 0 ? afgo_run_done : NULL, (void *)h);
}

int afgo_on_exit(fork_proc *p, uintptr_t h)
{
    return fork_on_exit(p, afgo_exit_done, (void *)h);
}
