//! Direct children of the caller (exec'd servers, template forks of the
//! caller): the library reaps them and reports their wait status.
//!
//! Each one gets a pidfd (`pidfd_open`, Linux 5.3+) in the loop fd; when it
//! turns readable the child has exited and `waitpid(pid, WNOHANG)` reaps it.
//! A host loop that reaps every child itself (libev's child watchers do)
//! makes that `waitpid` fail with `ECHILD`: the exit callback then gets
//! `-ECHILD`, and nothing else breaks. On kernels without pidfds the
//! children are polled with `waitpid(WNOHANG)` on every dispatch, and a
//! timerfd in the loop fd ticks every 20 ms while any is pending, so an
//! event loop wakes for them too.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use crate::error::{Errno, Error};
use crate::reactor::{Reactor, Source};
use crate::record::Record;

/// One direct child being watched.
pub struct DirectChild {
    pid: i32,
    token: u64,
    pidfd: Mutex<Option<OwnedFd>>,
    rec: Arc<Record>,
}

static FALLBACK: Mutex<Vec<Arc<DirectChild>>> = Mutex::new(Vec::new());

/// Starts watching `pid`, whose record is `rec`.
pub fn watch(pid: i32, rec: Arc<Record>) {
    // SAFETY: pidfd_open takes a pid and flags; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let Ok(r) = Reactor::get() else { return };
    let child = Arc::new(DirectChild {
        pid,
        token: r.token(),
        pidfd: Mutex::new(None),
        rec,
    });
    if fd >= 0 {
        // SAFETY: a fresh pidfd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let c = child.clone();
        let raw = fd.as_raw_fd();
        // pidfds are close-on-exec from birth (PIDFD_CLOEXEC is implied).
        *child.pidfd.lock().unwrap_or_else(|p| p.into_inner()) = Some(fd);
        if r.set_interest(child.token, raw, 0, libc::EPOLLIN as u32, || {
            Source::Child(c)
        })
        .is_ok()
        {
            return;
        }
    }
    FALLBACK
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(child);
    r.set_ticking(true);
}

impl DirectChild {
    /// Tries to reap; true once the child is gone.
    fn reap(&self) -> bool {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        match Errno::result(r) {
            Ok(0) | Err(Errno::EINTR) => false,
            Ok(_) => {
                self.rec.set_status(Ok(status));
                true
            }
            Err(e) => {
                self.rec.set_status(Err(Error::sys(
                    e,
                    format_args!(
                        "pid {} was reaped by someone else (a host loop's child watcher?)",
                        self.pid
                    ),
                )));
                true
            }
        }
    }

    /// The pidfd turned readable. Dispatchers on several threads may see
    /// the same event: the pidfd's lock makes one of them reap.
    pub fn on_ready(&self) {
        let mut guard = self.pidfd.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() || !self.reap() {
            return;
        }
        let fd = guard.take();
        drop(guard);
        if let (Some(fd), Ok(r)) = (fd, Reactor::get()) {
            let _ = r.unwatch(self.token, fd.as_raw_fd());
        }
    }
}

impl DirectChild {
    /// In a forked child: the parent's child is not ours to watch.
    pub fn abandon(self: Arc<Self>) {
        if let Ok(mut fd) = self.pidfd.try_lock() {
            drop(fd.take());
        }
    }
}

/// Forgets the parent's children (in a forked child).
pub fn abandon_fallback() {
    if let Ok(mut v) = FALLBACK.try_lock() {
        // Their records belong to the parent's generation: dropping them
        // calls nothing.
        drop(std::mem::take(&mut *v));
    }
}

/// Polls the children that have no pidfd.
pub fn poll_fallback() {
    let mut v = FALLBACK.lock().unwrap_or_else(|p| p.into_inner());
    if !v.is_empty() {
        v.retain(|c| !c.reap());
    }
}

/// True while children without a pidfd wait to be reaped.
pub fn fallback_pending() -> bool {
    !FALLBACK
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_empty()
}
