/* AnyFork::XS: the child's side of libanyfork (dispatcher, fork hook,
 * server loop, received arguments) for a Perl template, without
 * FFI::Platypus. A Perl template is forked for every process, and every
 * page of heap it holds is copied at fork and torn down at exit: this
 * module is a few kB, FFI::Platypus 2.5 MB. The library is dlopen'ed by
 * path at run time (AnyFork::XS::load), as AnyFork::Lib does, so this
 * object links against nothing but libc. */

#define PERL_NO_GET_CONTEXT
#include "EXTERN.h"
#include "perl.h"
#include "XSUB.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>

#include "anyfork.h"

/* The library's functions, looked up once by load(). */
static struct {
    void (*set_dispatch)(fork_dispatch_fn, void *);
    void (*set_fork_hook)(fork_fork_hook_fn, void *);
    int (*serve)(int);
    const struct fork_arg *(*child_args)(size_t *);
    const char *(*last_error)(void);
} lib;

/* The Perl sub the library calls through: the dispatcher. */
static SV *dispatch_sub;

/* fork_dispatch_fn: calls the Perl dispatcher with (kind, name, fd,
 * args address, nargs) and returns its integer. A die that escapes it
 * becomes status 255, as an uncaught die does in a Perl program. */
static int
call_dispatch(enum fork_call_kind kind, const char *name, int fd,
              const struct fork_arg *args, size_t nargs, void *userdata)
{
    dTHX;
    dSP;
    int rc = 255;
    int count;
    PERL_UNUSED_ARG(userdata);

    ENTER;
    SAVETMPS;
    PUSHMARK(SP);
    EXTEND(SP, 5);
    mPUSHi((IV)kind);
    mPUSHs(newSVpv(name ? name : "", 0));
    mPUSHi((IV)fd);
    mPUSHu(PTR2UV(args));
    mPUSHu((UV)nargs);
    PUTBACK;
    count = call_sv(dispatch_sub, G_SCALAR | G_EVAL);
    SPAGAIN;
    if (count == 1) {
        SV *ret = POPs;
        if (!SvTRUE(ERRSV) && SvOK(ret))
            rc = (int)SvIV(ret);
    }
    PUTBACK;
    FREETMPS;
    LEAVE;
    return rc;
}

/* fork_fork_hook_fn: Perl's own fork, as pp_fork (the `fork` builtin)
 * makes it, done here in C rather than through the op, so that the
 * server loop does not enter the interpreter for it: every Perl output
 * handle is flushed first (PERL_FLUSHALL_FOR_CHILD, so output buffered in
 * the template is written once, not again by every child), signals are
 * held off around the fork, and the child starts with no Perl signal
 * pending (a signal the template had not handled yet is not handled again
 * in each child) and no child statuses of the template's. */
static pid_t
perl_fork(void *userdata)
{
    dTHX;
    pid_t pid;
    sigset_t all, old;
    PERL_UNUSED_ARG(userdata);

    PERL_FLUSHALL_FOR_CHILD;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    pid = PerlProc_fork();
    if (pid == 0) {
        int sig;
        PL_sig_pending = 0;
        if (PL_psig_pend)
            for (sig = 1; sig < SIG_SIZE; sig++)
                PL_psig_pend[sig] = 0;
    }
    {
        int err = errno;
        sigprocmask(SIG_SETMASK, &old, NULL);
        errno = err;
    }
#ifdef PERL_USES_PL_PIDSTATUS
    if (pid == 0)
        hv_clear(PL_pidstatus);
#endif
    return pid;
}

static void *
need(pTHX_ void *handle, const char *path, const char *name)
{
    void *f = dlsym(handle, name);
    if (!f)
        croak("AnyFork::XS: %s has no %s: not libanyfork?", path, name);
    return f;
}

/* [kind, fd, bytes] for one fork_arg, the shape AnyFork::Lib::decode_args
 * gives. */
static SV *
arg_triple(pTHX_ const struct fork_arg *a)
{
    AV *triple = newAV();
    av_extend(triple, 2);
    if (a->kind == FORK_ARG_FD) {
        av_push(triple, newSViv(1));
        av_push(triple, newSViv(a->fd));
        av_push(triple, newSV(0));
    } else {
        av_push(triple, newSViv(0));
        av_push(triple, newSViv(-1));
        av_push(triple, a->data ? newSVpvn((const char *)a->data, a->len) : newSVpvs(""));
    }
    return newRV_noinc((SV *)triple);
}

MODULE = AnyFork::XS    PACKAGE = AnyFork::XS

PROTOTYPES: DISABLE

void
load(path)
        const char *path
    CODE:
    {
        void *h = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
        if (!h)
            croak("AnyFork::XS: cannot load %s: %s", path, dlerror());
        lib.set_dispatch = (void (*)(fork_dispatch_fn, void *))need(aTHX_ h, path, "fork_set_dispatch");
        lib.set_fork_hook = (void (*)(fork_fork_hook_fn, void *))need(aTHX_ h, path, "fork_set_fork_hook");
        lib.serve = (int (*)(int))need(aTHX_ h, path, "fork_serve");
        lib.child_args = (const struct fork_arg *(*)(size_t *))need(aTHX_ h, path, "fork_child_args");
        lib.last_error = (const char *(*)(void))need(aTHX_ h, path, "fork_last_error");
    }

void
install(dispatch, hook)
        SV *dispatch
        int hook
    CODE:
        if (!lib.serve)
            croak("AnyFork::XS: load() first");
        if (!dispatch_sub)
            dispatch_sub = newSVsv(dispatch);
        else
            sv_setsv(dispatch_sub, dispatch);
        lib.set_dispatch(call_dispatch, NULL);
        lib.set_fork_hook(hook ? perl_fork : NULL, NULL);

int
serve(fd)
        int fd
    CODE:
        RETVAL = lib.serve(fd);
    OUTPUT:
        RETVAL

SV *
error()
    CODE:
    {
        const char *e = lib.last_error ? lib.last_error() : NULL;
        RETVAL = newSVpv(e && *e ? e : "unknown anyfork error", 0);
    }
    OUTPUT:
        RETVAL

void
child_args()
    PPCODE:
    {
        size_t n = 0;
        const struct fork_arg *args = lib.child_args(&n);
        EXTEND(SP, 2);
        mPUSHu(PTR2UV(args));
        mPUSHu((UV)(args ? n : 0));
    }

void
decode_args(ptr, n)
        UV ptr
        UV n
    PPCODE:
    {
        const struct fork_arg *args = INT2PTR(const struct fork_arg *, ptr);
        UV i;
        if (args && n) {
            EXTEND(SP, (SSize_t)n);
            for (i = 0; i < n; i++)
                mPUSHs(arg_triple(aTHX_ &args[i]));
        }
    }

void
arg_values(ptr, n, from)
        UV ptr
        UV n
        UV from
    PPCODE:
    {
        /* The fork_args from index `from` on as Perl values, with as few
         * scalars as can be (a child makes them, and every page it writes
         * is a page it copies): a string as itself, an fd as a reference
         * to its number. */
        const struct fork_arg *args = INT2PTR(const struct fork_arg *, ptr);
        UV i;
        if (args && n > from) {
            EXTEND(SP, (SSize_t)(n - from));
            for (i = from; i < n; i++) {
                const struct fork_arg *a = &args[i];
                if (a->kind == FORK_ARG_FD)
                    mPUSHs(newRV_noinc(newSViv(a->fd)));
                else
                    mPUSHs(a->data ? newSVpvn((const char *)a->data, a->len) : newSVpvs(""));
            }
        }
    }

int
fd_flags(fd)
        int fd
    CODE:
        RETVAL = fcntl(fd, F_GETFL);
    OUTPUT:
        RETVAL

int
flush_all()
    CODE:
        RETVAL = PerlIO_flush(NULL);
    OUTPUT:
        RETVAL

SV *
call_c(name, fd, ptr, n)
        const char *name
        int fd
        UV ptr
        UV n
    CODE:
    {
        /* A C function of this process (a library loaded with
         * fork_require): the run signature when fd >= 0, the eval one
         * otherwise; undef when there is no such symbol. */
        void *f = dlsym(RTLD_DEFAULT, name);
        const struct fork_arg *args = INT2PTR(const struct fork_arg *, ptr);
        if (!f) {
            RETVAL = &PL_sv_undef;
        } else if (fd >= 0) {
            int (*run)(int, const struct fork_arg *, size_t) = (int (*)(int, const struct fork_arg *, size_t))f;
            RETVAL = newSViv(run(fd, args, (size_t)n));
        } else {
            int (*ev)(const struct fork_arg *, size_t) = (int (*)(const struct fork_arg *, size_t))f;
            RETVAL = newSViv(ev(args, (size_t)n));
        }
    }
    OUTPUT:
        RETVAL

void
c_exit(status)
        int status
    CODE:
        exit(status);
