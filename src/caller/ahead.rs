//! Processes forked ahead in the caller: a template keeps `n` children
//! already forked and waiting on their own sockets, and `fork` hands one
//! out, so a creation costs the new process's wake-up, not a fork.
//!
//! Unlike the template's warm pool (`anyfork_warm`, `server/pool.rs`),
//! which hands a fork request down to a waiting child, the caller holds
//! the waiting children's sockets itself: what it sends (arguments, the
//! run) goes straight to the child, and the template is not on the path.
//! A waiting child is a copy of the template as it was when forked, so
//! whatever the caller sends the template (a string, an fd, a require, an
//! eval) dismisses the waiting children (they read EOF and exit) and
//! forks new ones behind it.

use std::collections::VecDeque;

use super::process::Process;
use super::state::lock;
use crate::error::{Errno, Error, Result};

/// Most processes a template keeps forked ahead.
pub(crate) const MAX: usize = 64;

/// A template's processes forked ahead.
#[derive(Default)]
pub struct Ahead {
    /// How many to keep.
    want: usize,
    /// Forked (their requests sent), oldest first.
    ready: VecDeque<Process>,
}

impl Process {
    /// Keeps `n` processes forked ahead of [`Process::fork`] (0: none, the
    /// default): they are forked now, each fork hands out the oldest and
    /// forks a replacement at once, and sending this process anything
    /// replaces them all (see the module documentation). Lowering `n`
    /// lets the extra ones exit. `EINVAL` above [`MAX`].
    pub fn fork_ahead(&self, n: usize) -> Result<()> {
        if n > MAX {
            return Err(Error::new(
                Errno::EINVAL,
                format!("fork_ahead: {n} processes is more than the {MAX} a template keeps ahead"),
            ));
        }
        let mut a = lock(&self.ahead);
        a.want = n;
        a.ready.truncate(n);
        self.fill(&mut a).map_err(|e| e.context("fork_ahead"))
    }

    /// A process forked ahead, with its replacement forked; None when
    /// none is kept.
    pub(super) fn take_ahead(&self) -> Result<Option<Process>> {
        let mut a = lock(&self.ahead);
        if a.want == 0 {
            return Ok(None);
        }
        let p = match a.ready.pop_front() {
            Some(p) => p,
            None => self.fork_now()?,
        };
        self.fill(&mut a)?;
        Ok(Some(p))
    }

    /// Something was sent to this process: the processes forked ahead,
    /// copies of it as it was, are let go (they read EOF and exit), and
    /// new ones are forked behind what was sent.
    pub(super) fn renew_ahead(&self) -> Result<()> {
        let mut a = lock(&self.ahead);
        if a.want == 0 {
            return Ok(());
        }
        a.ready.clear();
        self.fill(&mut a)
    }

    fn fill(&self, a: &mut Ahead) -> Result<()> {
        while a.ready.len() < a.want {
            let p = self.fork_now()?;
            p.materialize()?;
            a.ready.push_back(p);
        }
        Ok(())
    }
}
