//! The default template: one `anyfork-serve` shared by every thread, spawned
//! on first use and spawned again when it died.

use super::process::Process;
use super::state;
use crate::error::Result;

impl Process {
    /// Forks a new process from the default template, which is spawned on
    /// first use and again whenever it died.
    pub fn new() -> Result<Process> {
        let mut slot = state::default_template();
        let mut retried = false;
        loop {
            // Forks are sent lazily (with the run), so a template that died
            // is looked for here, where a new one can still take over.
            if slot.as_ref().is_none_or(Process::hung_up) {
                *slot = Some(
                    Process::new_exec().map_err(|e| e.context("starting the default template"))?,
                );
            }
            let t = slot.as_ref().expect("ensured above");
            match t.fork() {
                Ok(p) => return Ok(p),
                // The template died since we last wrote to it: a new one
                // takes this fork; what was queued for the old one failed.
                Err(_) if t.is_dead() && !retried => retried = true,
                Err(e) => return Err(e),
            }
        }
    }
}
