/* A libuv program that hands blocking work to a pool of anyfork workers:
 * 200 "requests" (timers firing as if clients asked) each go to the pool;
 * the loop stays free while workers compute. One uv_poll_t on
 * fork_loop_fd() drives the whole library. */
#include <anyfork.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define REQUESTS 200

static int answered, failed;
static fork_pool *pool;
static uv_poll_t watcher;

static void on_reply(int status, const void *data, size_t len, void *ud) {
    long n = (long)(intptr_t)ud;
    if (status < 0) {
        fprintf(stderr, "request %ld failed: %s\n", n, fork_last_error());
        failed++;
    } else {
        char buf[32];
        snprintf(buf, sizeof buf, "%.*s", (int)len, (const char *)data);
        if (atoll(buf) != (long long)n * (n + 1) / 2) failed++;
    }
    answered++;
}

static void on_destroyed(int status, void *ud) {
    (void)ud;
    printf("pool destroyed (%d); %d answered, %d failed\n", status, answered, failed);
    uv_poll_stop(&watcher);
    uv_close((uv_handle_t *)&watcher, NULL);
}

static void on_loop_fd(uv_poll_t *w, int status, int events) {
    (void)w; (void)status; (void)events;
    fork_loop_dispatch();
}

static void on_tick(uv_timer_t *t) {
    static long sent;
    for (int i = 0; i < 20 && sent < REQUESTS; i++) {
        char req[32];
        long n = ++sent * 1000;
        int len = snprintf(req, sizeof req, "%ld", n);
        if (fork_pool_call(pool, req, (size_t)len, on_reply, (void *)(intptr_t)n) < 0) {
            fprintf(stderr, "%s\n", fork_last_error());
            exit(1);
        }
    }
    if (sent == REQUESTS) {
        uv_timer_stop(t);
        uv_close((uv_handle_t *)t, NULL);
        fork_pool_free(pool, on_destroyed, NULL); /* graceful: all answered first */
    }
}

int main(int argc, char **argv) {
    (void)argc;
    char lib[4096];
    const char *slash = strrchr(argv[0], '/');
    snprintf(lib, sizeof lib, "%.*s/librpc_pool_worker.so",
             slash ? (int)(slash - argv[0]) : 1, slash ? argv[0] : ".");
    fork_proc *t = fork_new_exec();
    if (!t || fork_require(t, lib) < 0) {
        fprintf(stderr, "%s\n", fork_last_error());
        return 1;
    }
    fork_pool_opts o = fork_pool_defaults();
    o.max = 4;
    o.start = 0.01;
    pool = fork_pool_new(t, "sum_worker", &o, NULL, NULL);
    if (!pool) {
        fprintf(stderr, "%s\n", fork_last_error());
        return 1;
    }
    uv_loop_t *loop = uv_default_loop();
    uv_poll_init(loop, &watcher, fork_loop_fd());
    uv_poll_start(&watcher, UV_READABLE, on_loop_fd);
    uv_timer_t tick;
    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, on_tick, 0, 5);
    uv_run(loop, UV_RUN_DEFAULT);
    return failed || answered != REQUESTS;
}
