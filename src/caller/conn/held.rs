//! Forks held back: a fork request waits until the next command to the
//! template or to the child, so that a fork followed by the child's run
//! (or exec) goes out as one frame; and when each request was written.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::{Conn, State};
use crate::caller::outbox::Later;
use crate::caller::record::Record;
use crate::error::{Errno, Error, Result};
use crate::protocol::wire::{self, Tag};

impl Conn {
    /// Asks the process at the other end to fork: `child` is the new
    /// process's connection (without a socket yet), `rec` its record.
    ///
    /// The fork is held back until the next command to this process or to
    /// the child: when that is the child's run, one frame asks for both
    /// (fork and enter the function), which spares a write here and two
    /// reads in the child. Any other command sends the plain fork first,
    /// so the order of commands is what the caller wrote.
    ///
    /// `child` is lazy: the new process's socketpair is made only when its
    /// fork is written, so a process that execs detached needs none and
    /// requests waiting in a full queue hold no fds.
    pub fn fork(self: &Arc<Self>, child: Arc<Conn>, rec: Arc<Record>) -> Result<()> {
        let mut st = self.lock();
        self.check(&st)?;
        self.flush_pending(&mut st)?;
        st.forked = true;
        st.pending = Some((child, rec));
        // A caller that creates without dispatching still has its reports
        // read now and then, so neither socket buffer fills with them.
        st.unread += 1;
        if st.unread >= 16 {
            st.unread = 0;
            self.read_reports(&mut st);
        }
        self.settle(&mut st);
        Ok(())
    }

    /// Sends the held-back fork, if any, as a plain fork. The child's
    /// socketpair is made when the frame is written; the child's commands
    /// wait in its connection until then.
    pub(super) fn flush_pending(self: &Arc<Self>, st: &mut State) -> Result<()> {
        let Some((child, rec, pair)) = Self::take_pending(st)? else {
            return Ok(());
        };
        let frame = wire::header(Tag::Fork, 0);
        if let Some((ours, theirs)) = pair {
            child.attach(ours);
            return self.send_fork(st, rec, |st| self.write_locked(st, &[&frame], vec![theirs]));
        }
        let mut guard = Unforked {
            child: Some(child),
            rec: rec.clone(),
        };
        let make: Later = Box::new(move || {
            let child = guard.child.take().expect("made once");
            match socket_pair() {
                Ok((ours, theirs)) => {
                    child.attach(ours);
                    Some(theirs)
                }
                Err(e) => {
                    child.fail(&mut child.lock(), e.clone());
                    guard.rec.set_pid(Err(e));
                    None
                }
            }
        });
        self.send_fork(st, rec, |st| self.write_later(st, &[&frame], make))
    }

    /// Sends the held-back fork as `frame` (a fork that also runs or
    /// execs): the child gets no commands of ours, so its socketpair is
    /// made only when the frame is written, and the caller's end goes to
    /// its record (for the run callback) from there.
    fn send_pending_with_run(self: &Arc<Self>, st: &mut State, frame: &[&[u8]]) -> Result<()> {
        let Some((_child, rec, pair)) = Self::take_pending(st)? else {
            return Ok(());
        };
        if let Some((ours, theirs)) = pair {
            // Our end goes to the record (for the run callback) once the
            // frame is written.
            self.send_fork(st, rec.clone(), |st| {
                self.write_locked(st, frame, vec![theirs])
            })?;
            rec.sock_ready(ours);
            return Ok(());
        }
        let r = rec.clone();
        let make: Later = Box::new(move || match socket_pair() {
            Ok((ours, theirs)) => {
                r.sock_ready(ours);
                Some(theirs)
            }
            Err(e) => {
                r.set_pid(Err(e.clone()));
                r.fail_run(e);
                None
            }
        });
        self.send_fork(st, rec, |st| self.write_later(st, frame, make))
    }

    /// Takes the held-back fork, if any, to send it: the child's
    /// connection, its record, and its socketpair (ours, theirs) if the
    /// request is written at once (nothing queued before it, the socket
    /// there), made now so that a caller out of fds hears `EMFILE` from
    /// the call that sends it. Then nothing is sent and the fork stays
    /// held. Without a pair the request waits in the queue, and its pair
    /// is made when it is written.
    fn take_pending(st: &mut State) -> Result<Option<Held>> {
        let Some((child, rec)) = st.pending.take() else {
            return Ok(None);
        };
        if !st.out.is_empty() || st.fd.is_none() {
            return Ok(Some((child, rec, None)));
        }
        match socket_pair() {
            Ok(pair) => Ok(Some((child, rec, Some(pair)))),
            Err(e) => {
                st.pending = Some((child, rec));
                Err(e)
            }
        }
    }

    /// True when the fork held back is the one of `rec`.
    pub(super) fn holds(st: &State, rec: &Arc<Record>) -> bool {
        matches!(&st.pending, Some((_, r)) if Arc::ptr_eq(r, rec))
    }

    /// Sends the fork request of `rec` with `write` (which writes or queues
    /// its frame): `rec` joins the forks awaiting a pid report and hears
    /// when the request has been written.
    fn send_fork(
        self: &Arc<Self>,
        st: &mut State,
        rec: Arc<Record>,
        write: impl FnOnce(&mut State) -> Result<()>,
    ) -> Result<()> {
        st.forks.push_back(rec.clone());
        write(st)?;
        self.track_fork(st, rec);
        Ok(())
    }

    /// Tells `rec` when its fork request has been written.
    fn track_fork(&self, st: &mut State, rec: Arc<Record>) {
        let mark = st.out.mark();
        if st.out.past(mark) {
            rec.fork_sent();
        } else {
            st.unwritten.push_back((mark, rec));
        }
    }

    /// Tells the records whose fork requests were written since.
    pub(super) fn forks_written(&self, st: &mut State) {
        while let Some((mark, _)) = st.unwritten.front() {
            if !st.out.past(*mark) {
                break;
            }
            let (_, rec) = st.unwritten.pop_front().expect("checked above");
            rec.fork_sent();
        }
    }

    /// The child whose record is `rec` needs its process now: sends its
    /// fork if it is still held back.
    pub fn materialize(self: &Arc<Self>, rec: &Arc<Record>) -> Result<()> {
        let mut st = self.lock();
        if !Self::holds(&st, rec) {
            return Ok(());
        }
        self.check(&st)?;
        self.flush_pending(&mut st)?;
        self.settle(&mut st);
        Ok(())
    }

    /// The child whose record is `rec` runs `name` before anything else was
    /// sent to it: if its fork is still held back, one fork-and-run frame
    /// does both and this returns true; false means the fork went out
    /// already and the child needs an ordinary run.
    ///
    /// `detached`: the caller wants no socket to the process (it would
    /// close its end at once). The frame then goes without one, and no
    /// socketpair is made.
    pub fn fork_run(
        self: &Arc<Self>,
        rec: &Arc<Record>,
        name: &[u8],
        detached: bool,
    ) -> Result<bool> {
        let head = wire::fork_run_head(name.len(), detached);
        self.send_held(rec, &[&head, name], !detached)
    }

    /// The child whose record is `rec` execs `argv` before anything else
    /// was sent to it: if its fork is still held back, one spawn frame asks
    /// for both (the template may then spawn without copying itself) and
    /// this returns true; false means the fork went out already.
    ///
    /// `detached`: the caller wants no socket to the program. The frame
    /// then goes without one, and no socketpair is made.
    pub fn fork_exec(
        self: &Arc<Self>,
        rec: &Arc<Record>,
        argv: &[&[u8]],
        detached: bool,
    ) -> Result<bool> {
        if !Self::holds(&self.lock(), rec) {
            return Ok(false);
        }
        let mut frame = Vec::new();
        wire::push_spawn(&mut frame, argv, detached)
            .ok_or_else(|| Error::new(Errno::E2BIG, "exec: argv exceeds the 4 GiB frame limit"))?;
        self.send_held(rec, &[&frame], !detached)
    }

    /// Sends the fork of `rec`, if it is still held back, as `frame` (with
    /// the new process's socket unless `socket` is false); false when it
    /// went out already.
    fn send_held(
        self: &Arc<Self>,
        rec: &Arc<Record>,
        frame: &[&[u8]],
        socket: bool,
    ) -> Result<bool> {
        let mut st = self.lock();
        if !Self::holds(&st, rec) {
            return Ok(false);
        }
        self.check(&st)?;
        if socket {
            self.send_pending_with_run(&mut st, frame)?;
        } else {
            let (_child, rec) = st.pending.take().expect("held, checked above");
            self.send_fork(&mut st, rec, |st| self.write_locked(st, frame, vec![]))?;
        }
        self.settle(&mut st);
        Ok(true)
    }

    /// The child whose record is `rec` was freed before anything was sent
    /// to it: its process is never made.
    pub fn cancel(&self, rec: &Arc<Record>) {
        let mut st = self.lock();
        if Self::holds(&st, rec) {
            st.pending = None;
        }
    }
}

/// A held-back fork taken to be sent: see [`Conn::take_pending`].
type Held = (Arc<Conn>, Arc<Record>, Option<(OwnedFd, OwnedFd)>);

/// A new process's socketpair: the caller's end (nonblocking) and the
/// process's; both close-on-exec.
fn socket_pair() -> Result<(OwnedFd, OwnedFd)> {
    crate::caller::launch::pair("creating the new process's socket (socketpair)")
}

/// A plain fork waiting in a queue: if the queue is dropped before the
/// fork is written (its template went away), the child's connection fails
/// instead of waiting for a socket for ever.
struct Unforked {
    child: Option<Arc<Conn>>,
    rec: Arc<Record>,
}

impl Drop for Unforked {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            let e = Error::new(
                Errno::EPIPE,
                "the template went away before this process was forked",
            );
            child.fail(&mut child.lock(), e.clone());
            self.rec.set_pid(Err(e));
        }
    }
}
