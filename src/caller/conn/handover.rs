//! Giving a connection's socket up (`fork_to_fd`): everything queued and
//! every pid owed is delivered first.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::Conn;
use crate::error::{Errno, Error, Result};

impl Conn {
    /// Delivers everything queued and every pid still owed, then gives up
    /// the socket (blocking up to `limit`). Exit callbacks of children
    /// forked here fail with `ECHILD`: their reports now go to the new
    /// owner.
    pub fn detach(self: &Arc<Self>, limit: std::time::Duration) -> Result<OwnedFd> {
        let deadline = std::time::Instant::now() + limit;
        {
            let mut st = self.lock();
            self.flush_pending(&mut st)?;
        }
        loop {
            self.pump();
            {
                let mut st = self.lock();
                if let Some(e) = &st.dead {
                    return Err(e.clone());
                }
                if st.out.is_empty() && st.forks.is_empty() {
                    let fd = self
                        .release(&mut st)
                        .ok_or_else(|| Error::new(Errno::EBADF, "the socket is gone"))?;
                    for (pid, r) in st.children.drain() {
                        r.set_status(Err(Error::new(
                            Errno::ECHILD,
                            format!("the template was handed over before pid {pid} exited"),
                        )));
                    }
                    st.dead = Some(Error::new(
                        Errno::EBADF,
                        "the process object was handed over (fork_to_fd)",
                    ));
                    return Ok(fd);
                }
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(Error::new(
                    Errno::ETIMEDOUT,
                    "the process did not take its queued commands in time",
                ));
            }
            self.poll(left.as_millis().clamp(1, 100) as u16);
        }
    }
}
