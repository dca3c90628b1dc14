/*
 * An LD_PRELOAD shim that makes pidfd_open fail with ENOSYS, as on Linux
 * before 5.3 (and under valgrind), so that tests can exercise the
 * library's fallback for direct children. Everything else goes to the
 * real syscall().
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <sys/syscall.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

long syscall(long n, ...) {
    static long (*real)(long, ...);
    if (n == SYS_pidfd_open) {
        errno = ENOSYS;
        return -1;
    }
    if (!real)
        real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    va_list ap;
    va_start(ap, n);
    long a[6];
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    return real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
}
