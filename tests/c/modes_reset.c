/*
 * fork_reset_after_fork, driven by tests/modes.rs.
 *
 * Usage: modes_reset LIB
 *
 * The parent uses its default template (learning its pid T1 from a
 * child's ppid), creates one more handle it does not run, then forks
 * itself with fork(). The child calls fork_reset_after_fork(), checks that
 * the inherited handle is refused (-EBADF), creates and runs processes of
 * its own (default template T2, and fork_new_exec), tells the parent it is
 * done, and then outlives the parent: it waits until the parent has
 * exited and checks that T1 went away with it (the child closed its copy
 * of T1's socket) while its own T2 is still there. Meanwhile the parent
 * checks that its default template still works after the fork and exits
 * without waiting for the child.
 *
 * Lines printed: "parent template T1", "child held send <rc>",
 * the child's reports, "child template T2", "parent after ppid <pid>",
 * the report of the held handle, run by the parent last (it must not
 * hold the child's "x"), "parent done", "child parent-exited",
 * "child T1 gone <0|1>",
 * "child T2 alive <0|1>", "child done".
 */
#include "modes_util.h"

#include <sys/wait.h>
#include <time.h>

/* 1 while pid exists and is not a zombie. */
static int alive(pid_t pid)
{
    char path[64], stat[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(stat, 1, sizeof stat - 1, f);
    fclose(f);
    stat[n] = '\0';
    char *p = strrchr(stat, ')');
    return p != NULL && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

/* 1 when pid has exited (gone or a zombie) within 10 s. */
static int gone(pid_t pid)
{
    for (int i = 0; i < 1000; i++) {
        if (!alive(pid))
            return 1;
        struct timespec ts = { 0, 10 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* Runs modes_report in p with one string; prints the report under label. */
static long report(fork_proc *p, const char *lib, const char *arg, const char *label)
{
    struct mu_proc r = MU_PROC_INIT;
    MU_CHECK(fork_require(p, lib));
    MU_CHECK(fork_send_arg(p, arg, strlen(arg)));
    MU_CHECK(fork_on_exit(p, mu_on_exit, &r));
    MU_CHECK(fork_run(p, "modes_report", mu_on_run, &r));
    if (mu_finish(&r, label) < 0)
        exit(1);
    return mu_last_ppid();
}

static int child(const char *lib, fork_proc *held, int hold_r, int status_w, long t1)
{
    fork_reset_after_fork();

    int rc = fork_send_arg(held, "x", 1);
    printf("child held send %d\n", rc);
    fork_free(held);

    long t2 = report(MU_CHECK_PTR(fork_new()), lib, "child-arg", "child");
    printf("child template %ld\n", t2);

    struct mu_proc r = MU_PROC_INIT;
    fork_proc *e = MU_CHECK_PTR(fork_new_exec());
    MU_CHECK(fork_require(e, lib));
    MU_CHECK(fork_send_arg(e, "3", 1));
    MU_CHECK(fork_on_exit(e, mu_on_exit, &r));
    MU_CHECK(fork_run(e, "modes_status", mu_on_run, &r));
    if (mu_finish(&r, "child exec") < 0)
        return 1;
    fflush(stdout);

    if (mu_write_all(status_w, "ok", 2) < 0 || close(status_w) < 0)
        return 1;
    /* EOF: the parent has exited. */
    char buf[16];
    while (read(hold_r, buf, sizeof buf) > 0 || errno == EINTR)
        ;
    printf("child parent-exited\n");
    printf("child T1 gone %d\n", gone((pid_t)t1));
    printf("child T2 alive %d\n", t2 > 0 && alive((pid_t)t2));
    printf("child done\n");
    return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: modes_reset LIB\n");
        return 2;
    }
    const char *lib = argv[1];
    long t1 = report(MU_CHECK_PTR(fork_new()), lib, "parent-before", "parent");
    printf("parent template %ld\n", t1);
    fork_proc *held = MU_CHECK_PTR(fork_new());

    int hold[2], status[2];
    if (pipe2(hold, O_CLOEXEC) < 0 || pipe2(status, O_CLOEXEC) < 0) {
        perror("pipe2");
        return 1;
    }
    if (fflush(stdout) != 0)
        return 1;
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        close(hold[1]);
        close(status[0]);
        exit(child(lib, held, hold[0], status[1], t1));
    }
    close(hold[0]);
    close(status[1]);

    char ok[8];
    ssize_t n = mu_read_to_eof(status[0], ok, sizeof ok);
    if (n != 2 || memcmp(ok, "ok", 2) != 0) {
        fprintf(stderr, "the child failed\n");
        return 1;
    }
    long again = report(MU_CHECK_PTR(fork_new()), lib, "parent-after", "parent after");
    printf("parent after ppid %ld\n", again);
    /* Whatever the child did with its copy must not reach this process. */
    (void)report(held, lib, "parent-held", "parent held");
    printf("parent done\n");
    return fflush(stdout) == 0 ? 0 : 1;
}
