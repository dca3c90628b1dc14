//! Remote templates (`fork_new_remote`): a relay process beside the caller
//! (`anyfork-serve --relay`, see [`crate::remote`]) runs the transport
//! command and reaches `anyfork-serve --stdio` through it; the caller
//! talks to the relay as to any template, and every process forked from
//! it gets a local socket the relay carries over the link.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno as NixErrno;

use super::process::Process;
use crate::error::{Errno, Error, Result};
use crate::protocol::wire;

impl Process {
    /// Starts `argv` (searched in `PATH`; for example `ssh host
    /// anyfork-serve --stdio`) through a relay and returns the remote
    /// template once its `anyfork-serve --stdio` said hello. Blocks until
    /// then (an ssh login); a command that fails or reaches no
    /// `anyfork-serve --stdio` gives an error with its exit status and
    /// what it wrote to stderr.
    pub fn new_remote(argv: &[&[u8]]) -> Result<Process> {
        if argv.is_empty() {
            return Err(Error::new(Errno::EINVAL, "argv is empty"));
        }
        let mut args: Vec<CString> = vec![c"anyfork-serve".into(), c"--relay".into(), c"--".into()];
        for a in argv {
            args.push(
                CString::new(*a)
                    .map_err(|_| Error::new(Errno::EINVAL, "an argv string contains a NUL byte"))?,
            );
        }
        let path = super::locate::serve_path()?;
        let (ours, theirs) = super::launch::pair("creating the relay's socket (socketpair)")?;
        let pid = super::launch::spawn(&path, &args, &ours, &theirs, false)?;
        drop(theirs);
        if let Err(e) = outcome(&ours) {
            drop(ours);
            crate::sys::proc::reap_blocking(pid);
            return Err(e);
        }
        let mut p = Process::direct_child(ours, pid)?;
        p.remote = true;
        let mut hello = Vec::new();
        wire::push_hello(&mut hello);
        p.send_frames(&hello)?;
        Ok(p)
    }
}

/// Reads the relay's verdict on the start: `+`, or `-` and why not.
fn outcome(sock: &OwnedFd) -> Result<()> {
    let mut first = [0u8; 1];
    read_exact(sock, &mut first)?;
    if first[0] == b'+' {
        return Ok(());
    }
    let mut len = [0u8; 4];
    read_exact(sock, &mut len)?;
    let mut msg = vec![0u8; u32::from_le_bytes(len).min(64 * 1024) as usize];
    read_exact(sock, &mut msg)?;
    Err(Error::new(
        Errno::ECONNREFUSED,
        String::from_utf8_lossy(&msg).into_owned(),
    ))
}

/// Reads exactly `buf.len()` bytes from the (nonblocking) socket.
fn read_exact(sock: &OwnedFd, buf: &mut [u8]) -> Result<()> {
    let mut at = 0;
    while at < buf.len() {
        match nix::unistd::read(sock, &mut buf[at..]) {
            Ok(0) => {
                return Err(Error::new(
                    Errno::EPIPE,
                    "the remote template's relay (anyfork-serve --relay) exited before \
                     reporting whether the remote side started",
                ));
            }
            Ok(n) => at += n,
            Err(NixErrno::EAGAIN) => {
                let mut p = [libc::pollfd {
                    fd: sock.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                }];
                let ms = Duration::from_secs(1).as_millis() as libc::c_int;
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(p.as_mut_ptr(), 1, ms) };
            }
            Err(NixErrno::EINTR) => {}
            Err(e) => return Err(Error::sys(e, "reading the relay's report")),
        }
    }
    Ok(())
}
