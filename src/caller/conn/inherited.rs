//! Connections of the parent, in a child the program forked: each one
//! knows its generation, and a forked child abandons them all (closing
//! only its copies of their fds, running nothing).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use super::Conn;
use crate::caller::state;
use crate::error::{Errno, Error};

/// Every connection alive in this process, by address, so that a forked
/// child can abandon them all ([`Conn::abandon_all`]).
static LIVE: Mutex<Option<HashMap<usize, Weak<Conn>>>> = Mutex::new(None);

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(live) = state::lock(&LIVE).as_mut() {
            live.remove(&(self as *const Conn as usize));
        }
    }
}

/// Adds a new connection to [`LIVE`].
pub(super) fn register(conn: &Arc<Conn>) {
    state::lock(&LIVE)
        .get_or_insert_with(HashMap::new)
        .insert(Arc::as_ptr(conn) as usize, Arc::downgrade(conn));
}

impl Conn {
    /// Made before the last [`super::state::reset`]: the socket is a
    /// copy of the parent's, and nothing may be sent or reported on it.
    pub(super) fn foreign(&self) -> bool {
        self.epoch != state::epoch()
    }

    /// In a forked child: closes our copy of the socket and nothing else.
    pub fn abandon(&self) {
        if let Ok(mut st) = self.st.try_lock() {
            st.interest = 0;
            st.dead.get_or_insert_with(|| {
                Error::new(Errno::EBADF, "inherited from the parent process")
            });
            for fd in [st.fd.take(), st.pidfd.take()].into_iter().flatten() {
                if state::inherited_fds_gone() {
                    // Closed already; the number may be someone else's now.
                    let _ = std::os::fd::IntoRawFd::into_raw_fd(fd);
                }
            }
            // So are queued fds.
            if state::inherited_fds_gone() {
                std::mem::forget(std::mem::take(&mut st.out));
            }
        }
    }

    /// In a forked child: abandons every connection of the parent's that
    /// is still alive, the ones only the program's handles hold included,
    /// so that none of their fds stays open in the child.
    pub fn abandon_all() {
        let Ok(mut live) = LIVE.try_lock() else {
            return;
        };
        let all: Vec<_> = live.get_or_insert_with(HashMap::new).drain().collect();
        drop(live);
        for (_, conn) in all {
            if let Some(conn) = conn.upgrade() {
                conn.abandon();
            }
        }
    }
}
