/*
 * rpc_shim.c: see rpc_shim.h. fork_last_error() is read here, on the
 * dispatching thread, before anything can overwrite it.
 */
#include "rpc_shim.h"
#include "shim.h"
#include "_cgo_export.h"

static void afgo_rpc_reply(int status, const void *data, size_t len, void *ud)
{
    goRpcReply(status, (void *)data, len, (uintptr_t)ud,
               status < 0 ? (char *)fork_last_error() : NULL);
}

static void afgo_rpc_event(const void *data, size_t len, void *ud)
{
    goRpcEvent((void *)data, len, (uintptr_t)ud, afgo_current_sink());
}

static void afgo_rpc_destroyed(int status, void *ud)
{
    goRpcDestroyed(status, (uintptr_t)ud, status < 0 ? (char *)fork_last_error() : NULL);
}

fork_rpc *afgo_rpc_start(fork_proc *p, const char *function, uintptr_t ev)
{
    return fork_rpc_start(p, function, ev != 0 ? afgo_rpc_event : NULL, (void *)ev);
}

int afgo_rpc_call(fork_rpc *r, const void *data, size_t len, uintptr_t h)
{
    return fork_rpc_call(r, data, len, afgo_rpc_reply, (void *)h);
}

void afgo_rpc_free(fork_rpc *r, uintptr_t h)
{
    fork_rpc_free(r, afgo_rpc_destroyed, (void *)h);
}

fork_pool *afgo_pool_new(fork_proc *t, const char *function, const fork_pool_opts *o,
                         uintptr_t ev)
{
    return fork_pool_new(t, function, o, ev != 0 ? afgo_rpc_event : NULL, (void *)ev);
}

int afgo_pool_call(fork_pool *p, const void *data, size_t len, uintptr_t h)
{
    return fork_pool_call(p, data, len, afgo_rpc_reply, (void *)h);
}

void afgo_pool_free(fork_pool *p, uintptr_t h)
{
    fork_pool_free(p, afgo_rpc_destroyed, (void *)h);
}
