/* RPC workers for tests/rpc.rs, loaded into anyfork-serve with
 * fork_require (which exports the fork_rpc_* calls).
 *
 * Requests are text: "echo X" replies X; "pid" replies the pid; "sleep MS"
 * sleeps then replies "slept"; "events N" sends N events "ev0".."evN-1"
 * then replies "done"; "exit" exits at once (no reply); "retire" asks the
 * pool to retire this worker and replies "retiring". */
#include <anyfork.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void nap(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void handle(fork_rpc_worker *w, uint32_t id, const void *req, size_t len, void *ud) {
    (void)ud;
    char buf[256];
    size_t n = len < sizeof buf - 1 ? len : sizeof buf - 1;
    memcpy(buf, req, n);
    buf[n] = 0;
    if (strncmp(buf, "echo ", 5) == 0) {
        fork_rpc_reply(w, id, (const char *)req + 5, len - 5);
    } else if (strcmp(buf, "pid") == 0) {
        int k = snprintf(buf, sizeof buf, "%d", (int)getpid());
        fork_rpc_reply(w, id, buf, (size_t)k);
    } else if (strncmp(buf, "sleep ", 6) == 0) {
        nap(atol(buf + 6));
        fork_rpc_reply(w, id, "slept", 5);
    } else if (strncmp(buf, "events ", 7) == 0) {
        int count = atoi(buf + 7);
        for (int i = 0; i < count; i++) {
            int k = snprintf(buf, sizeof buf, "ev%d", i);
            fork_rpc_event(w, buf, (size_t)k);
        }
        fork_rpc_reply(w, id, "done", 4);
    } else if (strcmp(buf, "exit") == 0) {
        _exit(3);
    } else if (strcmp(buf, "retire") == 0) {
        fork_pool_retire(w);
        fork_rpc_reply(w, id, "retiring", 8);
    } else {
        fork_rpc_reply(w, id, "?", 1);
    }
}

int rpc_sync(int fd, const fork_arg *args, size_t nargs) {
    (void)args; (void)nargs;
    return fork_rpc_serve(fd, handle, NULL, 0) == 0 ? 0 : 1;
}

/* Asynchronous: "sleep MS" replies from a thread after MS, so shorter
 * sleeps overtake longer ones; everything else is answered at once. */
struct job { fork_rpc_worker *w; uint32_t id; long ms; };

static void *later(void *p) {
    struct job *j = p;
    nap(j->ms);
    char buf[32];
    int k = snprintf(buf, sizeof buf, "slept %ld", j->ms);
    fork_rpc_reply(j->w, j->id, buf, (size_t)k);
    free(j);
    return NULL;
}

static void handle_async(fork_rpc_worker *w, uint32_t id, const void *req, size_t len, void *ud) {
    if (len > 6 && memcmp(req, "sleep ", 6) == 0) {
        char buf[32];
        size_t n = len < sizeof buf - 1 ? len : sizeof buf - 1;
        memcpy(buf, req, n);
        buf[n] = 0;
        struct job *j = malloc(sizeof *j);
        j->w = w; j->id = id; j->ms = atol(buf + 6);
        pthread_t t;
        pthread_create(&t, NULL, later, j);
        pthread_detach(t);
        return;
    }
    handle(w, id, req, len, ud);
}

int rpc_async(int fd, const fork_arg *args, size_t nargs) {
    (void)args; (void)nargs;
    return fork_rpc_serve(fd, handle_async, NULL, FORK_RPC_ASYNC) == 0 ? 0 : 1;
}
