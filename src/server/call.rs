//! Eval and run inside a process: finding the function (a builtin, the
//! dispatcher, or `dlsym`), loading libraries, and calling them.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;

use super::args::{self, Arg, ForkArg};
use super::exit::{die, exit_after_run};
use super::state::{self, Dispatcher};

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

/// Performs one eval (`fd` -1) or run: a builtin, else the dispatcher,
/// else the symbol (`resolved`, when the template looked it up already);
/// exits 127 when there is none.
fn call(
    kind: ForkCallKind,
    name: &CStr,
    fd: RawFd,
    args: &[ForkArg],
    resolved: Option<usize>,
) -> libc::c_int {
    // The dispatcher's lock is taken only when no builtin has the name: a
    // write to its page costs a new process a copy-on-write fault.
    let target = match super::builtins::find(name.to_bytes(), kind) {
        Some(f) => f,
        None if resolved.is_some() => resolved.unwrap_or_default() as *mut libc::c_void,
        None => {
            if let Some(Dispatcher(f, ud)) = state::dispatcher() {
                // SAFETY: the dispatcher was registered by this process's
                // owner with exactly this signature.
                let rc = unsafe { f(kind, name.as_ptr(), fd, args.as_ptr(), args.len(), ud) };
                if rc != DISPATCH_PASS {
                    return rc;
                }
            }
            crate::sys::dl::lookup(name).unwrap_or_else(|why| {
                let what = match kind {
                    ForkCallKind::FORK_CALL_RUN => "run",
                    ForkCallKind::FORK_CALL_EVAL => "eval",
                };
                die(
                    127,
                    format_args!(
                        "{what}: no function {:?} in this process ({why})",
                        name.to_string_lossy()
                    ),
                )
            })
        }
    };
    // SAFETY: builtins have the signature of their kind; for symbols the
    // user promises it.
    unsafe {
        match kind {
            ForkCallKind::FORK_CALL_RUN => {
                let f: RunFn = std::mem::transmute(target);
                f(fd, args.as_ptr(), args.len())
            }
            ForkCallKind::FORK_CALL_EVAL => {
                let f: EvalFn = std::mem::transmute(target);
                f(args.as_ptr(), args.len())
            }
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
    if let Err(why) = crate::sys::dl::open_global(&lib) {
        die(
            127,
            format_args!("require {:?} failed: {why}", lib.to_string_lossy()),
        );
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
    state::publish_args(&all);
    let rc = call(ForkCallKind::FORK_CALL_EVAL, &name, -1, &view, None);
    state::publish_args(&[]);
    if rc != 0 {
        die(
            rc,
            format_args!("eval {:?} returned {rc}; exiting", name.to_string_lossy()),
        );
    }
}

/// Enters the run function `name` (at `resolved`, when the template
/// looked it up) with the comm socket and everything received; exits with
/// its return value.
pub fn run(name: &[u8], sock: RawFd, received: &[Arg], resolved: Option<usize>) -> ! {
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
    state::publish_args(all);
    let rc = call(ForkCallKind::FORK_CALL_RUN, name, sock, all, resolved);
    exit_after_run(rc, sock)
}
