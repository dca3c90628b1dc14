/* The worker of rpc_pool.c: each request is a number N; the worker does
 * "blocking work" (sums 1..N, sleeping a millisecond) and replies the sum
 * as text. Built as librpc_pool_worker.so and loaded with fork_require. */
#include <anyfork.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void sum(fork_rpc_worker *w, uint32_t id, const void *req, size_t len, void *ud) {
    (void)ud;
    char buf[32];
    size_t n = len < sizeof buf - 1 ? len : sizeof buf - 1;
    memcpy(buf, req, n);
    buf[n] = 0;
    long long s = 0, k = atoll(buf);
    for (long long i = 1; i <= k; i++) s += i;
    usleep(1000); /* stands for a blocking call */
    int m = snprintf(buf, sizeof buf, "%lld", s);
    fork_rpc_reply(w, id, buf, (size_t)m);
}

int sum_worker(int fd, const fork_arg *args, size_t nargs) {
    (void)args; (void)nargs;
    return fork_rpc_serve(fd, sum, NULL, 0) == 0 ? 0 : 1;
}
