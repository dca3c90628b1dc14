//! The child's side of eval and run: finding the function (a builtin, the
//! dispatcher, or `dlsym`), calling it, and leaving the process clean
//! before user code runs.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;
use std::sync::Mutex;

use crate::args::{self, Arg, ForkArg};

/// `int fn(const fork_arg *args, size_t nargs)`.
pub type EvalFn = unsafe extern "C" fn(*const ForkArg, usize) -> libc::c_int;
/// `int fn(int fd, const fork_arg *args, size_t nargs)`.
pub type RunFn = unsafe extern "C" fn(libc::c_int, *const ForkArg, usize) -> libc::c_int;

/// Which call a dispatcher is asked to perform.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForkCallKind {
    /// An eval: `fd` is -1, `args` are the eval's own strings; a non-zero
    /// return makes the process exit with that status.
    FORK_CALL_EVAL = 0,
    /// A run: `fd` is the comm socket, `args` everything received; the
    /// return value is the process's exit status.
    FORK_CALL_RUN = 1,
}

/// A dispatcher: performs `name` itself instead of symbol lookup.
pub type DispatchFn = unsafe extern "C" fn(
    ForkCallKind,
    *const libc::c_char,
    libc::c_int,
    *const ForkArg,
    usize,
    *mut libc::c_void,
) -> libc::c_int;

/// What a dispatcher returns for a name it does not handle: the call then
/// goes to `dlsym` lookup as if no dispatcher were set.
pub const DISPATCH_PASS: libc::c_int = libc::c_int::MIN;

#[derive(Clone, Copy)]
struct Dispatcher(DispatchFn, *mut libc::c_void);
// SAFETY: the userdata pointer is only handed back to the dispatcher, in
// the process that set it; the library never dereferences it.
unsafe impl Send for Dispatcher {}

static DISPATCH: Mutex<Option<Dispatcher>> = Mutex::new(None);

/// Sets (or with `None` clears) the dispatcher of this process.
pub fn set_dispatch(f: Option<DispatchFn>, userdata: *mut libc::c_void) {
    *DISPATCH.lock().unwrap_or_else(|p| p.into_inner()) = f.map(|f| Dispatcher(f, userdata));
}

fn dispatcher() -> Option<Dispatcher> {
    *DISPATCH.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes `msg` to stderr and exits with `status` without running atexit
/// handlers (they belong to whoever this process was copied from).
///
/// Commands already in the socket are read and dropped first, so that the
/// caller sees a plain EOF rather than a connection reset (which a socket
/// closed with unread data gives).
pub fn die(status: i32, msg: impl std::fmt::Display) -> ! {
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    eprintln!("anyfork[{pid}]: {msg}");
    let sock = COMM.load(std::sync::atomic::Ordering::Relaxed);
    if sock >= 0 {
        let mut buf = [0u8; 4096];
        // SAFETY: reads into a local buffer until the socket is dry.
        while unsafe { libc::recv(sock, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) }
            > 0
        {}
    }
    exit(status)
}

/// The socket this process serves (for [`die`]); -1 when none.
static COMM: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// Records the socket this process serves.
pub fn set_comm(fd: RawFd) {
    COMM.store(fd, std::sync::atomic::Ordering::Relaxed);
}

/// Flushes C stdio and exits at once.
pub fn exit(status: i32) -> ! {
    // SAFETY: fflush(NULL) flushes every stdio stream; _exit never returns.
    unsafe {
        libc::fflush(std::ptr::null_mut());
        libc::_exit(status)
    }
}

/// `dlsym(RTLD_DEFAULT, name)`, or why not.
fn lookup(name: &CStr) -> Result<*mut libc::c_void, String> {
    // SAFETY: dlerror/dlsym with a valid C string; the error string is
    // copied before any other dl call.
    unsafe {
        libc::dlerror();
        let p = libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr());
        if p.is_null() {
            let e = libc::dlerror();
            let why = if e.is_null() {
                "symbol is NULL".to_string()
            } else {
                CStr::from_ptr(e).to_string_lossy().into_owned()
            };
            return Err(format!(
                "no function {:?} in this process ({why})",
                name.to_string_lossy()
            ));
        }
        Ok(p)
    }
}

/// Performs one eval (`fd` -1) or run: a builtin, else the dispatcher,
/// else the symbol; exits 127 when there is none.
fn call(kind: ForkCallKind, name: &CStr, fd: RawFd, args: &[ForkArg]) -> libc::c_int {
    let missing = |e: String| -> ! {
        let what = if kind == ForkCallKind::FORK_CALL_RUN {
            "run"
        } else {
            "eval"
        };
        die(127, format_args!("{what}: {e}"))
    };
    // The dispatcher's lock is taken only when no builtin has the name: a
    // write to its page costs a new process a copy-on-write fault.
    let target = match crate::builtins::find(name.to_bytes(), kind) {
        Some(f) => f,
        None => {
            if let Some(Dispatcher(f, ud)) = dispatcher() {
                // SAFETY: the dispatcher was registered by this process's
                // owner with exactly this signature.
                let rc = unsafe { f(kind, name.as_ptr(), fd, args.as_ptr(), args.len(), ud) };
                if rc != DISPATCH_PASS {
                    return rc;
                }
            }
            lookup(name).unwrap_or_else(|e| missing(e))
        }
    };
    // SAFETY: builtins have the signature of their kind; for symbols the
    // user promises it.
    unsafe {
        if kind == ForkCallKind::FORK_CALL_RUN {
            let f: RunFn = std::mem::transmute(target);
            f(fd, args.as_ptr(), args.len())
        } else {
            let f: EvalFn = std::mem::transmute(target);
            f(args.as_ptr(), args.len())
        }
    }
}

fn cname(name: &[u8]) -> CString {
    CString::new(name)
        .unwrap_or_else(|_| die(125, "a function name with a NUL byte passed the decoder"))
}

/// Loads `library` with `RTLD_NOW | RTLD_GLOBAL`, or exits with status 127.
pub fn require(library: &[u8]) {
    let lib = cname(library);
    // SAFETY: dlopen with a valid C string; dlerror copied at once.
    unsafe {
        if libc::dlopen(lib.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL).is_null() {
            let e = libc::dlerror();
            let why = if e.is_null() {
                String::new()
            } else {
                CStr::from_ptr(e).to_string_lossy().into_owned()
            };
            die(
                127,
                format_args!("require {:?} failed: {why}", lib.to_string_lossy()),
            );
        }
    }
}

/// Calls the eval function `name` with `eval_args`; everything received so
/// far (`received`) is reachable through `fork_child_args`. Exits on a
/// missing function (127) or a non-zero return (that status).
pub fn eval(name: &[u8], eval_args: &[&[u8]], received: &[Arg]) {
    let name = cname(name);
    let owned: Vec<Arg> = eval_args.iter().map(|a| Arg::string(a.to_vec())).collect();
    let view = args::views(&owned);
    let all = args::views(received);
    args::publish(&all);
    let rc = call(ForkCallKind::FORK_CALL_EVAL, &name, -1, &view);
    args::publish(&[]);
    if rc != 0 {
        die(
            rc,
            format_args!("eval {:?} returned {rc}; exiting", name.to_string_lossy()),
        );
    }
}

/// Enters the run function `name` with the comm socket and everything
/// received; exits with its return value.
pub fn run(name: &[u8], sock: RawFd, received: &[Arg]) -> ! {
    // A short name is made a C string on the stack: a new process touches
    // as few pages as it can before user code (each first touch faults).
    let mut short = [0u8; 64];
    let owned;
    let name: &CStr = if name.len() < short.len() {
        short[..name.len()].copy_from_slice(name);
        CStr::from_bytes_until_nul(&short)
            .unwrap_or_else(|_| die(125, "a function name with a NUL byte passed the decoder"))
    } else {
        owned = cname(name);
        &owned
    };
    // Up to 16 arguments are viewed from the stack, for the same reason.
    let mut few = [args::EMPTY; 16];
    let many;
    let all: &[ForkArg] = if received.len() <= few.len() {
        for (v, a) in few.iter_mut().zip(received) {
            *v = a.view();
        }
        &few[..received.len()]
    } else {
        many = args::views(received);
        &many
    };
    args::publish(all);
    let rc = call(ForkCallKind::FORK_CALL_RUN, name, sock, all);
    exit(rc)
}

/// Signals this process found with a non-default disposition.
pub struct SignalState {
    handled: Vec<libc::c_int>,
}

impl SignalState {
    /// Records which signals are not at their default disposition; `scan`
    /// false trusts that exec left them all at default.
    pub fn capture(scan: bool) -> SignalState {
        let mut handled = Vec::new();
        if scan {
            for sig in 1..libc::SIGRTMAX() {
                if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                    continue;
                }
                // SAFETY: queries the disposition into a zeroed struct.
                unsafe {
                    let mut old: libc::sigaction = std::mem::zeroed();
                    if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                        && old.sa_sigaction != libc::SIG_DFL
                    {
                        handled.push(sig);
                    }
                }
            }
        }
        SignalState { handled }
    }

    /// The signals found away from their default disposition.
    pub fn handled(&self) -> &[libc::c_int] {
        &self.handled
    }

    /// Gives every signal its default disposition and empties the mask.
    pub fn reset(&self) {
        // SAFETY: plain sigaction/sigprocmask calls on valid structs.
        unsafe {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            for &sig in &self.handled {
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        }
    }
}
