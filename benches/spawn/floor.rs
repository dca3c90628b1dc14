//! The floor template (benches/floor.c): building it, starting it, and sending it fork and spawn requests.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::sys::{cc, manifest_dir, pair};

pub struct Floor {
    ctl: OwnedFd,
    pub child: std::process::Child,
    pub linkage: &'static str,
}

/// Compiles benches/floor.c: statically if the toolchain can, or (with
/// `dynamic`) linked dynamically like anyfork-serve, which must be to load
/// libraries.
fn build_floor(out_dir: &Path, dynamic: bool) -> (PathBuf, &'static str) {
    let src = manifest_dir().join("benches/floor.c");
    let out = out_dir.join(if dynamic {
        "anyfork-floor-dyn"
    } else {
        "anyfork-floor"
    });
    let cc = cc();
    let skip = usize::from(dynamic);
    for (linkage, flags) in [
        ("static", &["-O2", "-static"][..]),
        ("dynamic", &["-O2"][..]),
    ]
    .into_iter()
    .skip(skip)
    {
        let ok = Command::new(&cc)
            .args(flags)
            .arg("-o")
            .arg(&out)
            .arg(&src)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return (out, linkage);
        }
    }
    panic!("cannot compile {} with {cc}", src.display());
}

impl Floor {
    pub fn start(out_dir: &Path, dynamic: bool) -> Floor {
        let (path, linkage) = build_floor(out_dir, dynamic);
        let (ctl, theirs) = pair(false);
        let child = Command::new(&path)
            .stdin(Stdio::from(theirs))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", path.display()));
        Floor {
            ctl,
            child,
            linkage,
        }
    }

    /// Sends one request, `fork` (b"F") or `spawn` (b"S"), with one end of
    /// a fresh nonblocking socketpair, and returns the other end: its EOF
    /// says the child (F) or the template (S) is done.
    pub fn ask(&self, what: &[u8; 1]) -> OwnedFd {
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
        let (ours, theirs) = pair(true);
        let raw = [theirs.as_raw_fd()];
        let iov = [std::io::IoSlice::new(what)];
        let cmsg = [ControlMessage::ScmRights(&raw)];
        loop {
            match sendmsg::<()>(
                self.ctl.as_raw_fd(),
                &iov,
                &cmsg,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(1) => return ours,
                Err(nix::errno::Errno::EINTR) => continue,
                r => panic!("sending to the floor template: {r:?}"),
            }
        }
    }

    /// Orderly end: the template sees EOF on its control socket and exits.
    pub fn stop(self) {
        let Floor { ctl, mut child, .. } = self;
        drop(ctl);
        let _ = child.wait();
    }
}
