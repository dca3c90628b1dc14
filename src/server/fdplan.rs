//! Where a program's fds come from, for the spawn path and the
//! `anyfork_exec` builtin alike: the fds a process received become its
//! fds 0, 1, 2, … in order, and the comm socket is copied to the fds
//! `anyfork_comm_fd` asked for.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// A plan of `dup2`s whose sources no `dup2` of the plan overwrites.
pub struct FdPlan {
    /// Target `i` gets `sources[i]`.
    pub sources: Vec<RawFd>,
    /// The comm socket, where no target is (a spawn that asked for no
    /// copy of it may have none).
    pub comm: Option<RawFd>,
    /// Fds (bit N = fd N) that get a copy of `comm`.
    pub comm_to: u64,
    /// The first fd above the standard ones and the sources' targets:
    /// from here up, only copies of `comm` stay open across the exec.
    pub first_free: RawFd,
    /// No fd at or above this is a target.
    pub floor: RawFd,
    /// Copies made to move sources out of the targets' way (close-on-exec,
    /// closed when the plan is dropped).
    _lifted: Vec<OwnedFd>,
}

impl FdPlan {
    /// Plans for the received fds `fds`, the comm socket `comm` and the
    /// comm copies `comm_to`. A source below the floor moves above it
    /// first; the error names the fd that could not move.
    pub fn new(
        fds: &[RawFd],
        comm: Option<RawFd>,
        comm_to: u64,
    ) -> Result<FdPlan, (RawFd, nix::Error)> {
        let top = 64 - comm_to.leading_zeros() as RawFd;
        let floor = (fds.len() as RawFd).max(top).max(3);
        let mut lifted = Vec::new();
        let mut lift = |fd: RawFd| -> Result<RawFd, (RawFd, nix::Error)> {
            if fd >= floor {
                return Ok(fd);
            }
            // SAFETY: duplicates an fd the server holds; the copy is owned
            // by the plan.
            let hi = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, floor) };
            if hi < 0 {
                return Err((fd, crate::error::last_errno()));
            }
            // SAFETY: a fresh fd that nothing else owns.
            lifted.push(unsafe { OwnedFd::from_raw_fd(hi) });
            Ok(hi)
        };
        let sources = fds.iter().map(|&fd| lift(fd)).collect::<Result<_, _>>()?;
        let comm = comm.map(&mut lift).transpose()?;
        Ok(FdPlan {
            sources,
            comm,
            comm_to,
            first_free: (fds.len() as RawFd).max(3),
            floor,
            _lifted: lifted,
        })
    }

    /// The `(source, target)` pairs that give the received fds their
    /// numbers.
    pub fn moves(&self) -> impl Iterator<Item = (RawFd, RawFd)> + '_ {
        self.sources
            .iter()
            .enumerate()
            .map(|(target, &src)| (src, target as RawFd))
    }

    /// The targets that get a copy of the comm socket.
    pub fn comm_targets(&self) -> impl Iterator<Item = RawFd> + '_ {
        (0..64).filter(|t| self.comm_to & (1 << t) != 0)
    }
}
