//! Signal dispositions a server found, and the clean signal state a new
//! process gets before user code runs.

use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};

/// Signals this process found with a non-default disposition.
pub struct SignalState {
    handled: Vec<libc::c_int>,
}

impl SignalState {
    /// Records which signals are not at their default disposition; `scan`
    /// false trusts that exec left them all at default.
    pub fn capture(scan: bool) -> SignalState {
        let mut handled = Vec::new();
        if scan {
            for sig in 1..libc::SIGRTMAX() {
                if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                    continue;
                }
                // SAFETY: queries the disposition into a zeroed struct
                // (real-time signals have no nix `Signal`, hence libc).
                unsafe {
                    let mut old: libc::sigaction = std::mem::zeroed();
                    if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                        && old.sa_sigaction != libc::SIG_DFL
                    {
                        handled.push(sig);
                    }
                }
            }
        }
        SignalState { handled }
    }

    /// The signals found away from their default disposition.
    pub fn handled(&self) -> &[libc::c_int] {
        &self.handled
    }

    /// Gives every signal found handled its default disposition and
    /// empties the mask.
    pub fn reset(&self) {
        for &sig in &self.handled {
            // SAFETY: SIG_DFL installs no handler, so nothing of ours can
            // run in signal context.
            unsafe {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    }
}

/// Empties the signal mask, leaving dispositions as they are (a process
/// an interpreter's own fork made keeps that interpreter's handlers).
pub fn clear_mask() {
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Blocks SIGCHLD, for a signalfd to take it.
pub fn block_sigchld() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    set
}
