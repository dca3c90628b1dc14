/* A caller with a pool of 2 idle workers (tests/rpc.rs kills it):
 * prints the two workers' pids on one line, then waits to be killed.
 * argv[1]: the worker library (tests/c/rpc_worker.c). */
#include <anyfork.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char pids[2][32];
static int got;

static void reply(int status, const void *data, size_t len, void *ud) {
    char *dst = ud;
    if (status < 0 || len >= 32) {
        fprintf(stderr, "rpc_caller: %s\n", fork_last_error());
        exit(1);
    }
    memcpy(dst, data, len);
    dst[len] = 0;
    got++;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    fork_proc *t = fork_new_exec();
    if (!t || fork_require(t, argv[1]) < 0) {
        fprintf(stderr, "rpc_caller: %s\n", fork_last_error());
        return 1;
    }
    fork_pool_opts o = fork_pool_defaults();
    o.max = 2;
    o.idle = 2;
    o.load = 1;
    fork_pool *pool = fork_pool_new(t, "rpc_sync", &o, NULL, NULL);
    if (!pool) {
        fprintf(stderr, "rpc_caller: %s\n", fork_last_error());
        return 1;
    }
    for (int i = 0; i < 2; i++)
        if (fork_pool_call(pool, "pid", 3, reply, pids[i]) < 0) return 1;
    while (got < 2 && fork_wait(-1) > 0) ;
    printf("%s %s\n", pids[0], pids[1]);
    fflush(stdout);
    for (;;) pause();
}
