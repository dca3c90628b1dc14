/*
 * anyfork: create processes without forking the caller.
 *
 * Generated from the Rust sources by cbindgen (build.rs); do not edit.
 *
 * Conventions: calls returning int give >= 0 on success and a negative
 * errno on failure; calls returning a pointer give NULL on failure. Either
 * way fork_last_error() then describes the failure on the calling thread.
 * NULL or invalid arguments are errors, never crashes. Callbacks run only
 * from fork_loop_dispatch() or fork_wait(); a call that returns an error
 * never calls its callback. Any thread may call any function; one
 * fork_proc is used by one thread at a time.
 *
 * Callbacks: each runs exactly once, on the thread that calls dispatch or
 * wait, with no library lock held, in the order they became due. A
 * callback may call any function here, including creating and running
 * processes and dispatching; what it makes due runs in a later dispatch.
 * At exit, callbacks still pending are not run: the library's sockets
 * close with the process, so its templates exit and processes that had
 * not run yet see EOF and exit; processes already running are on their
 * own. A child you fork yourself starts afresh (see fork_reset_after_fork).
 */

#ifndef ANYFORK_H
#define ANYFORK_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <sys/types.h>

/*
 Returned by a dispatcher for a name it does not handle: the call then
 falls back to `dlsym` lookup.
 */
#define FORK_DISPATCH_PASS (-2147483647 - 1)

/*
 `fork_from_fd_flags`: accept a peer that runs as another user.
 */
#define FORK_FROM_FD_ANY_UID 1

/*
 `fork_template_flags` and `fork_early_flags`: keep the caller's fds
 open in the copy and in every process forked from it.
 */
#define FORK_TEMPLATE_KEEP_FDS 1

/*
 `fork_rpc_serve` flag: the handler may reply later, from any thread,
 and requests are handed over without waiting for earlier replies.
 */
#define FORK_RPC_ASYNC 1

/*
 What one `fork_arg` holds.

 The variant names are the C enumerators' names.
 */
typedef enum fork_arg_kind {
  /*
   A byte string: `data` and `len` are set, `fd` is -1.
   */
  FORK_ARG_STRING = 0,
  /*
   A file descriptor: `fd` is set, `data` is NULL and `len` 0.
   */
  FORK_ARG_FD = 1,
} fork_arg_kind;

/*
 Which call a dispatcher is asked to perform.
 */
typedef enum fork_call_kind {
  /*
   An eval: `fd` is -1, `args` are the eval's own strings; a non-zero
   return makes the process exit with that status.
   */
  FORK_CALL_EVAL = 0,
  /*
   A run: `fd` is the comm socket, `args` everything received; the
   return value is the process's exit status.
   */
  FORK_CALL_RUN = 1,
} fork_call_kind;

/*
 A pool of RPC workers (opaque): made by `fork_pool_new`, ended by
 `fork_pool_free`.
 */
typedef struct fork_pool fork_pool;

/*
 A process that has not entered its run function yet (opaque).

 Created by `fork_new`, `fork_new_exec` or `fork_fork`; ended by
 `fork_run` (which consumes it) or `fork_free`. One thread at a time may
 use a given `fork_proc`; different ones may be used by different threads.
 */
typedef struct fork_proc fork_proc;

/*
 An RPC worker seen from the caller (opaque): made by `fork_rpc_start`,
 ended by `fork_rpc_free`.
 */
typedef struct fork_rpc fork_rpc;

/*
 The worker's end of an RPC channel (opaque), valid inside
 `fork_rpc_serve` (and, for an asynchronous worker, until it returns).
 */
typedef struct fork_rpc_worker fork_rpc_worker;

/*
 One argument as the child's functions see it.

 A string's bytes are followed by a NUL that `len` does not count, so
 text arguments can be used as C strings. Everything stays valid until
 the process exits.
 */
typedef struct fork_arg {
  /*
   `FORK_ARG_STRING` or `FORK_ARG_FD`.
   */
  enum fork_arg_kind kind;
  /*
   The file descriptor, or -1 for a string.
   */
  int fd;
  /*
   The bytes of a string (NUL-terminated), or NULL for an fd.
   */
  const uint8_t *data;
  /*
   The number of bytes of a string, or 0 for an fd.
   */
  size_t len;
} fork_arg;

/*
 A dispatcher: performs eval and run calls itself instead of looking
 `name` up with `dlsym`, so an interpreter can run its own code. `kind`
 says which call, `fd` is the comm socket (-1 for eval), `args` as for
 the eval or run function. Its return value is what that function's
 would be, or `FORK_DISPATCH_PASS` to let `dlsym` find `name` instead.
 */
typedef int (*fork_dispatch_fn)(enum fork_call_kind kind,
                                const char *name,
                                int fd,
                                const struct fork_arg *args,
                                size_t nargs,
                                void *userdata);

/*
 A fork hook: forks the calling process as `fork(2)` does and returns
 as it does: 0 in the child, the child's pid in the parent, -1 with
 `errno` set when no child was made.
 */
typedef pid_t (*fork_fork_hook_fn)(void *userdata);

/*
 Called once a run's commands are all delivered: `fd` is the caller's
 end of the comm socket, which the callback now owns (close it when
 done; its EOF tells that the process ended). A negative `fd` is `-errno`
 when the process can no longer be reached (e.g. `-EPIPE`, the template
 died); `fork_last_error()` on the dispatching thread then describes why.
 */
typedef void (*fork_run_cb)(int fd, void *userdata);

/*
 A pool's settings, with AnyEvent::Fork::Pool's meanings; start from
 `fork_pool_defaults()`.
 */
typedef struct fork_pool_opts {
  /*
   Workers at most (default: the number of CPUs).
   */
  unsigned int max;
  /*
   Idle workers kept ready, started at once (default 0).
   */
  unsigned int idle;
  /*
   Requests in flight per worker at most (default 2).
   */
  unsigned int load;
  /*
   Seconds between starting workers while all are busy (default 0.1).
   */
  double start;
  /*
   Seconds a spare worker stays idle before it is stopped (default 10).
   */
  double stop;
  /*
   Retire a worker after this many requests (default 0: never).
   */
  uint64_t retire_after;
} fork_pool_opts;

/*
 An event the worker sent (`fork_rpc_event`): `len` bytes at `data`,
 valid during the callback only. Events come in the order sent,
 interleaved in order with replies.
 */
typedef void (*fork_rpc_event_cb)(const void *data, size_t len, void *userdata);

/*
 The reply to one call: `status` 0 and the reply's `len` bytes at
 `data` (valid during the callback only), or `status` -errno (data NULL,
 len 0) when no reply will come: `-EPIPE` the worker exited or died
 first, `-ECONNRESET` it died (or was killed) with requests it had not
 read yet, `-EPROTO` it broke the framing; `fork_last_error()` on the
 dispatching thread says which call and why.
 */
typedef void (*fork_rpc_reply_cb)(int status, const void *data, size_t len, void *userdata);

/*
 Runs once a freed RPC worker or pool has ended. `status` is 0 when
 the worker saw EOF and exited, or -errno when it had ended otherwise
 (died, exited on its own); for a pool always 0.
 */
typedef void (*fork_rpc_destroyed_cb)(int status, void *userdata);

/*
 Called once a process has exited: its pid and its wait status (decode
 with `WIFEXITED`/`WEXITSTATUS`/`WIFSIGNALED`/`WTERMSIG`). A negative
 `wait_status` is `-errno` when the status cannot be known (`-ECHILD`:
 the template went away first, or a host loop reaped a direct child),
 with `fork_last_error()` describing why.
 */
typedef void (*fork_exit_cb)(pid_t pid, int wait_status, void *userdata);

/*
 The worker's handler: one request, `len` bytes at `req` (valid during
 the call only), with its `id`. Answer with `fork_rpc_reply(w, id, ...)`:
 a synchronous worker before returning (a request left unanswered gets
 an empty reply), an asynchronous one whenever it likes, from any thread.
 */
typedef void (*fork_rpc_handler)(struct fork_rpc_worker *w,
                                 uint32_t id,
                                 const void *req,
                                 size_t len,
                                 void *userdata);

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/*
 Inside an eval or run function: the fds and strings this process has
 received so far, in order; `*nargs` gets their number. The array stays
 valid until the process exits. Elsewhere returns NULL and sets `*nargs`
 to 0. `nargs` may be NULL.

 # Safety
 `nargs` is NULL or points to a writable `size_t`.
 */
const struct fork_arg *fork_child_args(size_t *nargs);

/*
 Sets the dispatcher of the calling process (NULL restores `dlsym`
 lookup). Used by a custom server before `fork_serve`, or by a program
 before `fork_template`; forked children inherit it. Builtins
 (`anyfork_*`) are still found first.

 # Safety
 `fn` must stay callable, and `userdata` valid, in every process that
 inherits them.
 */
void fork_set_dispatch(fork_dispatch_fn f, void *userdata);

/*
 Sets the fork hook of the calling process (NULL restores the library's
 own fork). Every fork the library makes in this process and the
 processes copied from it goes through the hook instead of `fork()`:
 each new process and each warm-pool child a server forks, and the copy
 `fork_template` and `fork_early` make. It lets an interpreter's own
 fork make them (Python's `os.fork`, Ruby's `Process._fork`, Perl's
 `fork`), so that the interpreter's own before- and after-fork work
 runs: its at-fork handlers, its locks, threads and timers reset.
 Set it like the dispatcher: in a custom server before `fork_serve`, or
 in a program before `fork_template` or `fork_early`; copies inherit it.

 The hook must fork exactly once and return: 0 in the child (which the
 library then goes on to serve or run), the child's pid in the parent,
 or -1 with `errno` set when it made no child (reported to that
 creation like a failed fork: its exit callback and `fork_pid` get the
 errno, its comm socket EOF; `errno` 0 is reported as `EIO`). It runs
 on the server's thread, inside the server loop, in both processes. It
 may run code before and after the fork (at-fork handlers, reseeding),
 open fds and start threads in the child. It must not close, move or
 read fds it did not open (the server's socket and signalfd among
 them), exit or exec in the child, wait for or reap the child in the
 parent (the server reports its exit), leave signals blocked or
 change signal handlers for good in the parent, nor call the library
 (but `fork_last_error`, and `fork_reset_after_fork` in the child, which
 an interpreter's at-fork handler may call). Processes made through
 the hook start user code with an empty signal mask and the signal
 dispositions the template had, as the interpreter's own fork leaves
 them (an interpreter relies on its handlers); the builtins
 (`anyfork_exec`) still start with every disposition at its default.

 # Safety
 `hook` must stay callable, and `userdata` valid, in every process that
 inherits them, and the hook must keep the contract above.
 */
void fork_set_fork_hook(fork_fork_hook_fn hook, void *userdata);

/*
 The one fd a program's event loop watches for the whole library: it is
 readable exactly while `fork_loop_dispatch` has work (bytes a socket
 now takes, reports to read, a direct child to reap, callbacks due).

 Watch it level-triggered (`ev_io`, `uv_poll_t`, `EPOLLIN` without
 `EPOLLET`) and call `fork_loop_dispatch` whenever it is readable.
 Edge-triggered watchers work only if each wake-up dispatches until
 `fork_loop_dispatch` returns 0 and the fd is no longer readable. The fd
 belongs to the library: do not read it or close it.

 Returns the fd (the same for the life of the process), or `-errno`
 with `fork_last_error()` set. Any thread may call.
 */
int fork_loop_fd(void);

/*
 Does all the work that can be done now without blocking, then runs the
 run and exit callbacks that were due when it started, on this thread
 and with no library lock held. Callbacks may call any anyfork function,
 including creating and running processes and dispatching again; what
 they make due runs in a later dispatch.

 Returns the number of callbacks run, or `-errno` with
 `fork_last_error()` set. Any thread may call; callbacks run on the
 thread that dispatches.
 */
int fork_loop_dispatch(void);

/*
 For programs without an event loop: dispatches and waits on the loop fd
 until at least one callback ran, `timeout_ms` passed (-1: no limit), or
 no run or exit callback is waiting at all.

 Returns the number of callbacks run (0: timeout, or nothing waits), or
 `-errno` with `fork_last_error()` set. `while (fork_wait(-1) > 0) ;`
 waits for everything. Any thread may call.

 While RPC replies are awaited, the waiting thread first polls the loop
 fd without blocking, yielding its CPU between looks, for up to 50 µs
 (`ANYFORK_SPIN_US` sets the microseconds, 0 turns it off): a worker on
 another CPU usually answers within that time, and a thread that is
 still looking needs no cross-CPU wake-up, which costs more than the
 round trip itself. `fork_loop_dispatch` never spins.
 */
int fork_wait(int timeout_ms);

/*
 The number of run and exit callbacks registered and not run yet.
 Any thread may call.
 */
size_t fork_pending(void);

/*
 `fork_template_flags(0)`.
 */
struct fork_proc *fork_template(void);

/*
 Forks the calling program now. The copy forgets the library state it
 inherited and serves as a template: processes forked from it
 (`fork_fork`) can run the program's own functions and use the memory
 it had prepared (link the program with `-rdynamic` so `dlsym` finds
 its functions).

 Its fds: with `flags` 0 the copy closes every fd but 0, 1, 2 and its
 socket; send what processes need (fds) explicitly. With
 `FORK_TEMPLATE_KEEP_FDS` the program's fds stay open, at the same
 numbers, in the copy and in every process forked from it (a log file,
 an interpreter's handles); only the library's own fds close there (its
 sockets, loop fd, eventfds, pidfds, and those of handles the program
 holds, which fail with `-EBADF` in the copy). Either way a standard fd
 the program has closed is `/dev/null` in the copy.

 Call it while the program has one thread (fork copies only the calling
 thread; locks held by others would stay locked in the copy).

 Returns a new handle owned by the caller, whose `fork_pid` is the
 copy's pid (the library reaps it), or NULL with `fork_last_error()` set
 (`-EINVAL` for unknown flags).
 */
struct fork_proc *fork_template_flags(unsigned int flags);

/*
 `fork_early_flags(0)`.
 */
int fork_early(void);

/*
 Forks the caller as the template that every later `fork_new_exec`
 (and so the default template of `fork_new`) forks instead of exec'ing
 `anyfork-serve`. Call it first thing in `main`, while the process is
 small and has one thread. Processes made this way can run functions of
 the program (link with `-rdynamic`). `flags` as for
 `fork_template_flags`: with `FORK_TEMPLATE_KEEP_FDS` the program's fds
 open at this call stay open in every such process.

 Returns 0, or `-errno` with `fork_last_error()` set.
 */
int fork_early_flags(unsigned int flags);

/*
 Spawns a custom server with `posix_spawn`: `argv[0]` (searched in
 `PATH` when it has no slash) with the NULL-terminated `argv`, its end
 of the socket in the environment variable `ANYFORK_FD`. The server must
 call `fork_serve` on that fd (an interpreter running a binding, say).

 Returns a new handle owned by the caller (a direct child: `fork_pid`
 works, the library reaps it), or NULL with `fork_last_error()` set.
 Everything is copied.

 # Safety
 `argv` is NULL or a NULL-terminated array of C strings.
 */
struct fork_proc *fork_new_exec_argv(const char *const *argv);

/*
 Starts a template on another machine: runs `argv` (NULL-terminated;
 `argv[0]` searched in `PATH`), whose stdin and stdout must reach
 `anyfork-serve --stdio` there, for example
 `{"ssh", "-o", "BatchMode=yes", "host", "anyfork-serve", "--stdio", NULL}`
 (or any command that connects them: `sh -c 'exec anyfork-serve --stdio'`
 for a "remote" on this machine). Blocks until the far side has answered
 (an ssh login), at most 30 seconds.

 The handle is a template like `fork_new`'s: `fork_fork`,
 `fork_send_arg`, `fork_require` and `fork_eval` (of libraries and
 functions on the remote host), `fork_run`, `fork_exec` and
 `fork_on_exit` work on it and on every process forked from it; pids
 and exit statuses are the remote ones. Each remote process's comm
 socket is a local socket here, so run callbacks, event loops, RPC and
 pools work unchanged. The sockets of all its processes share the one
 connection, each with its own flow control: a process that does not
 read holds up only itself. `fork_send_fd` on these processes fails with
 `-EOPNOTSUPP` (fds cannot cross machines) and sends nothing.

 A local relay process (`anyfork-serve --relay`, a direct child:
 `fork_pid` of the template is its pid) carries the connection on its
 own, so a caller may block in reads of remote sockets without
 dispatching. When the connection drops (the transport is killed, the
 network fails) every remote socket here sees EOF and every pending
 callback gets its error once; on the far side the template and the
 processes see their sockets end. Nothing listens on either side: ssh
 does the authentication and encryption.

 Returns a new handle owned by the caller, or NULL with
 `fork_last_error()` set: `-ECONNREFUSED` when the command failed or did
 not reach `anyfork-serve --stdio` (the message gives its exit status,
 what it wrote to stderr, and the likely cause: ssh could not connect or
 log in, 127 for a command not found, a version mismatch, a timeout),
 `-ENOENT` when `anyfork-serve` is not found here, `-EINVAL` for an
 empty `argv`.

 # Safety
 `argv` is NULL or a NULL-terminated array of C strings.
 */
struct fork_proc *fork_new_remote(const char *const *argv);

/*
 Makes the calling process a template server on `fd` (its end of the
 socket, from `ANYFORK_FD`), as `anyfork-serve` is. Set a dispatcher
 first with `fork_set_dispatch` to run interpreter code. Does not return
 unless `fd` is unusable: the process exits when the caller goes away.

 Returns only on failure: `-EBADF` or `-ENOTSOCK` with
 `fork_last_error()` set.
 */
int fork_serve(int fd);

/*
 Runs a program in the process through the `anyfork_exec` builtin: the
 NULL-terminated `argv` follows any strings sent before (`argv[0]` is
 searched in `PATH` when it has no slash); the fds sent become the
 program's fds 0, 1, 2, … in order (standard fds not covered stay as
 they are); with a non-NULL `envp` (NULL-terminated `NAME=VALUE`
 strings) the environment is exactly `envp`. Before it, `fork_eval` with
 the builtins `anyfork_setenv`, `anyfork_clearenv`, `anyfork_chdir`,
 `anyfork_setsid` and `anyfork_comm_fd` (e.g. "2": the comm socket
 becomes stderr) prepare the rest. An exec failure is written to the
 comm socket and the process exits with status 127 (with a NULL `cb`
 too: a message nobody reads raises no SIGPIPE).

 When nothing was sent to `p` since `fork_new` or `fork_fork` made it
 and `envp` is NULL, its template starts the program with `posix_spawn`
 instead of copying itself first: the same program, fds and signal
 state, at the cost of `posix_spawn` whatever the template's size. If
 `cb` is NULL too, the request is one small write with no socket in it
 (the program gets no socket of the caller's; where `anyfork_comm_fd`
 asked for one, it gets a socket whose other end is closed): the
 cheapest way for an event loop to start a program and learn its exit
 (`fork_on_exit`).

 Consumes `p` like `fork_run`, even on failure; `cb` as for `fork_run`.
 Returns 0, or `-errno` with `fork_last_error()` set (then `cb` never
 runs).

 # Safety
 `p` is NULL or a live handle, not used again; `argv` and `envp` are
 NULL or NULL-terminated arrays of C strings.
 */
int fork_exec(struct fork_proc *p,
              const char *const *argv,
              const char *const *envp,
              fork_run_cb cb,
              void *userdata);

/*
 Delivers everything queued to the process (waiting up to 10 s) and
 gives up its socket, so that another process can adopt it with
 `fork_from_fd` (pass the fd over a unix socket). Consumes `p`, even on
 failure.

 Returns the fd, now owned by the caller, or `-errno` with
 `fork_last_error()` set.

 # Safety
 `p` is NULL or a live handle, not used again.
 */
int fork_to_fd(struct fork_proc *p);

/*
 `fork_from_fd_flags(fd, 0)`.
 */
struct fork_proc *fork_from_fd(int fd);

/*
 Makes a process object of a socket that `fork_to_fd` gave up (here or
 in another process). It refuses a socket whose peer runs as another
 user (`SO_PEERCRED`) unless `flags` has `FORK_FROM_FD_ANY_UID`. The
 process's pid and exit status are not known to the new owner.

 Returns a new handle that owns `fd`, or NULL with `fork_last_error()`
 set (`fd` then stays the caller's).
 */
struct fork_proc *fork_from_fd_flags(int fd, unsigned int flags);

/*
 In a child process that the caller forked itself (not one made by
 anyfork): closes the child's copies of the library's sockets and
 forgets the parent's templates, queues and callbacks (none of them
 runs), so the child can use anyfork afresh. Handles inherited from the
 parent then fail with `-EBADF`; free them with `fork_free`.

 A child made by `fork()` (libc's, or any fork that runs
 `pthread_atfork` handlers: Python's `os.fork`, Ruby's and Perl's
 `fork`) needs no call: the library notices the fork, the parent's
 handles fail with `-EBADF` at once, and the child's first call into
 the library resets it there. Call this after a raw `clone` or glibc's
 `_Fork`, which run no fork handlers. Calling it in a process that did
 not fork makes every existing handle fail with `-EBADF`.
 */
void fork_reset_after_fork(void);

/*
 The default pool settings: max = number of CPUs, idle 0, load 2,
 start 0.1 s, stop 10 s, retire_after 0.
 */
struct fork_pool_opts fork_pool_defaults(void);

/*
 Makes a pool: workers are forked from `template` (consumed, even on
 failure; it is the pool's now) and enter `function`, which serves RPC
 (see `fork_rpc_start`). `opts` NULL means `fork_pool_defaults()`.
 `opts->idle` workers start at once. `on_event` (may be NULL) gets every
 worker's events.

 Returns a handle (end it with `fork_pool_free`), or NULL with
 `fork_last_error()` set (`-EINVAL`: max or load 0, idle > max, a
 negative or NaN time).

 # Safety
 `template` is NULL or a live handle, never used again; `function` is
 NULL or a C string; `opts` is NULL or valid.
 */
struct fork_pool *fork_pool_new(struct fork_proc *template_,
                                const char *function,
                                const struct fork_pool_opts *opts,
                                fork_rpc_event_cb on_event,
                                void *userdata);

/*
 Adds another template workers may be forked from (templates are used
 in turn); consumes `template`, even on failure.

 Returns 0, or -errno with `fork_last_error()` set.

 # Safety
 `pool` is NULL or a live handle; `template` as for `fork_pool_new`.
 */
int fork_pool_add_template(struct fork_pool *pool, struct fork_proc *template_);

/*
 Sends a request to the least-loaded worker, or queues it while every
 worker is at its load (never blocks). `cb` runs exactly once, as for
 `fork_rpc_call`; a worker that dies fails only its own calls.

 Returns 0, or `-EINVAL`, `-E2BIG`, `-EPIPE` (freed) with
 `fork_last_error()` set and `cb` never run.

 # Safety
 `pool` is NULL or a live handle; `data` is NULL or points to `len` bytes.
 */
int fork_pool_call(struct fork_pool *pool,
                   const void *data,
                   size_t len,
                   fork_rpc_reply_cb cb,
                   void *userdata);

/*
 The number of workers the pool has now (retiring ones included).

 # Safety
 `pool` is NULL or a live handle.
 */
int fork_pool_workers(const struct fork_pool *pool);

/*
 Frees a pool gracefully: queued calls are still sent and answered,
 then workers read EOF and exit, the templates exit, then `cb` (may be
 NULL) runs with status 0. Until then it counts in `fork_pending`.
 `fork_pool_free(NULL, ...)` does nothing.

 # Safety
 `pool` is NULL or a live handle, never used again.
 */
void fork_pool_free(struct fork_pool *pool, fork_rpc_destroyed_cb cb, void *userdata);

/*
 Creates a process by forking the default template, which is spawned on
 first use (see `fork_new_exec`) and spawned again if it died.

 Returns a new handle, or NULL with `fork_last_error()` set. The caller
 owns the handle: end it with `fork_run` or `fork_free`. Any thread may
 call; the default template is shared and locked.
 */
struct fork_proc *fork_new(void);

/*
 Spawns a fresh template server (`anyfork-serve`, found through
 `$ANYFORK_SERVE`, beside the shared library, `../libexec/`, or the build
 directory) with `posix_spawn`: a direct child of the caller, whose pid
 `fork_pid` gives and which the library reaps.

 Returns a new handle owned by the caller, or NULL with
 `fork_last_error()` set (naming every place searched when the server is
 not found). Any thread may call.
 */
struct fork_proc *fork_new_exec(void);

/*
 Forks the process `p`: the child starts with every fd, string and
 library sent to `p` so far, and takes its own commands from then on.
 `p` stays usable (it is a template) and is not consumed.

 Returns a new handle owned by the caller, or NULL with
 `fork_last_error()` set (NULL `p`, a dead process).

 Like `fork_new`, this makes no fd: the new process's socket is made by
 the call that sends its first command (`fork_run`, `fork_send_arg`,
 …), which fails with `-EMFILE` if no fd is left, sending nothing; the
 process then waits for a later command. After `fork_exec` with NULL
 `envp` and NULL `cb` it needs no socket at all.

 # Safety
 `p` is NULL or a live handle not used by another thread meanwhile.
 */
struct fork_proc *fork_fork(struct fork_proc *p);

/*
 Keeps `n` processes forked ahead from the template `p` (0, the
 default: none). They are forked at once and wait, each on its own
 socket; `fork_fork(p)` then hands out the oldest (already forked: what
 the caller sends it goes straight to it, and its run starts with no
 fork on the way). Its replacement is forked 2 ms later, by the dispatch
 that follows (the loop fd becomes readable then), so that the
 template's fork does not compete for the CPUs with the process just
 handed out; when forks come less than 2 ms apart, or the refill is
 overdue because nothing dispatched, `fork_fork` forks it at once. A
 `fork_fork` that finds none waiting forks as usual. A process
 forked ahead is a copy of `p` as it was then, so sending `p` anything
 (`fork_send_arg`, `fork_send_fd`, `fork_require`, `fork_eval`) lets the
 waiting ones exit and forks new ones behind it; lowering `n` lets the
 extra ones exit, as does freeing or running `p`. Their pids show in
 `ps` while they wait; their exits reach no callback.

 For sparse creations (one now and then, each awaited) this takes the
 template's fork and wake-up off the new process's path; `anyfork_warm`
 (a pool kept by the template itself) saves only the fork.

 Returns 0, or `-EINVAL` (NULL `p`, `n` above 64), `-EPIPE` (`p` is
 gone), `-EMFILE` (no fds for the sockets), with `fork_last_error()` set.

 # Safety
 `p` is NULL or a live handle not used by another thread meanwhile.
 */
int fork_ahead(struct fork_proc *p, unsigned int n);

/*
 Sends a file descriptor; it becomes the next argument of the run
 function (`FORK_ARG_FD`). The library duplicates `fd` at once
 (`F_DUPFD_CLOEXEC`): the caller keeps its own and may close it right
 away; the library closes its duplicate once it is passed.

 Returns 0, or `-EINVAL` (NULL `p`), `-EBADF` (negative or closed `fd`),
 `-EMFILE` (no fd left for the duplicate), `-EPIPE` (the process is
 gone), `-EOPNOTSUPP` (a process of a remote template, see
 `fork_new_remote`: fds cannot cross machines), with
 `fork_last_error()` set. Nothing is sent on failure.

 # Safety
 `p` is NULL or a live handle not used by another thread meanwhile.
 */
int fork_send_fd(struct fork_proc *p, int fd);

/*
 Sends a byte string of `len` bytes (`data` may be NULL when `len` is
 0); it becomes the next argument of the run function
 (`FORK_ARG_STRING`). The bytes are copied if they cannot be written at
 once: the caller keeps ownership of `data`.

 Returns 0, or `-EINVAL` (NULL `p`, NULL `data` with a length),
 `-E2BIG` (4 GiB or more), `-EPIPE` (the process is gone), with
 `fork_last_error()` set.

 # Safety
 `p` as for `fork_send_fd`; `data` is NULL or points to `len` bytes.
 */
int fork_send_arg(struct fork_proc *p, const void *data, size_t len);

/*
 Loads the shared library `library` into the process (`dlopen` with
 `RTLD_NOW | RTLD_GLOBAL`), so later eval and run functions can be found
 in it. If it cannot be loaded, the process writes why to its stderr and
 exits with status 127: the caller sees EOF on the comm socket, or
 `-EPIPE` from a command or the run callback if it was still sending.

 Fork handlers the library registers (`pthread_atfork`) run in every
 process forked from this one afterwards. Until loaded code may have
 registered one (some loaded object uses `pthread_atfork`) or started a
 thread, an `anyfork-serve` process forks with glibc's `_Fork`, which
 spares each new process `fork`'s bookkeeping.

 Returns 0 once queued, or `-EINVAL` (NULL `p` or `library`, an empty
 name) with `fork_last_error()` set. The string is copied.

 # Safety
 `p` as for `fork_send_fd`; `library` is NULL or a C string.
 */
int fork_require(struct fork_proc *p, const char *library);

/*
 Calls `int function(const fork_arg *args, size_t nargs)` in the process
 now, with the `nargs` strings `args` (as `FORK_ARG_STRING`). Inside it,
 `fork_child_args` gives every fd and string received so far. A missing
 function (status 127) or a non-zero return (that status) makes the
 process write why to its stderr and exit.

 Builtin evals: `anyfork_setenv`, `anyfork_clearenv`, `anyfork_chdir`,
 `anyfork_setsid`, `anyfork_comm_fd` (see `fork_exec`) and
 `anyfork_warm` ("K", 0 to 64): the process, as a template, keeps K
 children forked and waiting, and hands each `fork_fork` request to one
 of them (the warm pool; a string, fd, require or eval sent to the
 template dismisses them, and new ones are forked when it is idle).

 Returns 0 once queued, or `-EINVAL` (NULL `p` or `function`, an empty
 name, NULL `args` with `nargs` > 0, a NULL string) with
 `fork_last_error()` set. Everything is copied.

 # Safety
 `p` as for `fork_send_fd`; `function` is NULL or a C string; `args` is
 NULL or points to `nargs` C string pointers.
 */
int fork_eval(struct fork_proc *p, const char *function, const char *const *args, size_t nargs);

/*
 Like `fork_eval`, for arguments that are byte strings (which may hold
 NUL bytes): argument `i` is `lens[i]` bytes at `data[i]` (`data[i]`
 may be NULL when `lens[i]` is 0).

 Returns 0 once queued, or `-EINVAL` (NULL `p` or `function`, an empty
 name, NULL `data` or `lens` with `nargs` > 0, a NULL string with a
 length) with `fork_last_error()` set. Everything is copied.

 # Safety
 `p` as for `fork_send_fd`; `function` is NULL or a C string; `data` and
 `lens` are NULL or point to `nargs` elements.
 */
int fork_eval_n(struct fork_proc *p,
                const char *function,
                const void *const *data,
                const size_t *lens,
                size_t nargs);

/*
 Makes the process enter `int function(int fd, const fork_arg *args,
 size_t nargs)`: `fd` is its end of the comm socket, `args` every fd and
 string sent to it and to the templates it was forked from, in the order
 sent. When `function` returns, the process exits with its return value.
 If the function does not exist, the process writes why to its stderr
 and exits with status 127.

 This consumes `p`, even when it fails: the library keeps the process
 alive until everything is delivered. Then `cb` runs (from
 `fork_loop_dispatch` or `fork_wait`, never from inside `fork_run`) with
 the caller's end of the comm socket, which it then owns, or with
 `-errno` if delivery failed. With a NULL `cb` the library closes its end
 itself once everything is delivered; if nothing was sent to `p` since
 `fork_new` or `fork_fork`, no socket is made at all: the request is one
 small write, and the process's comm socket is one of its template's
 whose other end is closed (what it would see anyway).

 "Delivered" means written to the kernel: the process's commands, and
 for a forked process the fork request to its template. `cb` does not
 wait for the template to report the pid (that would cost a round trip
 per process): if the fork fails after its request left (fork failed in
 the template, or the template died first), reading the comm socket
 ends at once (EOF, or `ECONNRESET` when commands written to it were lost
 unread), and `fork_on_exit`'s callback gets pid -1 and the `-errno`.

 Returns 0, or `-EINVAL` (NULL `p` or `function`, an empty name),
 `-EPIPE` (the process is gone) with `fork_last_error()` set; after an
 error `cb` is never called.

 # Safety
 `p` is NULL or a live handle, which must not be used again; `function`
 is NULL or a C string; `cb` may run on any thread that dispatches.
 */
int fork_run(struct fork_proc *p, const char *function, fork_run_cb cb, void *userdata);

/*
 Registers `cb` to run once the process has exited, with its pid and
 wait status. Works for every process: forked ones hear it from their
 template, direct children through a pidfd. Call it before `fork_run`;
 a second call replaces the first callback, which then runs (from
 dispatch) with pid -1 and `-ECANCELED`. `cb` runs from
 `fork_loop_dispatch` or `fork_wait`. No SIGCHLD handler is involved.

 Returns 0, or `-EINVAL` (NULL `p` or `cb`) with `fork_last_error()` set.

 # Safety
 `p` as for `fork_send_fd`; `cb` may run on any thread that dispatches.
 */
int fork_on_exit(struct fork_proc *p, fork_exit_cb cb, void *userdata);

/*
 The process's pid. Direct children (`fork_new_exec`) know it at once;
 a forked process learns it from its template, so this call may wait
 (up to 10 s) for the template's report.

 Returns the pid, or -1 with `fork_last_error()` set (NULL `p`, the fork
 failed, the template died, the report timed out).

 # Safety
 `p` is NULL or a live handle not used by another thread meanwhile.
 */
pid_t fork_pid(const struct fork_proc *p);

/*
 Frees a handle that has not run. Two cases:

 - Its fork request is still held back: nothing was asked of a process
   that `fork_new` or `fork_fork` made (no `fork_send_fd`,
   `fork_send_arg`, `fork_require`, `fork_eval`, `fork_fork` of it or
   `fork_pid` since), and nothing of its template either (a fork request
   waits only until the template's next command, another fork
   included): the process is never made.
   Its exit callback, if any, runs with pid -1 and `-ECANCELED`.
 - Otherwise (and always for `fork_new_exec`, `fork_template` and
   `fork_from_fd` handles, whose process exists already): what was
   queued is still delivered, then the process sees EOF before any run
   and exits with status 0, which its exit callback reports.

 `fork_free(NULL)` does nothing.

 # Safety
 `p` is NULL or a live handle, which must not be used again.
 */
void fork_free(struct fork_proc *p);

/*
 A message describing the last error on the calling thread: what was
 called, on what, and why. The string belongs to the library and stays
 valid until the next failing call on this thread; it is "" before any.
 */
const char *fork_last_error(void);

/*
 The negative errno of the last failure on the calling thread (what an
 `int` call would have returned), for calls that return a pointer or a
 pid; 0 before any failure.
 */
int fork_last_errno(void);

/*
 Starts an RPC worker: makes `p` enter `function` like `fork_run` (and
 consumes `p`, even on failure). `function` serves RPC on its comm
 socket: a C function calling `fork_rpc_serve`, or `anyfork_exec` for a
 program that speaks the framing (README, "RPC"). Calls may be made at
 once; they are written as the process becomes reachable. `on_event`
 (may be NULL) gets the worker's events.

 Returns a handle the caller owns (end it with `fork_rpc_free`), or NULL
 with `fork_last_error()` set.

 # Safety
 `p` is NULL or a live handle, never used again; `function` is NULL or
 a C string; callbacks may run on any thread that dispatches.
 */
struct fork_rpc *fork_rpc_start(struct fork_proc *p,
                                const char *function,
                                fork_rpc_event_cb on_event,
                                void *userdata);

/*
 Sends a request of `len` bytes (copied if the socket cannot take it at
 once; never blocks, the queue is bounded only by memory). `cb` runs
 exactly once, from dispatch or wait: with the reply, or with -errno if
 none will come. Outstanding calls count in `fork_pending`.

 Returns 0, or `-EINVAL` (NULL `r` or `cb`, NULL
 `data` with a length), `-E2BIG` (4 GiB or more), `-EPIPE` (the worker
 is known to be gone), with `fork_last_error()` set and `cb` never run.

 # Safety
 `r` is NULL or a live handle; `data` is NULL or points to `len` bytes.
 */
int fork_rpc_call(struct fork_rpc *r,
                  const void *data,
                  size_t len,
                  fork_rpc_reply_cb cb,
                  void *userdata);

/*
 Frees an RPC handle gracefully: calls already made are still written
 and answered, then the worker reads EOF (and exits), then `cb` (may be
 NULL) runs from dispatch or wait. Until then it counts in
 `fork_pending`, so `while (fork_wait(-1) > 0) ;` waits for it.
 `fork_rpc_free(NULL, ...)` does nothing.

 # Safety
 `r` is NULL or a live handle, never used again.
 */
void fork_rpc_free(struct fork_rpc *r, fork_rpc_destroyed_cb cb, void *userdata);

/*
 In the worker: serves RPC on the comm socket `fd` until the caller
 closes its side: reads each request and calls `handler` with it.
 `flags` 0 is synchronous (one request at a time, in order);
 `FORK_RPC_ASYNC` lets the handler reply later from any thread, and
 `fork_rpc_serve` then returns only once every request was answered.
 Once everything read is answered it looks for the next request without
 blocking for up to 50 µs before it sleeps (as `fork_wait` does for
 replies; `ANYFORK_SPIN_US` sets the time, 0 turns it off).

 Returns 0 at EOF (return it from the run function), or -errno with
 `fork_last_error()` set (a bad fd, the caller gone while replying, a
 request with a reserved id).

 # Safety
 `handler` is a valid function; `userdata` is passed through untouched.
 */
int fork_rpc_serve(int fd, fork_rpc_handler handler, void *userdata, int flags);

/*
 In the worker: answers request `id` with `len` bytes at `data`
 (copied). Each request is answered once.

 Returns 0, or `-EINVAL` (NULL `w`, an id not waiting for a reply),
 `-EPIPE` (the caller is gone), with `fork_last_error()` set.

 # Safety
 `w` is NULL or the handle the handler got, while `fork_rpc_serve`
 runs; `data` is NULL or points to `len` bytes.
 */
int fork_rpc_reply(struct fork_rpc_worker *w, uint32_t id, const void *data, size_t len);

/*
 In the worker: sends an event (`len` bytes at `data`, copied) to the
 caller's `on_event`, in order with the replies.

 Returns 0, or -errno with `fork_last_error()` set, as `fork_rpc_reply`.

 # Safety
 As for `fork_rpc_reply`.
 */
int fork_rpc_event(struct fork_rpc_worker *w, const void *data, size_t len);

/*
 In a pool's worker: asks to be retired. The pool sends it nothing new;
 once the requests it has are answered it reads EOF, and the pool
 starts a replacement as needed.

 Returns 0, or -errno with `fork_last_error()` set.

 # Safety
 As for `fork_rpc_reply`.
 */
int fork_pool_retire(struct fork_rpc_worker *w);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* ANYFORK_H */
