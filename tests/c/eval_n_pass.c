/*
 * fork_eval_n carries strings with NUL bytes; a dispatcher that returns
 * FORK_DISPATCH_PASS hands the name to dlsym. Exits 0 when both hold.
 * Linked with -rdynamic: the template's children find keep/show by dlsym.
 */
#define _GNU_SOURCE
#include <anyfork.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char kept[64];
static size_t kept_len;
static int dispatched;

int keep(const fork_arg *args, size_t nargs);
int keep(const fork_arg *args, size_t nargs)
{
    kept_len = 0;
    for (size_t i = 0; i < nargs && kept_len + args[i].len + 1 < sizeof kept; i++) {
        memcpy(kept + kept_len, args[i].data, args[i].len);
        kept_len += args[i].len;
        kept[kept_len++] = '|';
    }
    return 0;
}

int show(int fd, const fork_arg *args, size_t nargs);
int show(int fd, const fork_arg *args, size_t nargs)
{
    (void)args;
    (void)nargs;
    char line[128];
    int n = snprintf(line, sizeof line, "dispatched=%d len=%zu:", dispatched, kept_len);
    if (write(fd, line, (size_t)n) < 0 || write(fd, kept, kept_len) < 0)
        return 1;
    return 0;
}

static int pass_all(fork_call_kind kind, const char *name, int fd, const fork_arg *args,
                    size_t nargs, void *ud)
{
    (void)kind; (void)name; (void)fd; (void)args; (void)nargs; (void)ud;
    dispatched++;
    return FORK_DISPATCH_PASS;
}

static char got[256];
static size_t got_len;

static void ran(int fd, void *ud)
{
    (void)ud;
    if (fd < 0) {
        fprintf(stderr, "run failed: %s\n", fork_last_error());
        return;
    }
    struct pollfd p = {fd, POLLIN, 0};
    ssize_t n;
    do {
        poll(&p, 1, 5000);
        n = read(fd, got + got_len, sizeof got - 1 - got_len);
        if (n > 0) got_len += (size_t)n;
    } while (n > 0);
    close(fd);
}

int main(void)
{
    fork_set_dispatch(pass_all, NULL);
    fork_proc *t = fork_template();
    if (!t) { fprintf(stderr, "fork_template: %s\n", fork_last_error()); return 2; }
    fork_proc *p = fork_fork(t);
    const void *data[] = {"a\0b", "", NULL};
    size_t lens[] = {3, 0, 0};
    if (fork_eval_n(p, "keep", data, lens, 3) < 0) { fprintf(stderr, "%s\n", fork_last_error()); return 3; }
    size_t bad_lens[] = {1};
    const void *bad[] = {NULL};
    if (fork_eval_n(p, "keep", bad, bad_lens, 1) != -22 || strstr(fork_last_error(), "data[0]") == NULL) {
        fprintf(stderr, "a NULL string with a length was accepted: %s\n", fork_last_error());
        return 4;
    }
    if (fork_run(p, "show", ran, NULL) < 0) { fprintf(stderr, "%s\n", fork_last_error()); return 5; }
    while (fork_wait(5000) > 0) ;
    fork_free(t);
    static const char want[] = "dispatched=2 len=6:a\0b|||";
    if (got_len != sizeof want - 1 || memcmp(got, want, got_len) != 0) {
        fprintf(stderr, "got %zu bytes: %.*s\n", got_len, (int)got_len, got);
        return 6;
    }
    return 0;
}
