/* Functions for tests/server_reader.rs: a busy eval (the template does
 * not read its socket while it runs) and a run function that reports
 * what the process holds. Loaded into anyfork-serve with fork_require. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <anyfork.h>

/* Eval: sleeps for its first string's number of milliseconds. */
int reader_sleep_ms(const fork_arg *args, size_t nargs) {
    long ms = nargs > 0 && args[0].kind == FORK_ARG_STRING ? strtol((const char *)args[0].data, NULL, 10) : 0;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    return 0;
}

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Run: one line per argument: "s LEN SUM" for a string (SUM: the bytes
 * folded as sum * 31 + byte, modulo 2^64), "d INODE" for an fd. */
int reader_report(int fd, const fork_arg *args, size_t nargs) {
    char line[128];
    for (size_t i = 0; i < nargs; i++) {
        int n;
        if (args[i].kind == FORK_ARG_STRING) {
            uint64_t sum = 0;
            for (size_t j = 0; j < args[i].len; j++)
                sum = sum * 31 + args[i].data[j];
            n = snprintf(line, sizeof line, "s %zu %llu\n", args[i].len, (unsigned long long)sum);
        } else {
            struct stat st;
            if (fstat(args[i].fd, &st) != 0)
                return 91;
            n = snprintf(line, sizeof line, "d %llu\n", (unsigned long long)st.st_ino);
        }
        if (write_all(fd, line, (size_t)n) < 0)
            return 90;
    }
    return 0;
}
