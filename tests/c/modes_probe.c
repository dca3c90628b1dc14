/*
 * What a program started by the anyfork_exec builtin sees; tests/modes.rs
 * runs it and parses the report. Writes to fd 1 (one item a line):
 *
 *   argc <n>
 *   argv <i> [<arg>]
 *   cwd <dir>
 *   pid <pid> sid <sid> pgid <pgid>
 *   fd <n> <readlink of /proc/self/fd/n>    every open fd but the dir's
 *   stdin [<what fd 0 held, up to 200 bytes>]   (when fd 0 is open)
 *   env <NAME=VALUE>                        every variable, in order
 *   end
 *
 * and "probe stderr" to fd 2 when it is open. Exits with status 0.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv)
{
    /* List the fds first, before stdio opens anything. */
    char fds[8192] = "";
    size_t off = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) {
        perror("opendir /proc/self/fd");
        return 1;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        if (fd == dirfd(d))
            continue;
        char link[64], target[PATH_MAX];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n < 0)
            n = 0;
        target[n] = '\0';
        int w = snprintf(fds + off, sizeof fds - off, "fd %d %s\n", fd, target);
        if (w < 0 || (size_t)w >= sizeof fds - off)
            break;
        off += (size_t)w;
    }
    closedir(d);

    int stdin_open = fcntl(0, F_GETFD) >= 0;
    char in[201] = "";
    if (stdin_open) {
        size_t len = 0;
        while (len < sizeof in - 1) {
            ssize_t n = read(0, in + len, sizeof in - 1 - len);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            len += (size_t)n;
        }
        in[len] = '\0';
    }

    if (fcntl(1, F_GETFD) < 0)
        return 3; /* nowhere to report */
    printf("argc %d\n", argc);
    for (int i = 0; i < argc; i++)
        printf("argv %d [%s]\n", i, argv[i]);
    char cwd[PATH_MAX];
    printf("cwd %s\n", getcwd(cwd, sizeof cwd) ? cwd : "(unknown)");
    printf("pid %ld sid %ld pgid %ld\n", (long)getpid(), (long)getsid(0), (long)getpgid(0));
    fputs(fds, stdout);
    if (stdin_open)
        printf("stdin [%s]\n", in);
    for (char **v = environ; *v != NULL; v++)
        printf("env %s\n", *v);
    printf("end\n");
    if (fflush(stdout) != 0)
        return 4;
    if (fcntl(2, F_GETFD) >= 0) {
        static const char msg[] = "probe stderr\n";
        if (write(2, msg, sizeof msg - 1) < 0)
            return 5;
    }
    return 0;
}
