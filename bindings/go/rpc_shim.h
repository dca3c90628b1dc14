/*
 * rpc_shim.h: C helpers of the Go binding for RPC workers and pools
 * (rpc.go). Userdata are cgo.Handle values; the trampolines route the
 * library's callbacks to the exported Go functions in rpc.go.
 */
#ifndef ANYFORK_GO_RPC_SHIM_H
#define ANYFORK_GO_RPC_SHIM_H

#include <stdint.h>
#include <anyfork.h>

/* fork_rpc_start with the event trampoline (ev == 0: no event callback). */
fork_rpc *afgo_rpc_start(fork_proc *p, const char *function, uintptr_t ev);
/* fork_rpc_call with the reply trampoline. */
int afgo_rpc_call(fork_rpc *r, const void *data, size_t len, uintptr_t h);
/* fork_rpc_free with the destroyed trampoline. */
void afgo_rpc_free(fork_rpc *r, uintptr_t h);

/* fork_pool_new with the event trampoline (ev == 0: none). */
fork_pool *afgo_pool_new(fork_proc *t, const char *function, const fork_pool_opts *o,
                         uintptr_t ev);
/* fork_pool_call with the reply trampoline. */
int afgo_pool_call(fork_pool *p, const void *data, size_t len, uintptr_t h);
/* fork_pool_free with the destroyed trampoline. */
void afgo_pool_free(fork_pool *p, uintptr_t h);

#endif
