/* A pool of workers spread over two hosts: each host is a remote template
 * reached through one ssh connection (fork_new_remote), and one pool
 * draws workers from both. Every request is answered by a worker on one
 * of them; the program counts the answers per template.
 *
 *   remote_pool 'ssh -o BatchMode=yes host-a anyfork-serve --stdio' \
 *               'ssh -o BatchMode=yes host-b anyfork-serve --stdio' \
 *               /path/to/libremote_pool_worker.so
 *
 * A command is split at spaces (no quoting). With no arguments, both
 * "hosts" are this machine: `sh -c 'exec anyfork-serve --stdio'` (or
 * $ANYFORK_SERVE), and the worker library beside the program. */
#include <anyfork.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQUESTS 100
#define MAXWORDS 64

static int answered, failed;
static int templates[2], counts[2];

static void on_reply(int status, const void *data, size_t len, void *ud) {
    long n = (long)(intptr_t)ud;
    answered++;
    if (status < 0) {
        fprintf(stderr, "request %ld failed: %s\n", n, fork_last_error());
        failed++;
        return;
    }
    char buf[128];
    snprintf(buf, sizeof buf, "%.*s", (int)len, (const char *)data);
    int tpl = 0;
    long long sum = -1;
    if (sscanf(buf, "%d %*s %lld", &tpl, &sum) != 2 || sum != (long long)n * (n + 1) / 2) {
        fprintf(stderr, "request %ld: bad reply \"%s\"\n", n, buf);
        failed++;
        return;
    }
    for (int i = 0; i < 2; i++) {
        if (templates[i] == 0) templates[i] = tpl;
        if (templates[i] == tpl) {
            counts[i]++;
            return;
        }
    }
    fprintf(stderr, "request %ld: a third template %d?\n", n, tpl);
    failed++;
}

/* Splits `cmd` at spaces into `argv` (NULL-terminated); modifies cmd. */
static void split(char *cmd, const char *argv[MAXWORDS]) {
    int n = 0;
    for (char *w = strtok(cmd, " "); w && n < MAXWORDS - 1; w = strtok(NULL, " "))
        argv[n++] = w;
    argv[n] = NULL;
}

static fork_proc *host(const char *const *argv, const char *lib) {
    fork_proc *t = fork_new_remote(argv);
    if (!t) {
        fprintf(stderr, "%s\n", fork_last_error());
        exit(1);
    }
    if (fork_require(t, lib) < 0) {
        fprintf(stderr, "%s\n", fork_last_error());
        exit(1);
    }
    return t;
}

int main(int argc, char **argv) {
    char a[4096], b[4096], lib[4096], here[4200];
    const char *argv_a[MAXWORDS], *argv_b[MAXWORDS];
    if (argc == 4) {
        snprintf(a, sizeof a, "%s", argv[1]);
        snprintf(b, sizeof b, "%s", argv[2]);
        split(a, argv_a);
        split(b, argv_b);
        snprintf(lib, sizeof lib, "%s", argv[3]);
    } else if (argc == 1) {
        const char *serve = getenv("ANYFORK_SERVE");
        snprintf(here, sizeof here, "exec '%s' --stdio", serve ? serve : "anyfork-serve");
        const char *local[] = {"sh", "-c", here, NULL};
        memcpy(argv_a, local, sizeof local);
        memcpy(argv_b, local, sizeof local);
        const char *slash = strrchr(argv[0], '/');
        snprintf(lib, sizeof lib, "%.*s/libremote_pool_worker.so",
                 slash ? (int)(slash - argv[0]) : 1, slash ? argv[0] : ".");
    } else {
        fprintf(stderr, "usage: %s ['HOST-A COMMAND' 'HOST-B COMMAND' WORKER-LIBRARY]\n", argv[0]);
        return 2;
    }
    fork_proc *ta = host(argv_a, lib), *tb = host(argv_b, lib);

    fork_pool_opts o = fork_pool_defaults();
    o.max = 4;     /* new workers come from the templates in turn: two on each host */
    o.load = 1;
    o.start = 0;   /* start another worker at once while all are busy */
    fork_pool *pool = fork_pool_new(ta, "remote_sum_worker", &o, NULL, NULL);
    if (!pool || fork_pool_add_template(pool, tb) < 0) {
        fprintf(stderr, "%s\n", fork_last_error());
        return 1;
    }
    for (long n = 1; n <= REQUESTS; n++) {
        char req[32];
        int len = snprintf(req, sizeof req, "%ld", n * 1000);
        if (fork_pool_call(pool, req, (size_t)len, on_reply, (void *)(intptr_t)(n * 1000)) < 0) {
            fprintf(stderr, "%s\n", fork_last_error());
            return 1;
        }
    }
    while (answered < REQUESTS)
        if (fork_wait(-1) < 0) {
            fprintf(stderr, "%s\n", fork_last_error());
            return 1;
        }
    fork_pool_free(pool, NULL, NULL);
    while (fork_wait(-1) > 0) {
    }
    printf("%d answered, %d failed; template %d: %d, template %d: %d\n", answered, failed,
           templates[0], counts[0], templates[1], counts[1]);
    return failed != 0 || counts[0] == 0 || counts[1] == 0;
}
