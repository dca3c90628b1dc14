//! Direct children of the caller (exec'd servers, template forks of the
//! caller): the library reaps them and reports their wait status.
//!
//! Each one gets a pidfd (`pidfd_open`, Linux 5.3+) in the loop fd; when it
//! turns readable the child has exited and `waitpid(pid, WNOHANG)` reaps it.
//! A host loop that reaps every child itself (libev's child watchers do)
//! makes that `waitpid` fail with `ECHILD`: the exit callback then gets
//! `-ECHILD`, and nothing else breaks. On kernels without pidfds the
//! children are polled on every dispatch, and the reactor's tick makes the
//! loop fd readable every 20 ms while any is pending, so an event loop
//! wakes for them too.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};

use super::reactor::{Reactor, Watcher};
use super::record::Record;
use super::state::lock;
use crate::error::Error;

/// One direct child being watched.
pub struct DirectChild {
    pid: i32,
    token: u64,
    /// Its pidfd, until it is reaped.
    pidfd: Mutex<Option<OwnedFd>>,
    rec: Arc<Record>,
}

/// Starts watching `pid`, whose record is `rec`.
pub fn watch(pid: i32, rec: Arc<Record>) {
    let Ok(r) = Reactor::get() else { return };
    let child = Arc::new(DirectChild {
        pid,
        token: r.token(),
        pidfd: Mutex::new(None),
        rec,
    });
    if let Some(fd) = crate::sys::proc::pidfd_open(pid) {
        let mut slot = lock(&child.pidfd);
        let fd = slot.insert(fd);
        let c: Arc<dyn Watcher> = child.clone();
        if r.set_interest(child.token, fd.as_fd(), 0, libc::EPOLLIN as u32, || c)
            .is_ok()
        {
            return;
        }
        drop(slot.take());
    }
    r.poll_always(child);
}

impl DirectChild {
    /// Tries to reap; true once the child is gone.
    fn reap(&self) -> bool {
        match crate::sys::proc::reap(self.pid) {
            Ok(None) | Err(nix::Error::EINTR) => false,
            Ok(Some((_, status))) => {
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
}

impl Watcher for DirectChild {
    /// The pidfd turned readable, or (without one) a tick came.
    /// Dispatchers on several threads may see the same event: the pidfd's
    /// lock makes one of them reap.
    fn on_ready(self: Arc<Self>, events: u32) -> bool {
        if events == 0 {
            return !self.reap();
        }
        let mut guard = lock(&self.pidfd);
        if guard.is_none() || !self.reap() {
            return true;
        }
        let fd = guard.take();
        drop(guard);
        if let (Some(fd), Ok(r)) = (fd, Reactor::get()) {
            let _ = r.unwatch(self.token, fd.as_fd());
        }
        false
    }

    /// In a forked child: the parent's child is not ours to watch. Its
    /// record belongs to the parent's generation: dropping it calls nothing.
    fn abandon(&self) {
        if let Ok(mut fd) = self.pidfd.try_lock() {
            drop(fd.take());
        }
    }
}
