//! The warm pool: children a template forked ahead of time, each waiting
//! on its own socket (its leash) for the fork request it will serve.
//!
//! A fork request that arrives while a child waits is handed to it (the
//! request's frame and fd, sent down the leash) instead of forking: the
//! fork already happened while the template was idle. A waiting child was
//! copied from the template as it was then, so anything that changes the
//! template (a string, an fd, a require, an eval) dismisses the waiting
//! children; the template forks new ones when it next goes idle.
//!
//! Children of the pool are reported to the caller only once handed a
//! request (pid, then exit); a dismissed child's exit is not reported.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

/// Most children a pool keeps waiting.
pub(crate) const MAX: usize = 64;

/// How long after a hand-over the template waits before it forks a
/// replacement: the child just handed a request (and the caller it
/// answers) should not have to share the CPUs with a fork of a large
/// template, which on a busy machine costs them a scheduler tick.
const REFILL_DELAY: Duration = Duration::from_millis(2);

/// A hand-over less than this long after the previous one is part of a
/// burst: the replacement is forked at once. Held back, it would come too
/// late for the requests that follow, which would then find the pool
/// empty and wait for a fork each (creations one after the other ran at
/// half the pool's speed).
const BURST_GAP: Duration = Duration::from_millis(20);

#[derive(Default)]
pub struct Pool {
    /// How many children to keep waiting.
    pub want: usize,
    /// Waiting children, oldest first: pid and the template's end of the
    /// leash.
    idle: VecDeque<(libc::pid_t, OwnedFd)>,
    /// Dismissed children not yet reaped: their exits are not reported.
    quiet: Vec<libc::pid_t>,
    /// The last hand-over, while it holds back the refill.
    handed: Option<Instant>,
    /// The last hand-over (see [`BURST_GAP`]).
    last: Option<Instant>,
}

impl Pool {
    /// True when fewer children wait than wanted.
    pub fn short(&self) -> bool {
        self.idle.len() < self.want
    }

    /// When short: how long until a replacement may be forked (zero:
    /// now). `None` when the pool is full.
    pub fn refill_in(&mut self) -> Option<Duration> {
        if !self.short() {
            return None;
        }
        let left = self
            .handed
            .map_or(Duration::ZERO, |t| REFILL_DELAY.saturating_sub(t.elapsed()));
        if left.is_zero() {
            self.handed = None;
        }
        Some(left)
    }

    /// How many children wait.
    pub fn len(&self) -> usize {
        self.idle.len()
    }

    /// Adds a child that now waits on `leash`.
    pub fn add(&mut self, pid: libc::pid_t, leash: OwnedFd) {
        self.idle.push_back((pid, leash));
    }

    /// Closes every leash (a waiting child exits at EOF); their exits
    /// will not be reported.
    pub fn dismiss(&mut self) {
        self.quiet.extend(self.idle.drain(..).map(|(pid, _)| pid));
    }

    /// Closes every leash and returns the pids of all dismissed children
    /// not yet reaped, for the caller to reap itself.
    pub fn dismiss_all(&mut self) -> Vec<libc::pid_t> {
        self.dismiss();
        std::mem::take(&mut self.quiet)
    }

    /// Forgets the pool in a new process: the leashes are the template's.
    pub fn forget(&mut self) {
        self.idle.clear();
        self.quiet.clear();
        self.want = 0;
    }

    /// Hands the fork request (its `head`er and `payload` as received)
    /// with its `fd` to a waiting child; its pid, or `None` when no child
    /// could take it (none waits, or each one tried had died).
    pub fn hand_over(&mut self, head: &[u8], payload: &[u8], fd: RawFd) -> Option<libc::pid_t> {
        let iov = [std::io::IoSlice::new(head), std::io::IoSlice::new(payload)];
        let fds = [fd];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        // The oldest first: the youngest may still be in its after-fork
        // work (an interpreter's takes most of a millisecond), which the
        // request would wait for.
        while let Some((pid, leash)) = self.idle.pop_front() {
            // The leash is empty (nothing else is ever sent on it), so a
            // small frame goes whole or not at all.
            match sendmsg::<()>(leash.as_raw_fd(), &iov, &cmsg, flags, None) {
                Ok(n) if n == head.len() + payload.len() => {
                    let now = Instant::now();
                    let burst = self.last.is_some_and(|t| now - t < BURST_GAP);
                    self.handed = (!burst).then_some(now);
                    self.last = Some(now);
                    return Some(pid);
                }
                _ => self.quiet.push(pid),
            }
        }
        None
    }

    /// True when the exit of `pid` is not to be reported (a dismissed or
    /// never used child); forgets it either way.
    pub fn silent_exit(&mut self, pid: libc::pid_t) -> bool {
        if let Some(i) = self.quiet.iter().position(|&p| p == pid) {
            self.quiet.swap_remove(i);
            return true;
        }
        if let Some(i) = self.idle.iter().position(|(p, _)| *p == pid) {
            self.idle.remove(i);
            return true;
        }
        false
    }
}
