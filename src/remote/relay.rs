//! The relay beside the caller (`anyfork-serve --relay -- CMD ARGS…`):
//! starts the transport command, checks the hello of the
//! `anyfork-serve --stdio` it reaches, tells the caller the outcome, then
//! carries the caller's sockets over the link until all are closed or the
//! link drops. A process of its own, so the link makes progress while the
//! caller blocks in a read of a remote process's socket.
//!
//! The outcome the caller reads first on its socket: `+`, or `-`, a
//! little-endian `u32` length and a message saying why the start failed.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::spawn::{PosixSpawnFileActions, posix_spawnp};
use nix::sys::signal::{SigHandler, Signal, kill, signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::link;
use super::link::check_versions;
use super::mux::{Ended, Mux, Side};
use super::watch::Watch;
use crate::server::exit::exit;

/// How long the other end has to say hello (ssh's own start included).
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a transport may take to exit once its link is closed.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// `main` of `anyfork-serve --relay -- CMD ARGS…`; `sock` is the caller's.
pub fn main(sock: OwnedFd, argv: Vec<CString>) -> ! {
    // Nothing of ours reads the caller's stdin or writes its stdout; a
    // pipe there must see its end when the caller's own copies close.
    crate::sys::fd::null_stdin_stdout();
    // Writes to a transport that is gone fail with EPIPE instead.
    // SAFETY: setting a disposition to SIG_IGN runs no code.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) };
    let shown = shell_words(&argv);
    match start(&argv, &shown) {
        Ok((mut t, inbuf)) => {
            tell(&sock, b"+");
            t.watch.pass_on();
            let mut mux = Mux::new(Side::Caller, t.input, t.output, sock, inbuf, true);
            mux.watch(t.watch);
            let ended = mux.run();
            match ended {
                Ended::Drained => {}
                Ended::Dropped(why) | Ended::Corrupt(why) => {
                    eprintln!(
                        "anyfork[{}]: the link to the remote template ({shown}) ended: {why}",
                        std::process::id()
                    );
                    mux.abandon();
                }
            }
            drop(mux);
            finish(t.pid, EXIT_GRACE);
            exit(0)
        }
        Err(msg) => {
            let mut b = vec![b'-'];
            b.extend_from_slice(&(msg.len() as u32).to_le_bytes());
            b.extend_from_slice(msg.as_bytes());
            tell(&sock, &b);
            exit(1)
        }
    }
}

/// The started transport, between its start and the link.
struct Transport {
    pid: Pid,
    /// Its stdin (our output) and stdout (our input).
    input: OwnedFd,
    output: OwnedFd,
    watch: Watch,
}

/// Starts the transport and waits for the other end's hello; returns the
/// bytes that followed it. On failure, why, with what it printed.
fn start(argv: &[CString], shown: &str) -> Result<(Transport, Vec<u8>), String> {
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("creating a pipe for the transport: {e}"))
    };
    let (in_r, in_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let pid = spawn(argv, &in_r, &out_w, &err_w)
        .map_err(|e| format!("cannot start the remote template's command {shown}: {e}"))?;
    drop((in_r, out_w, err_w));
    crate::sys::fd::set_nonblocking(out_r.as_fd());
    let mut t = Transport {
        pid,
        input: out_r,
        output: in_w,
        watch: Watch::new(err_r),
    };
    let mut hello = Vec::new();
    link::push_hello(&mut hello);
    // A pipe takes these few bytes at once; a transport already gone
    // shows as EOF below.
    let _ = nix::unistd::write(&t.output, &hello);
    let deadline = Instant::now() + HELLO_TIMEOUT;
    let mut inbuf = Vec::new();
    let mut watching = true;
    loop {
        match link::split(&inbuf) {
            Ok(Some((link::Frame::Hello { link, wire }, n))) => {
                check_versions(link, wire).map_err(|v| format!("{shown}: {v}"))?;
                inbuf.drain(..n);
                return Ok((t, inbuf));
            }
            Ok(None) => {}
            Ok(Some(_)) | Err(_) => {
                return Err(failed(
                    &mut t,
                    shown,
                    &format!(
                        "is not anyfork-serve --stdio: it wrote {:?} where the anyfork hello belongs",
                        String::from_utf8_lossy(&inbuf[..inbuf.len().min(64)])
                    ),
                ));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(failed(
                &mut t,
                shown,
                &format!(
                    "did not answer within {} s (waiting for a password or a host key \
                     confirmation? with ssh, use -o BatchMode=yes)",
                    HELLO_TIMEOUT.as_secs()
                ),
            ));
        }
        let mut polls = [
            libc::pollfd {
                fd: t.input.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if watching { t.watch.fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ms = left.as_millis().min(1000) as libc::c_int;
        // SAFETY: `polls` is a valid array of two pollfd.
        if unsafe { libc::poll(polls.as_mut_ptr(), 2, ms) } < 0 && Errno::last() != Errno::EINTR {
            return Err(format!("poll failed: {}", Errno::last()));
        }
        if polls[1].revents != 0 && !t.watch.pump() {
            watching = false;
        }
        if polls[0].revents != 0 {
            let mut buf = [0u8; 4096];
            match nix::unistd::read(&t.input, &mut buf) {
                Ok(0) | Err(Errno::EIO) | Err(Errno::EBADF) => {
                    return Err(failed(&mut t, shown, "ended before the anyfork hello"));
                }
                Ok(n) => inbuf.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
    }
}

/// The error for a transport that did not become a link: what happened,
/// its exit status (it is stopped if still running) and what it said.
fn failed(t: &mut Transport, shown: &str, what: &str) -> String {
    let status = finish(t.pid, Duration::from_secs(2));
    while t.watch.pump() {}
    let hint = match status {
        Some(WaitStatus::Exited(_, 127)) => {
            " (127: command not found: is anyfork-serve installed on the remote host, \
             at that path or on its PATH?)"
        }
        Some(WaitStatus::Exited(_, 255)) if shown.starts_with("`ssh ") => {
            " (255: ssh could not connect or log in)"
        }
        _ => "",
    };
    let status = match status {
        Some(WaitStatus::Exited(_, c)) => format!("; it exited with status {c}{hint}"),
        Some(WaitStatus::Signaled(_, s, _)) => format!("; it was killed by {s}"),
        _ => String::new(),
    };
    let said = t.watch.said();
    let said = if said.is_empty() {
        String::new()
    } else {
        format!("; it said: {said}")
    };
    format!("remote template {shown} {what}{status}{said}")
}

/// Waits up to `grace` for the transport to exit, then kills it; its
/// status when it could be had.
fn finish(pid: Pid, grace: Duration) -> Option<WaitStatus> {
    let deadline = Instant::now() + grace;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
            Ok(s) => return Some(s),
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            let _ = kill(pid, Signal::SIGKILL);
            return waitpid(pid, None).ok();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Starts `argv` (searched in `PATH`) with the pipes as its 0, 1 and 2.
fn spawn(
    argv: &[CString],
    stdin: &OwnedFd,
    stdout: &OwnedFd,
    stderr: &OwnedFd,
) -> nix::Result<Pid> {
    let mut fa = PosixSpawnFileActions::init()?;
    fa.add_dup2(stdin.as_raw_fd(), 0)?;
    fa.add_dup2(stdout.as_raw_fd(), 1)?;
    fa.add_dup2(stderr.as_raw_fd(), 2)?;
    let attr = crate::sys::spawn::clean_signals()?;
    let env = crate::sys::spawn::environment(None);
    posix_spawnp(&argv[0], &fa, &attr, argv, &env)
}

/// Writes all of `b` to the caller's socket (it is blocking).
fn tell(sock: &OwnedFd, mut b: &[u8]) {
    while !b.is_empty() {
        match nix::sys::socket::send(
            sock.as_raw_fd(),
            b,
            nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(n) => b = &b[n..],
            Err(Errno::EINTR) => {}
            Err(_) => exit(1),
        }
    }
}

/// The command as a user would type it, for messages.
fn shell_words(argv: &[CString]) -> String {
    let words: Vec<String> = argv
        .iter()
        .map(|a| {
            let s = a.to_string_lossy();
            if !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c))
            {
                s.into_owned()
            } else {
                format!("'{}'", s.replace('\'', r"'\''"))
            }
        })
        .collect();
    format!("`{}`", words.join(" "))
}
