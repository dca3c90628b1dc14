/*
 * shim.h: C helpers of the Go binding. They hand cgo.Handle values to the
 * library as userdata and route its callbacks to the exported Go
 * functions in callbacks.go.
 */
#ifndef ANYFORK_GO_SHIM_H
#define ANYFORK_GO_SHIM_H

#include <stdint.h>
#include <anyfork.h>

/* fork_run with the Go run trampoline; h == 0 runs without a callback. */
int afgo_run(fork_proc *p, const char *name, uintptr_t h);
/* fork_exec with the Go run trampoline; h == 0 runs without a callback. */
int afgo_exec(fork_proc *p, char **argv, char **envp, uintptr_t h);
/* fork_on_exit with the Go exit trampoline. */
int afgo_on_exit(fork_proc *p, uintptr_t h);

/* fork_wait and fork_loop_dispatch: callbacks they run give their panics
 * to sink (a cgo.Handle of the calling Wait or Dispatch). */
int afgo_wait(int timeout_ms, uintptr_t sink);
int afgo_dispatch(uintptr_t sink);
/* The sink of the Wait or Dispatch running on this thread (0: none), for
 * trampolines defined elsewhere (rpc_shim.c). */
uintptr_t afgo_current_sink(void);

#endif
