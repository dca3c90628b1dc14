//! The one error type (an errno for the C ABI plus a sentence for people)
//! and the one way to turn errno or `io::Error` into it.

use std::fmt;

pub use nix::errno::Errno;

/// What went wrong: the errno the C API returns (negated) and a message that
/// names the call, the object and the cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    errno: Errno,
    msg: String,
}

/// Result of every fallible anyfork call.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error with errno `errno` and the message `msg`.
    pub fn new(errno: Errno, msg: impl Into<String>) -> Error {
        Error {
            errno,
            msg: msg.into(),
        }
    }

    /// An error from a failed system call: `what` names the attempt, the
    /// errno's description is appended.
    pub fn sys(errno: Errno, what: impl fmt::Display) -> Error {
        Error::new(errno, format!("{what}: {}", errno.desc()))
    }

    /// An error from the system call that just failed on this thread:
    /// its errno (EIO should it be 0, so the C API never reports a failure
    /// as 0) and `what`.
    pub fn last(what: impl fmt::Display) -> Error {
        Error::sys(last_errno(), what)
    }

    /// An error from an `io::Error` of a system call: its errno (EIO when
    /// it has none) and `what`.
    pub fn io(e: &std::io::Error, what: impl fmt::Display) -> Error {
        Error::sys(errno_of(e), what)
    }

    /// The errno; the C API returns it negated.
    pub fn errno(&self) -> Errno {
        self.errno
    }

    /// The message, without the errno.
    pub fn message(&self) -> &str {
        &self.msg
    }

    /// The same error with `context` put in front of the message.
    pub fn context(mut self, context: impl fmt::Display) -> Error {
        self.msg = format!("{context}: {}", self.msg);
        self
    }
}

/// The errno of the call that just failed on this thread, never 0.
pub fn last_errno() -> Errno {
    match Errno::last() {
        Errno::UnknownErrno => Errno::EIO,
        e => e,
    }
}

/// The errno in an `io::Error`, or EIO when it has none.
pub fn errno_of(e: &std::io::Error) -> Errno {
    match e.raw_os_error() {
        Some(0) | None => Errno::EIO,
        Some(n) => Errno::from_raw(n),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?})", self.msg, self.errno)
    }
}

impl std::error::Error for Error {}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> std::io::Error {
        std::io::Error::new(std::io::Error::from_raw_os_error(e.errno as i32).kind(), e)
    }
}
