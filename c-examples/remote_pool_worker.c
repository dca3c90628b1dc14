/* The worker of remote_pool.c: each request is a number N; the worker
 * sums 1..N (sleeping 2 ms, as a blocking call would) and replies
 * "TEMPLATE-PID HOST SUM", so the caller can see which host answered.
 * Built as libremote_pool_worker.so; each host loads it with
 * fork_require, so it must exist at the same path there. */
#include <anyfork.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void sum(fork_rpc_worker *w, uint32_t id, const void *req, size_t len, void *ud) {
    (void)ud;
    char buf[128], host[64] = "?";
    size_t n = len < 31 ? len : 31;
    memcpy(buf, req, n);
    buf[n] = 0;
    long long s = 0, k = atoll(buf);
    for (long long i = 1; i <= k; i++) s += i;
    usleep(2000);
    gethostname(host, sizeof host - 1);
    int m = snprintf(buf, sizeof buf, "%d %s %lld", (int)getppid(), host, s);
    fork_rpc_reply(w, id, buf, (size_t)m);
}

int remote_sum_worker(int fd, const fork_arg *args, size_t nargs) {
    (void)args;
    (void)nargs;
    return fork_rpc_serve(fd, sum, NULL, 0) == 0 ? 0 : 1;
}
