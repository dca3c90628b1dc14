//! The default template: one `anyfork-serve` shared by every thread, spawned
//! on first use and spawned again when it died.

use std::sync::Mutex;

use crate::error::Result;
use crate::process::Process;

static DEFAULT: Mutex<Option<Process>> = Mutex::new(None);

/// Forks a process from the default template.
pub fn fork_default() -> Result<Process> {
    let mut slot = DEFAULT.lock().unwrap_or_else(|p| p.into_inner());
    let mut retried = false;
    loop {
        // Forks are sent lazily (with the run), so a template that died is
        // looked for here, where a new one can still take over.
        if slot.as_ref().is_none_or(Process::hung_up) {
            *slot = Some(Process::new_exec()?);
        }
        let t = slot.as_ref().expect("ensured above");
        match t.fork() {
            Ok(p) => return Ok(p),
            // The template died since we last wrote to it: a new one takes
            // this fork; what was queued for the old one has failed.
            Err(_) if t.is_dead() && !retried => retried = true,
            Err(e) => return Err(e),
        }
    }
}

/// In a forked child: drops the parent's default template (only our copy
/// of its socket closes; see [`crate::after_fork`]).
pub fn forget_default() {
    if let Ok(mut slot) = DEFAULT.try_lock() {
        drop(slot.take());
    }
}
