/*
 * A tiny custom template server, started by tests/modes.rs through
 * fork_new_exec_argv(): it finds its socket in ANYFORK_FD, sets a
 * dispatcher and calls fork_serve().
 *
 * The dispatcher handles every eval and run itself (no dlsym):
 *   eval NAME: appends "eval NAME fd=<fd> n=<nargs> [a|b|...] ud=<ok>" to
 *              a log that forked processes inherit; "srv_fail" returns 6
 *              (the process must exit with status 6);
 *   run NAME:  writes "argv ...", the log, "run NAME fd_sock=<0|1>
 *              ud=<ok>" and the common report (modes_util.h) on the comm
 *              socket; "srv_exit" then returns its last string argument
 *              as the exit status, anything else the report's result.
 */
#include "modes_util.h"

#include <sys/stat.h>

static char server_argv[1024];
static char log_buf[8192];
static size_t log_len;
static int marker = 42;

static void log_line(const char *fmt, const char *name, int fd, const fork_arg *args,
                     size_t nargs, int ud_ok)
{
    char joined[2048] = "";
    size_t off = 0;
    for (size_t i = 0; i < nargs; i++) {
        int n;
        if (args[i].kind == FORK_ARG_STRING)
            n = snprintf(joined + off, sizeof joined - off, "%s%.*s", i ? "|" : "",
                         (int)args[i].len, (const char *)args[i].data);
        else
            n = snprintf(joined + off, sizeof joined - off, "%s<fd>", i ? "|" : "");
        if (n < 0 || (size_t)n >= sizeof joined - off)
            break;
        off += (size_t)n;
    }
    int n = snprintf(log_buf + log_len, sizeof log_buf - log_len, fmt, name, fd, nargs, joined,
                     ud_ok);
    if (n > 0 && (size_t)n < sizeof log_buf - log_len)
        log_len += (size_t)n;
}

static int dispatch(fork_call_kind kind, const char *name, int fd, const fork_arg *args,
                    size_t nargs, void *userdata)
{
    int ud_ok = userdata == &marker && marker == 42;
    if (kind == FORK_CALL_EVAL) {
        log_line("eval %s fd=%d n=%zu [%s] ud=%d\n", name, fd, args, nargs, ud_ok);
        return strcmp(name, "srv_fail") == 0 ? 6 : 0;
    }
    if (kind != FORK_CALL_RUN)
        return 70;
    struct stat st;
    int sock = fd >= 0 && fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
    if (mu_dprintf(fd, "argv %s\n%srun %s fd_sock=%d ud=%d\n", server_argv, log_buf, name, sock,
                   ud_ok) < 0)
        return 12;
    int r = mu_report_args(fd, args, nargs);
    if (strcmp(name, "srv_exit") == 0) {
        for (size_t i = nargs; i-- > 0;)
            if (args[i].kind == FORK_ARG_STRING)
                return atoi((const char *)args[i].data);
        return 99;
    }
    return r;
}

/* fork_serve on fds it cannot serve: must return, with a clear error. */
static int serve_errors(void)
{
    int r = fork_serve(-1);
    printf("serve -1: %d %s\n", r, fork_last_error());
    int pfd[2];
    if (pipe(pfd) < 0)
        return 1;
    r = fork_serve(pfd[0]);
    printf("serve pipe: %d %s\n", r, fork_last_error());
    r = fork_serve(999);
    printf("serve closed: %d %s\n", r, fork_last_error());
    return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--serve-errors") == 0)
        return serve_errors();
    size_t off = 0;
    for (int i = 0; i < argc; i++) {
        int n = snprintf(server_argv + off, sizeof server_argv - off, "%s[%s]", i ? " " : "",
                         i == 0 ? "argv0" : argv[i]);
        if (n < 0 || (size_t)n >= sizeof server_argv - off)
            return 2;
        off += (size_t)n;
    }
    const char *env = getenv("ANYFORK_FD");
    if (env == NULL) {
        fprintf(stderr, "modes_server: ANYFORK_FD is not set\n");
        return 2;
    }
    char *end;
    long fd = strtol(env, &end, 10);
    if (*end != '\0' || fd < 0 || fd > 1 << 20) {
        fprintf(stderr, "modes_server: bad ANYFORK_FD=%s\n", env);
        return 2;
    }
    fork_set_dispatch(dispatch, &marker);
    int r = fork_serve((int)fd);
    fprintf(stderr, "modes_server: fork_serve returned %d: %s\n", r, fork_last_error());
    return 1;
}
