//! Arguments as a process receives them: owned by the server, shown to C
//! code as an array of `fork_arg`.

use std::os::fd::{AsRawFd, OwnedFd};

/// What one `fork_arg` holds.
///
/// The variant names are the C enumerators' names.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForkArgKind {
    /// A byte string: `data` and `len` are set, `fd` is -1.
    FORK_ARG_STRING = 0,
    /// A file descriptor: `fd` is set, `data` is NULL and `len` 0.
    FORK_ARG_FD = 1,
}

/// One argument as the child's functions see it.
///
/// A string's bytes are followed by a NUL that `len` does not count, so
/// text arguments can be used as C strings. Everything stays valid until
/// the process exits.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkArg {
    /// `FORK_ARG_STRING` or `FORK_ARG_FD`.
    pub kind: ForkArgKind,
    /// The file descriptor, or -1 for a string.
    pub fd: libc::c_int,
    /// The bytes of a string (NUL-terminated), or NULL for an fd.
    pub data: *const u8,
    /// The number of bytes of a string, or 0 for an fd.
    pub len: usize,
}

/// A received argument, owned by the server.
pub enum Arg {
    /// Bytes with one extra trailing NUL.
    Str(Vec<u8>),
    Fd(OwnedFd),
}

impl Arg {
    /// A string argument from received bytes.
    pub fn string(mut bytes: Vec<u8>) -> Arg {
        bytes.push(0);
        Arg::Str(bytes)
    }

    /// The C view of this argument.
    pub fn view(&self) -> ForkArg {
        match self {
            Arg::Str(b) => ForkArg {
                kind: ForkArgKind::FORK_ARG_STRING,
                fd: -1,
                data: b.as_ptr(),
                len: b.len() - 1,
            },
            Arg::Fd(fd) => ForkArg {
                kind: ForkArgKind::FORK_ARG_FD,
                fd: fd.as_raw_fd(),
                data: std::ptr::null(),
                len: 0,
            },
        }
    }
}

/// A placeholder view (an fd of -1), for filling arrays.
pub const EMPTY: ForkArg = ForkArg {
    kind: ForkArgKind::FORK_ARG_FD,
    fd: -1,
    data: std::ptr::null(),
    len: 0,
};

/// The C view of a list of arguments.
pub fn views(args: &[Arg]) -> Vec<ForkArg> {
    args.iter().map(Arg::view).collect()
}

/// The strings among `args`, as byte slices.
pub fn strings(args: &[ForkArg]) -> impl Iterator<Item = &[u8]> {
    args.iter()
        .filter(|a| a.kind == ForkArgKind::FORK_ARG_STRING)
        .map(|a| {
            // SAFETY: a string argument's data holds len bytes (plus a NUL)
            // for as long as the argument lives.
            unsafe { std::slice::from_raw_parts(a.data, a.len) }
        })
}

/// The fds among `args`, in order.
pub fn fds(args: &[ForkArg]) -> impl Iterator<Item = libc::c_int> + '_ {
    args.iter()
        .filter(|a| a.kind == ForkArgKind::FORK_ARG_FD)
        .map(|a| a.fd)
}

/// The C array `args` of `n` arguments as a slice.
///
/// # Safety
/// `args` points to `n` valid arguments (the server passes its own array),
/// or `n` is 0.
pub unsafe fn slice<'a>(args: *const ForkArg, n: usize) -> &'a [ForkArg] {
    if n == 0 {
        return &[];
    }
    // SAFETY: per the contract.
    unsafe { std::slice::from_raw_parts(args, n) }
}
