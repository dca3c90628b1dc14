/*
 * The whole API from several threads at once (issue 17): THREADS threads
 * each do ITERATIONS steps chosen by a seeded PRNG (the seed is printed;
 * pass it back to replay the same choices, though thread interleaving
 * still differs):
 *
 * - make a process: fork_new (the default template), fork_fork of a
 *   shared template made with fork_new_exec (one at a time, under a
 *   lock: a handle is used by one thread at a time), or fork_new_exec;
 * - register its exit callback (sometimes twice: the first one then
 *   runs with pid -1 and -ECANCELED), send it strings, pipe ends, a
 *   builtin eval (anyfork_setenv), ask its pid;
 * - end it: fork_run of anyfork_exit with a callback that reads the comm
 *   socket to EOF or with none (detached), fork_exec of /bin/true (with
 *   and without a callback), fork_exec of a shell printing a variable
 *   set by anyfork_setenv onto the comm socket (anyfork_comm_fd), or
 *   fork_free before or after anything was sent (freed before, it is
 *   never made, unless a later command to its template already sent its
 *   held-back fork request: then it sees EOF and exits 0; both are
 *   accepted);
 * - fork_loop_dispatch, fork_wait(0), fork_wait(10), fork_wait(-1) (only
 *   by a thread that holds no handle, so that every callback it may wait
 *   for is made due by someone else), poll on fork_loop_fd;
 * - an eval on the shared template, and now and then kill(SIGKILL) of it,
 *   after which a new one is made: its processes must still get each
 *   callback once, with an error or a real status.
 *
 * At the end (every thread joined, the last shared template freed, the
 * rest waited for): every callback registered ran exactly once with what
 * its process was expected to give (errors only for processes of killed
 * templates), fork_pending() is 0, this program holds exactly the fds it
 * held after its warm-up (the default template's socket and the loop fd
 * are made by then), and no process is left: the program is a child
 * subreaper, so processes orphaned by a killed template come back to it
 * and must exit; its only child left is the default template, which has
 * no child left either.
 *
 *   stress_threads [SEED [ITERATIONS [THREADS [TIME_LIMIT_S]]]]
 *
 * Only builtins and programs in /bin are run, so no library is loaded
 * into the processes and the program runs the same under ASan.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "anyfork.h"
#include "caller.h"
#include "checks.h"

/* ---- problems seen by the threads (checks.h's counters are not thread
 * safe: threads note problems here and main turns them into checks) ---- */

#define MAX_NOTES 40
static pthread_mutex_t notes_mu = PTHREAD_MUTEX_INITIALIZER;
static char notes[MAX_NOTES][256];
static int nnotes, nproblems;

static void problem(const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&notes_mu);
    if (nnotes < MAX_NOTES)
        snprintf(notes[nnotes++], sizeof notes[0], "%s", line);
    nproblems++;
    pthread_mutex_unlock(&notes_mu);
}

/* ---- callbacks: one slot per registration ---- */

enum kind { K_RUN, K_EXIT, K_REPLACED, K_TEMPLATE };

struct slot {
    atomic_int runs;
    enum kind kind;
    int gen;          /* shared template generation, -1 for others */
    int source;       /* how its process was made (enum source) */
    int never;        /* the registering call failed: must not run */
    int expect_exit;  /* K_EXIT: the exit status expected */
    int expect_gone;  /* K_EXIT: (-1, -ECANCELED) expected (never made) */
    int expect_kill;  /* K_TEMPLATE: killed by SIGKILL expected */
    pid_t expect_pid; /* K_EXIT, K_TEMPLATE: the pid fork_pid gave, or 0 */
    char expect_text[40]; /* K_RUN: what the comm socket says */
    /* What the callback got. */
    int got;          /* run: the fd (or -errno); exit: the wait status */
    pid_t got_pid;
    int read_err;     /* run: errno of a failed read, 0 at EOF */
    char text[48];
    char err[160];
};

static struct slot *slots;
static int nslots;
static atomic_int registered, ran_total;
static atomic_int shared_gen; /* generation of the current shared template */
static atomic_int freed_made_anyway;

static struct slot *new_slot(enum kind kind, int gen)
{
    int i = atomic_fetch_add(&registered, 1);
    if (i >= nslots) {
        fprintf(stderr, "stress_threads: more than %d callbacks\n", nslots);
        _exit(2);
    }
    struct slot *s = &slots[i];
    s->kind = kind;
    s->gen = gen;
    return s;
}

/* A registration that failed: its callback must never run. */
static void never(struct slot *s)
{
    s->never = 1;
}

static void run_cb(int fd, void *ud)
{
    struct slot *s = ud;
    s->got = fd;
    if (fd < 0) {
        snprintf(s->err, sizeof s->err, "%s", fork_last_error());
    } else {
        /* The process writes little and then ends: read it to EOF. */
        size_t len = 0;
        for (;;) {
            char buf[64];
            ssize_t n = read(fd, buf, sizeof buf);
            if (n > 0) {
                size_t room = sizeof s->text - 1 - len;
                size_t take = (size_t)n < room ? (size_t)n : room;
                memcpy(s->text + len, buf, take);
                len += take;
                continue;
            }
            if (n == 0)
                break;
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                struct pollfd pf = {fd, POLLIN, 0};
                if (poll(&pf, 1, 20000) <= 0) {
                    s->read_err = ETIMEDOUT;
                    break;
                }
                continue;
            }
            s->read_err = errno;
            break;
        }
        s->text[len] = 0;
        close(fd);
    }
    atomic_fetch_add(&ran_total, 1);
    atomic_fetch_add(&s->runs, 1);
}

static void exit_cb(pid_t pid, int status, void *ud)
{
    struct slot *s = ud;
    s->got_pid = pid;
    s->got = status;
    if (status < 0)
        snprintf(s->err, sizeof s->err, "%s", fork_last_error());
    atomic_fetch_add(&ran_total, 1);
    atomic_fetch_add(&s->runs, 1);
}

/* ---- processes that come back to this program ---- */

/* The library's direct children (fork_new_exec servers): the library
 * reaps them, this program must not. */
static pthread_mutex_t direct_mu = PTHREAD_MUTEX_INITIALIZER;
static pid_t *direct_pids;
static int ndirect, direct_cap;
static pid_t default_template;

static void add_direct(pid_t pid)
{
    pthread_mutex_lock(&direct_mu);
    if (ndirect < direct_cap)
        direct_pids[ndirect++] = pid;
    pthread_mutex_unlock(&direct_mu);
}

static int is_direct(pid_t pid)
{
    int found = pid == default_template;
    pthread_mutex_lock(&direct_mu);
    for (int i = 0; i < ndirect && !found; i++)
        found = direct_pids[i] == pid;
    pthread_mutex_unlock(&direct_mu);
    return found;
}

static int children_of(pid_t parent, pid_t *pids, char *states, int cap);

/* Reaps the zombies among this program's children that are not the
 * library's: processes orphaned by a killed template, which came here
 * (a child subreaper). Returns how many. */
static int reap_orphans(void)
{
    pid_t pids[256];
    char states[256];
    int n = children_of(getpid(), pids, states, 256), reaped = 0;
    for (int i = 0; i < n && i < 256; i++)
        if (states[i] == 'Z' && !is_direct(pids[i]) && waitpid(pids[i], NULL, WNOHANG) == pids[i])
            reaped++;
    return reaped;
}

static atomic_int orphans;

/* ---- the shared template ---- */

static pthread_mutex_t shared_mu = PTHREAD_MUTEX_INITIALIZER;
static fork_proc *shared;
static pid_t shared_pid;
static atomic_int kills, shared_evals;

/* A new shared template (shared_mu held, or before the threads start). */
static void make_shared(void)
{
    shared = fork_new_exec();
    if (!shared) {
        fprintf(stderr, "fork_new_exec: %s\n", fork_last_error());
        _exit(2);
    }
    shared_pid = fork_pid(shared);
    add_direct(shared_pid);
}

/* Frees the shared template with an exit callback; `killed` if it was
 * just sent SIGKILL (shared_mu held). */
static void drop_shared(int killed)
{
    struct slot *s = new_slot(K_TEMPLATE, -1);
    s->expect_kill = killed;
    s->expect_pid = shared_pid;
    if (fork_on_exit(shared, exit_cb, s) < 0) {
        never(s);
        problem("fork_on_exit of the shared template: %s", fork_last_error());
    }
    fork_free(shared);
    shared = NULL;
}

static void kill_shared(void)
{
    pthread_mutex_lock(&shared_mu);
    /* The generation moves first: a thread whose call fails from here on
     * sees that its template was killed. */
    atomic_fetch_add(&shared_gen, 1);
    if (kill(shared_pid, SIGKILL) < 0)
        problem("kill(%d, SIGKILL): %s", (int)shared_pid, strerror(errno));
    drop_shared(1);
    make_shared();
    pthread_mutex_unlock(&shared_mu);
    atomic_fetch_add(&kills, 1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the PRNG (xorshift64*, one state per thread) ---- */

static uint64_t next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static int pick(uint64_t *s, int n)
{
    return (int)(next(s) >> 33) % n;
}

/* ---- one process a thread holds ---- */

enum plan { P_RUN, P_RUN_DETACHED, P_EXEC_TRUE, P_EXEC_TRUE_DETACHED, P_EXEC_SH, P_FREE, NPLANS };
enum source { S_NEW, S_FORK, S_EXEC };

struct proc {
    fork_proc *p;
    enum plan plan;
    enum source source;
    int gen;
    int asked;     /* anything asked of it (a fork_new/fork_fork is made) */
    int strings;   /* strings sent */
    int status;    /* P_RUN*: the exit status its first string asks for */
    int steps;     /* steps left before its ending */
    int id;
    char token[24]; /* P_EXEC_SH: the value set with anyfork_setenv, or "" */
    struct slot *exit_slot;
};

#define HELD 3
#define MAX_PIPES 64

struct worker {
    int index;
    int iterations;
    uint64_t rng;
    struct proc held[HELD];
    int nheld;
    int pipes[MAX_PIPES]; /* read ends of pipes whose write end was sent */
    int npipes;
    pthread_t thread;
    /* Counts, summed by main. */
    int made, ended, sent_fds, waits_m1, dispatches;
};

static atomic_int proc_ids;

/* Whether an API error on this process is acceptable: only when its
 * shared template was killed. */
static int may_fail(const struct proc *pr)
{
    return pr->gen >= 0 && pr->gen != atomic_load(&shared_gen);
}

static void api_error(const struct proc *pr, const char *call, int r)
{
    if (!may_fail(pr))
        problem("process %d (source %d, gen %d): %s failed (%d): %s", pr->id, pr->source,
                pr->gen, call, r, fork_last_error());
}

static void start_process(struct worker *w)
{
    struct proc *pr = &w->held[w->nheld];
    memset(pr, 0, sizeof *pr);
    pr->id = atomic_fetch_add(&proc_ids, 1);
    pr->gen = -1;
    int r = pick(&w->rng, 20);
    pr->source = r < 9 ? S_NEW : r < 18 ? S_FORK : S_EXEC;
    if (pr->source == S_FORK) {
        pthread_mutex_lock(&shared_mu);
        pr->gen = atomic_load(&shared_gen);
        pr->p = fork_fork(shared);
        pthread_mutex_unlock(&shared_mu);
    } else {
        pr->p = pr->source == S_NEW ? fork_new() : fork_new_exec();
        if (pr->p && pr->source == S_EXEC)
            add_direct(fork_pid(pr->p));
    }
    if (!pr->p) {
        problem("process %d: making it (source %d) failed: %s", pr->id, pr->source,
                fork_last_error());
        return;
    }
    w->made++;
    w->nheld++;
    pr->plan = (enum plan)pick(&w->rng, NPLANS);
    pr->steps = pick(&w->rng, 4);
    pr->status = 1 + pick(&w->rng, 60);
    /* A fork_new_exec server exists from the start: freeing it is EOF. */
    pr->asked = pr->source == S_EXEC;
    if (pick(&w->rng, 4) != 0) {
        if (pick(&w->rng, 10) == 0) {
            /* Replaced by the registration below: it runs with -ECANCELED. */
            struct slot *s = new_slot(K_REPLACED, pr->gen);
            if (fork_on_exit(pr->p, exit_cb, s) < 0) {
                never(s);
                api_error(pr, "fork_on_exit", -1);
            }
        }
        pr->exit_slot = new_slot(K_EXIT, pr->gen);
        pr->exit_slot->source = pr->source;
        int e = fork_on_exit(pr->p, exit_cb, pr->exit_slot);
        if (e < 0) {
            never(pr->exit_slot);
            pr->exit_slot = NULL;
            api_error(pr, "fork_on_exit", e);
        }
    }
}

/* One step before the ending: a string, a pipe end, an eval or fork_pid,
 * as far as the plan allows. */
static void step(struct worker *w, struct proc *pr)
{
    pr->steps--;
    int r = pick(&w->rng, 10);
    int fds_ok = pr->plan != P_EXEC_SH;
    int strings_ok = pr->plan != P_EXEC_SH;
    if (r < 3 && strings_ok) {
        char s[24];
        if (pr->plan == P_EXEC_TRUE || pr->plan == P_EXEC_TRUE_DETACHED)
            /* Strings come before fork_exec's argv: the first is the program. */
            snprintf(s, sizeof s, "%s", pr->strings == 0 ? "/bin/true" : "an-argument");
        else if (pr->strings == 0)
            snprintf(s, sizeof s, "%d", pr->status); /* anyfork_exit's status */
        else
            snprintf(s, sizeof s, "string %d", pr->strings);
        int e = fork_send_arg(pr->p, s, strlen(s));
        pr->asked = 1;
        if (e < 0)
            api_error(pr, "fork_send_arg", e);
        else
            pr->strings++;
    } else if (r < 6 && fds_ok && w->npipes < MAX_PIPES) {
        int pfd[2];
        if (pipe2(pfd, O_CLOEXEC) < 0) {
            problem("pipe2: %s", strerror(errno));
            return;
        }
        int e = fork_send_fd(pr->p, pfd[1]);
        pr->asked = 1;
        close(pfd[1]); /* the library has its own duplicate */
        if (e < 0)
            api_error(pr, "fork_send_fd", e);
        w->pipes[w->npipes++] = pfd[0];
        w->sent_fds++;
    } else if (r < 9) {
        const char *args[1];
        char var[40];
        if (pr->plan == P_EXEC_SH) {
            snprintf(pr->token, sizeof pr->token, "tok-%d", pr->id);
            snprintf(var, sizeof var, "STRESS_TOKEN=%s", pr->token);
        } else {
            snprintf(var, sizeof var, "STRESS_OTHER=%d", pr->id);
        }
        args[0] = var;
        int e = fork_eval(pr->p, "anyfork_setenv", args, 1);
        pr->asked = 1;
        if (e < 0)
            api_error(pr, "fork_eval(anyfork_setenv)", e);
    } else {
        pid_t pid = fork_pid(pr->p);
        pr->asked = 1;
        if (pid <= 0)
            api_error(pr, "fork_pid", -1);
        else if (pr->exit_slot)
            pr->exit_slot->expect_pid = pid;
    }
}

/* Ends a held process as its plan says, and forgets it. */
static void finish(struct worker *w, int i)
{
    struct proc *pr = &w->held[i];
    struct slot *rs = NULL;
    int e = 0;
    int expect = 0;
    switch (pr->plan) {
    case P_RUN:
    case P_RUN_DETACHED:
        expect = pr->strings ? pr->status : 0;
        if (pr->plan == P_RUN)
            rs = new_slot(K_RUN, pr->gen); /* anyfork_exit writes nothing */
        e = fork_run(pr->p, "anyfork_exit", rs ? run_cb : NULL, rs);
        break;
    case P_EXEC_TRUE:
    case P_EXEC_TRUE_DETACHED: {
        const char *alone[] = {"/bin/true", NULL};
        const char *more[] = {"last", NULL};
        if (pr->plan == P_EXEC_TRUE)
            rs = new_slot(K_RUN, pr->gen);
        e = fork_exec(pr->p, pr->strings ? more : alone, NULL, rs ? run_cb : NULL, rs);
        break;
    }
    case P_EXEC_SH: {
        const char *one[] = {"1"};
        const char *argv[] = {"/bin/sh", "-c", "printf '%s\\n' \"${STRESS_TOKEN-unset}\"", NULL};
        rs = new_slot(K_RUN, pr->gen);
        snprintf(rs->expect_text, sizeof rs->expect_text, "%s\n",
                 pr->token[0] ? pr->token : "unset");
        int c = fork_eval(pr->p, "anyfork_comm_fd", one, 1);
        if (c < 0)
            api_error(pr, "fork_eval(anyfork_comm_fd)", c);
        e = fork_exec(pr->p, argv, NULL, run_cb, rs);
        break;
    }
    case P_FREE:
    default:
        if (pr->exit_slot)
            pr->exit_slot->expect_gone = !pr->asked;
        fork_free(pr->p);
        break;
    }
    if (pr->exit_slot)
        pr->exit_slot->expect_exit = expect;
    if (e < 0) {
        api_error(pr, "fork_run/fork_exec", e);
        if (rs)
            never(rs);
    }
    w->ended++;
    w->held[i] = w->held[--w->nheld];
}

/* Reads whatever the pipes say; closes those at EOF. */
static void drain_pipes(struct worker *w)
{
    for (int i = 0; i < w->npipes;) {
        struct pollfd pf = {w->pipes[i], POLLIN, 0};
        if (poll(&pf, 1, 0) == 1) {
            char buf[16];
            ssize_t n = read(w->pipes[i], buf, sizeof buf);
            if (n == 0 || (n < 0 && errno != EINTR)) {
                close(w->pipes[i]);
                w->pipes[i] = w->pipes[--w->npipes];
                continue;
            }
            if (n > 0)
                problem("a pipe sent to a process carried %zd unexpected bytes", n);
        }
        i++;
    }
}

/* "pid (comm, parent ppid)" of each process holding the other end of the
 * pipe whose read end is `fd`, for a failure message. */
static void pipe_holders(int fd, char *out, size_t cap)
{
    char want[64], path[300], link[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t k = readlink(path, want, sizeof want - 1);
    size_t len = 0;
    out[0] = 0;
    if (k <= 0)
        return;
    want[k] = 0;
    DIR *procs = opendir("/proc");
    struct dirent *p;
    while (procs && (p = readdir(procs)) != NULL) {
        int pid = atoi(p->d_name);
        if (pid <= 0 || pid == getpid())
            continue;
        snprintf(path, sizeof path, "/proc/%d/fd", pid);
        DIR *fds = opendir(path);
        struct dirent *f;
        while (fds && (f = readdir(fds)) != NULL) {
            snprintf(path, sizeof path, "/proc/%d/fd/%s", pid, f->d_name);
            k = readlink(path, link, sizeof link - 1);
            if (k <= 0)
                continue;
            link[k] = 0;
            if (strcmp(link, want) == 0 && len + 1 < cap) {
                char comm[32] = "?";
                snprintf(path, sizeof path, "/proc/%d/comm", pid);
                FILE *c = fopen(path, "r");
                if (c) {
                    if (fgets(comm, sizeof comm, c))
                        comm[strcspn(comm, "\n")] = 0;
                    fclose(c);
                }
                int w = snprintf(out + len, cap - len, " %d (%s, parent %d)", pid, comm,
                                 (int)ppid_of(pid));
                len += w > 0 ? (size_t)w : 0;
                if (len >= cap)
                    len = cap - 1;
                break;
            }
        }
        if (fds)
            closedir(fds);
    }
    if (procs)
        closedir(procs);
    if (len == 0)
        snprintf(out, cap, " no process");
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (int it = 0; it < w->iterations; it++) {
        int r = pick(&w->rng, 200);
        if (r < 60) {
            if (w->nheld < HELD)
                start_process(w);
            else
                finish(w, pick(&w->rng, w->nheld));
        } else if (r < 130) {
            if (w->nheld > 0) {
                int i = pick(&w->rng, w->nheld);
                if (w->held[i].steps > 0)
                    step(w, &w->held[i]);
                else
                    finish(w, i);
            } else {
                start_process(w);
            }
        } else if (r < 146) {
            int n = fork_loop_dispatch();
            if (n < 0)
                problem("fork_loop_dispatch: %s", fork_last_error());
            w->dispatches++;
        } else if (r < 156) {
            if (fork_wait(0) < 0)
                problem("fork_wait(0): %s", fork_last_error());
        } else if (r < 166) {
            if (fork_wait(10) < 0)
                problem("fork_wait(10): %s", fork_last_error());
        } else if (r < 172) {
            /* -1 only while holding nothing: every pending callback is then
             * made due by other threads or by this wait itself. */
            while (w->nheld > 0)
                finish(w, w->nheld - 1);
            if (fork_wait(-1) < 0)
                problem("fork_wait(-1): %s", fork_last_error());
            w->waits_m1++;
        } else if (r < 180) {
            struct pollfd pf = {fork_loop_fd(), POLLIN, 0};
            if (pf.fd < 0)
                problem("fork_loop_fd: %s", fork_last_error());
            else if (poll(&pf, 1, 10) == 1 && fork_loop_dispatch() < 0)
                problem("fork_loop_dispatch: %s", fork_last_error());
        } else if (r < 186) {
            char var[40];
            snprintf(var, sizeof var, "STRESS_TEMPLATE=%d", it);
            const char *args[] = {var};
            pthread_mutex_lock(&shared_mu);
            int e = fork_eval(shared, "anyfork_setenv", args, 1);
            pthread_mutex_unlock(&shared_mu);
            if (e < 0)
                problem("fork_eval of the shared template: %s", fork_last_error());
            atomic_fetch_add(&shared_evals, 1);
        } else if (r < 188) {
            kill_shared();
        } else if (r < 190) {
            atomic_fetch_add(&orphans, reap_orphans());
        } else {
            drain_pipes(w);
        }
    }
    while (w->nheld > 0)
        finish(w, w->nheld - 1);
    /* The pipes' write ends are in processes that end by themselves, once
     * what was queued for them is delivered: keep the loop turning. */
    double until = now() + 30;
    while (w->npipes > 0 && now() < until) {
        if (fork_wait(10) == 0)
            usleep(1000); /* fork_wait returns at once when nothing waits */
        drain_pipes(w);
    }
    if (w->npipes > 0) {
        char who[160];
        pipe_holders(w->pipes[0], who, sizeof who);
        problem("thread %d: %d pipes sent to processes still open 30 s after the end (the "
                "first is held by%s)",
                w->index, w->npipes, who);
        while (w->npipes > 0)
            close(w->pipes[--w->npipes]);
    }
    return NULL;
}

/* ---- the end checks ---- */

/* The number of open fds; `list` (may be NULL) gets "fd -> what" lines. */
static int open_fds(char *list, size_t cap)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    struct dirent *e;
    size_t len = 0;
    if (!d)
        return -1;
    if (list && cap)
        list[0] = 0;
    while ((e = readdir(d)) != NULL) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] == '.' || fd == dirfd(d))
            continue;
        n++;
        if (list && len + 1 < cap) {
            char path[64], what[128];
            snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
            ssize_t k = readlink(path, what, sizeof what - 1);
            what[k > 0 ? k : 0] = 0;
            int w = snprintf(list + len, cap - len, "  %d -> %s\n", fd, what);
            len += w > 0 ? (size_t)w : 0;
            if (len >= cap)
                len = cap - 1;
        }
    }
    closedir(d);
    return n;
}

/* The children of `parent` (pid, state letter), up to `cap`. */
static int children_of(pid_t parent, pid_t *pids, char *states, int cap)
{
    DIR *d = opendir("/proc");
    int n = 0;
    struct dirent *e;
    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL) {
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid <= 0)
            continue;
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = 0;
        char *p = strrchr(buf, ')');
        char state;
        int ppid;
        if (!p || sscanf(p + 2, "%c %d", &state, &ppid) != 2 || ppid != parent)
            continue;
        if (n < cap) {
            pids[n] = pid;
            states[n] = state;
        }
        n++;
    }
    closedir(d);
    return n;
}

static const char *describe(int status, char *buf, size_t cap)
{
    if (status < 0)
        snprintf(buf, cap, "error %d", status);
    else if (WIFSIGNALED(status))
        snprintf(buf, cap, "killed by signal %d", WTERMSIG(status));
    else
        snprintf(buf, cap, "exit %d", WEXITSTATUS(status));
    return buf;
}

/* Checks one slot; `final_gen` is the generation of the last template
 * (every earlier one was killed). Returns 1 for a process of a killed
 * template that saw an error. */
static int check_slot(int i, const struct slot *s, int final_gen)
{
    int runs = atomic_load(&s->runs);
    int killed = s->gen >= 0 && s->gen != final_gen;
    char d[64];
    if (s->never) {
        CHECK(runs == 0, "callback %d: its registration failed, yet it ran %d times", i, runs);
        return 0;
    }
    CHECK(runs == 1, "callback %d (kind %d, gen %d): ran %d times", i, s->kind, s->gen, runs);
    if (runs != 1)
        return 0;
    switch (s->kind) {
    case K_RUN:
        if (killed && (s->got < 0 || s->read_err != 0))
            return 1;
        CHECK(s->got >= 0, "run callback %d: fd %d (%s)", i, s->got, s->err);
        CHECK(s->read_err == 0, "run callback %d: reading the comm socket: %s", i,
              strerror(s->read_err));
        if (!killed || s->text[0] != 0)
            CHECK(strcmp(s->text, s->expect_text) == 0, "run callback %d: read \"%s\", expected \"%s\"",
                  i, s->text, s->expect_text);
        return 0;
    case K_REPLACED:
        /* A process whose template was killed between the two
         * registrations may have failed, and its first exit callback got
         * that error (with its pid if the template had reported it). */
        if (killed && s->got < 0 && s->got != -ECANCELED)
            return 1;
        CHECK(s->got_pid == -1 && s->got == -ECANCELED,
              "replaced exit callback %d (gen %d): pid %d, %s, expected -1 and -ECANCELED", i,
              s->gen, (int)s->got_pid, describe(s->got, d, sizeof d));
        return 0;
    case K_TEMPLATE:
        if (s->expect_kill)
            CHECK(s->got >= 0 && WIFSIGNALED(s->got) && WTERMSIG(s->got) == SIGKILL,
                  "a killed shared template: %s (%s)", describe(s->got, d, sizeof d), s->err);
        else
            CHECK(s->got >= 0 && WIFEXITED(s->got) && WEXITSTATUS(s->got) == 0,
                  "the last shared template, freed: %s (%s)", describe(s->got, d, sizeof d), s->err);
        CHECK(s->got_pid == s->expect_pid, "a shared template's exit: pid %d, expected %d",
              (int)s->got_pid, (int)s->expect_pid);
        return 0;
    case K_EXIT:
        if (killed && s->got < 0)
            return 1;
        if (s->expect_gone) {
            /* Never made (-1, -ECANCELED), or made anyway and ended at EOF
             * with status 0: a fork request is held back only until the
             * next command to its template, and another thread's fork
             * (any later fork_new, even on one thread) sends it. */
            if (s->got_pid > 0 && s->got == 0) {
                atomic_fetch_add(&freed_made_anyway, 1);
                return 0;
            }
            CHECK(s->got_pid == -1 && s->got == -ECANCELED,
                  "exit callback %d of a process (source %d, gen %d) freed before anything "
                  "was asked: pid %d, %s",
                  i, s->source, s->gen, (int)s->got_pid, describe(s->got, d, sizeof d));
            return 0;
        }
        if (killed && s->got_pid == -1)
            return 1;
        CHECK(s->got >= 0 && WIFEXITED(s->got) && WEXITSTATUS(s->got) == s->expect_exit,
              "exit callback %d (gen %d): pid %d, %s, expected exit %d (%s)", i, s->gen,
              (int)s->got_pid, describe(s->got, d, sizeof d), s->expect_exit, s->err);
        CHECK(s->got_pid > 0 && (s->expect_pid == 0 || s->got_pid == s->expect_pid),
              "exit callback %d: pid %d, fork_pid said %d", i, (int)s->got_pid,
              (int)s->expect_pid);
        return 0;
    }
    return 0;
}

static unsigned long long seed_shown;

static void timed_out(int sig)
{
    (void)sig;
    char msg[160];
    int n = snprintf(msg, sizeof msg,
                     "stress_threads: time limit passed (seed %llu): something hangs\n",
                     seed_shown);
    if (write(2, msg, (size_t)n) < 0) {
    }
    _exit(3);
}


int main(int argc, char **argv)
{
    unsigned long long seed =
        argc > 1 ? strtoull(argv[1], NULL, 0) : (unsigned long long)time(NULL) ^ (unsigned)getpid();
    int iterations = argc > 2 ? atoi(argv[2]) : 2000;
    int nthreads = argc > 3 ? atoi(argv[3]) : 6;
    int limit = argc > 4 ? atoi(argv[4]) : 120;
    if (seed == 0)
        seed = 1; /* xorshift's one fixed point */
    if (iterations <= 0 || nthreads <= 0 || nthreads > 64 || limit <= 0) {
        fprintf(stderr, "usage: stress_threads [SEED [ITERATIONS [THREADS [TIME_LIMIT_S]]]]\n");
        return 2;
    }
    seed_shown = seed;
    printf("seed %llu, %d threads, %d iterations each\n", seed, nthreads, iterations);
    fflush(stdout);
    signal(SIGALRM, timed_out);
    alarm((unsigned)limit);
    double t0 = now();

    /* Orphans of killed templates come back here, to be counted. */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) {
        perror("prctl(PR_SET_CHILD_SUBREAPER)");
        return 2;
    }

    /* Warm-up: the default template and the loop fd exist from here on;
     * the default template is the parent of the process fork_new made. */
    fork_proc *first = fork_new();
    pid_t first_pid = first ? fork_pid(first) : -1;
    default_template = first_pid > 0 ? ppid_of(first_pid) : -1;
    if (default_template <= 1 || fork_run(first, "anyfork_exit", NULL, NULL) < 0) {
        fprintf(stderr, "warm-up: %s\n", fork_last_error());
        return 2;
    }
    while (fork_wait(-1) > 0)
        ;
    if (fork_loop_fd() < 0)
        return 2;
    static char fds_warm[4096];
    int fds_before = open_fds(fds_warm, sizeof fds_warm);

    nslots = nthreads * iterations * 3 + 64;
    slots = calloc((size_t)nslots, sizeof *slots);
    struct worker *ws = calloc((size_t)nthreads, sizeof *ws);
    direct_cap = nthreads * iterations + 64;
    direct_pids = calloc((size_t)direct_cap, sizeof *direct_pids);
    if (!slots || !ws || !direct_pids)
        return 2;
    make_shared();
    for (int i = 0; i < nthreads; i++) {
        ws[i].index = i;
        ws[i].iterations = iterations;
        ws[i].rng = seed * 0x9e3779b97f4a7c15ULL + (uint64_t)i * 0x632be59bd9b4e019ULL + 1;
        if (pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 2;
        }
    }
    for (int i = 0; i < nthreads; i++)
        pthread_join(ws[i].thread, NULL);
    double t_threads = now() - t0;

    pthread_mutex_lock(&shared_mu);
    drop_shared(0);
    pthread_mutex_unlock(&shared_mu);
    for (double until = now() + 30; fork_pending() > 0 && now() < until;)
        fork_wait(10);

    /* Exactly once, with what each process was expected to give. */
    CHECK(fork_pending() == 0, "fork_pending() is %zu after everything ended", fork_pending());
    int nreg = atomic_load(&registered), nran = atomic_load(&ran_total), nnever = 0;
    int final_gen = atomic_load(&shared_gen), killed_errors = 0;
    for (int i = 0; i < nreg; i++) {
        nnever += slots[i].never;
        killed_errors += check_slot(i, &slots[i], final_gen);
    }
    CHECK(nran == nreg - nnever, "%d callbacks registered (%d failed to), %d ran", nreg, nnever,
          nran);

    /* Nothing left running: orphans (reparented here) exit and are reaped
     * here; the default template is the only child and has none. */
    int left = 0, tchildren = 0;
    pid_t pids[8], other = 0;
    char other_state = '-';
    char states[8];
    for (double until = now() + 10; now() < until;) {
        atomic_fetch_add(&orphans, reap_orphans());
        int n = children_of(getpid(), pids, states, 8);
        left = n - (kill(default_template, 0) == 0);
        for (int i = 0; i < n && i < 8; i++)
            if (pids[i] != default_template) {
                other = pids[i];
                other_state = states[i];
            }
        tchildren = children_of(default_template, NULL, NULL, 0);
        if (left == 0 && tchildren == 0)
            break;
        /* The library reaps its own, when its loop fd says so. */
        struct pollfd pf = {fork_loop_fd(), POLLIN, 0};
        if (poll(&pf, 1, 10) == 1)
            fork_loop_dispatch();
    }
    CHECK(left == 0,
          "%d processes besides the default template (%d) are still children of this program "
          "10 s after the end (%d in state %c, ...)",
          left, (int)default_template, (int)other, other_state);
    CHECK(tchildren == 0, "the default template %d still has %d children", (int)default_template,
          tchildren);
    CHECK(kill(default_template, 0) == 0, "the default template %d is gone",
          (int)default_template);

    /* Everything has ended: what the library still holds must be work
     * its loop fd shows. Dispatch while it does, until it stops, then
     * count. (Without pidfds, under valgrind, the live default template is
     * polled on a 20 ms tick that makes the loop fd readable again and
     * again: it must stop being readable, not stay so.) */
    struct pollfd lf = {fork_loop_fd(), POLLIN, 0};
    int settled = 0;
    for (double until = now() + 10; !settled && now() < until;) {
        settled = poll(&lf, 1, 0) == 0;
        if (!settled)
            fork_loop_dispatch();
    }
    CHECK(settled, "the loop fd stayed readable for 10 s with nothing left to do");
    static char fds_end[4096];
    int fds_after = open_fds(fds_end, sizeof fds_end);
    CHECK(fds_after == fds_before, "%d fds open at the end, %d after the warm-up:\n%s--- at the end\n%s",
          fds_after, fds_before, fds_warm, fds_end);

    pthread_mutex_lock(&notes_mu);
    for (int i = 0; i < nnotes; i++)
        CHECK(0, "%s", notes[i]);
    CHECK(nproblems == 0, "%d problems in the threads (the first %d above)", nproblems, nnotes);
    pthread_mutex_unlock(&notes_mu);

    int made = 0, ended = 0, sent_fds = 0, waits = 0, dispatches = 0;
    for (int i = 0; i < nthreads; i++) {
        made += ws[i].made;
        ended += ws[i].ended;
        sent_fds += ws[i].sent_fds;
        waits += ws[i].waits_m1;
        dispatches += ws[i].dispatches;
    }
    CHECK(made == ended, "%d processes made, %d ended", made, ended);
    printf("%d processes, %d callbacks run, %d pipe ends sent, %d template kills (%d errors "
           "for their processes), %d template evals, %d fork_wait(-1), %d dispatches, "
           "%d orphans reaped, %d processes freed unasked were made anyway; threads %.2f s, "
           "total %.2f s\n",
           made, nran, sent_fds, atomic_load(&kills), killed_errors, atomic_load(&shared_evals),
           waits, dispatches, atomic_load(&orphans), atomic_load(&freed_made_anyway), t_threads, now() - t0);
    free(slots);
    free(ws);
    free(direct_pids);
    return checks_done();
}
