/* For tests/engine.rs: a library that registers no fork handler but starts
 * a thread, which takes the lock of a stdio stream and keeps it. glibc's
 * fork resets stdio locks in the new process of a threaded program; a
 * process copied by _Fork would keep the lock taken by a thread it does
 * not have, and block on the stream (and at exit, flushing every
 * stream). Loaded into anyfork-serve with fork_require. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <unistd.h>

#include <anyfork.h>

static FILE *stream;
static int taken, release;
static pthread_t holder;

static void *hold(void *arg) {
    (void)arg;
    flockfile(stream);
    __atomic_store_n(&taken, 1, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&release, __ATOMIC_ACQUIRE))
        usleep(1000);
    funlockfile(stream);
    return NULL;
}

/* Eval: opens a stream on /dev/null and returns once a new thread holds
 * its lock, which it keeps until release_stream_lock. */
int hold_stream_lock(const fork_arg *args, size_t nargs) {
    (void)args;
    (void)nargs;
    stream = fopen("/dev/null", "w");
    if (stream == NULL || pthread_create(&holder, NULL, hold, NULL) != 0)
        return 1;
    while (!__atomic_load_n(&taken, __ATOMIC_ACQUIRE))
        sched_yield();
    return 0;
}

/* Eval: the thread lets the lock go and ends (the template's own exit
 * flushes every stream, this one too). */
int release_stream_lock(const fork_arg *args, size_t nargs) {
    (void)args;
    (void)nargs;
    __atomic_store_n(&release, 1, __ATOMIC_RELEASE);
    return pthread_join(holder, NULL) == 0 ? 0 : 1;
}

/* Run function: writes to the stream (it blocks if its lock was copied
 * taken), then "ok" to the comm socket. */
int use_stream(int fd, const fork_arg *args, size_t nargs) {
    (void)args;
    (void)nargs;
    if (fputs("x", stream) == EOF || fflush(stream) != 0)
        return 1;
    ssize_t w;
    do
        w = write(fd, "ok", 2);
    while (w < 0 && errno == EINTR);
    return w == 2 ? 0 : 1;
}
