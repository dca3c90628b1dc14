/* RPC workers for rpc_test.go, loaded with Require. Requests are text:
 * "echo X" replies X; "pid" the worker's pid; "sleep MS" sleeps, replies
 * "slept MS"; "events N" sends events "ev0".."evN-1", replies "done";
 * "exit" exits at once without a reply. */
#include <anyfork.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void handle(fork_rpc_worker *w, uint32_t id, const void *req, size_t len, void *ud)
{
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
        long ms = atol(buf + 6);
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        int k = snprintf(buf, sizeof buf, "slept %ld", ms);
        fork_rpc_reply(w, id, buf, (size_t)k);
    } else if (strncmp(buf, "events ", 7) == 0) {
        int count = atoi(buf + 7);
        for (int i = 0; i < count; i++) {
            int k = snprintf(buf, sizeof buf, "ev%d", i);
            fork_rpc_event(w, buf, (size_t)k);
        }
        fork_rpc_reply(w, id, "done", 4);
    } else if (strcmp(buf, "exit") == 0) {
        _exit(3);
    } else {
        fork_rpc_reply(w, id, "?", 1);
    }
}

int rpc_worker(int fd, const fork_arg *args, size_t nargs)
{
    (void)args;
    (void)nargs;
    return fork_rpc_serve(fd, handle, NULL, 0) == 0 ? 0 : 1;
}
