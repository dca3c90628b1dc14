//! Parsing what the child functions of tests/c/children.c write back:
//! the binary dump (`dump_args`, `digest_args`) and the text report
//! (`rl_report`), and checking arguments against what was sent.

use std::collections::{BTreeMap, HashMap};

use super::fds::dev_ino;

/// FNV-1a 64, as children.c computes it.
pub fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

// Flags reported by children.c.
pub const S_NUL_AFTER: u8 = 1;
pub const S_FD_MINUS1: u8 = 2;
pub const S_DATA_SET: u8 = 4;
pub const S_ALL: u8 = S_NUL_AFTER | S_FD_MINUS1 | S_DATA_SET;
pub const F_NO_DATA: u8 = 1;
pub const F_CLOEXEC: u8 = 2;
pub const F_FSTAT_OK: u8 = 4;
pub const C_BLOCKING: u8 = 1;
pub const C_CLOEXEC: u8 = 2;
pub const C_UNIX_STREAM: u8 = 4;

/// One argument as a child saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Str {
        flags: u8,
        data: Vec<u8>,
    },
    Digest {
        flags: u8,
        len: u64,
        hash: u64,
    },
    Fd {
        flags: u8,
        fd: i32,
        dev: u64,
        ino: u64,
    },
}

impl Seen {
    /// The bytes of a string argument (panics otherwise).
    pub fn str(&self) -> &[u8] {
        match self {
            Seen::Str { data, .. } => data,
            o => panic!("expected a string, got {o:?}"),
        }
    }
    /// `(dev, ino)` of an fd argument (panics otherwise).
    pub fn file(&self) -> (u64, u64) {
        match self {
            Seen::Fd { dev, ino, .. } => (*dev, *ino),
            o => panic!("expected an fd, got {o:?}"),
        }
    }
}

/// What `dump_args`/`digest_args` wrote.
#[derive(Debug)]
pub struct Dump {
    pub comm_fd: i32,
    pub comm_flags: u8,
    pub args: Vec<Seen>,
}

/// A little-endian reader over a child's report.
pub struct Rd<'a>(pub &'a [u8]);

impl Rd<'_> {
    pub fn take(&mut self, n: usize) -> &[u8] {
        assert!(
            self.0.len() >= n,
            "report truncated: want {n} bytes, have {}",
            self.0.len()
        );
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    pub fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// One serialised dump; `digest` for `digest_args`.
    pub fn dump(&mut self, digest: bool) -> Dump {
        assert_eq!(self.take(4), b"AFD1", "not a dump");
        let n = self.u32() as usize;
        let comm_fd = self.u32() as i32;
        let comm_flags = self.u8();
        let mut args = Vec::with_capacity(n);
        for _ in 0..n {
            let kind = self.u8();
            let flags = self.u8();
            args.push(match kind {
                0 => {
                    let len = self.u64();
                    if digest {
                        Seen::Digest {
                            flags,
                            len,
                            hash: self.u64(),
                        }
                    } else {
                        Seen::Str {
                            flags,
                            data: self.take(len as usize).to_vec(),
                        }
                    }
                }
                1 => Seen::Fd {
                    flags,
                    fd: self.u32() as i32,
                    dev: self.u64(),
                    ino: self.u64(),
                },
                k => panic!("unknown kind {k}"),
            });
        }
        Dump {
            comm_fd,
            comm_flags,
            args,
        }
    }
}

/// Parses a whole `dump_args` report.
pub fn parse_dump(b: &[u8]) -> Dump {
    let mut r = Rd(b);
    let d = r.dump(false);
    assert!(r.is_empty(), "{} bytes after the dump", r.0.len());
    d
}

/// Parses a whole `digest_args` report.
pub fn parse_digest(b: &[u8]) -> Dump {
    let mut r = Rd(b);
    let d = r.dump(true);
    assert!(r.is_empty(), "{} bytes after the dump", r.0.len());
    d
}

/// What the test expects one argument to look like: a string, or an fd
/// for the file with this `(st_dev, st_ino)`.
pub enum Want<'a> {
    S(&'a [u8]),
    I(u64, u64),
}

/// The expectation for an fd argument referring to the same file as `fd`.
pub fn wfd(fd: impl std::os::fd::AsFd) -> Want<'static> {
    let (d, i) = dev_ino(fd.as_fd());
    Want::I(d, i)
}

/// Asserts that `args` are exactly `want`, in order: strings byte for byte
/// and NUL-terminated, fds the same open files (by dev/ino) and
/// close-on-exec.
pub fn assert_args(args: &[Seen], want: &[Want<'_>]) {
    assert_eq!(args.len(), want.len(), "number of arguments");
    for (i, (s, w)) in args.iter().zip(want).enumerate() {
        match (s, w) {
            (Seen::Str { flags, data }, Want::S(b)) => {
                assert!(
                    data == b,
                    "arg {i}: string differs (len {} vs {})",
                    data.len(),
                    b.len()
                );
                assert_eq!(
                    *flags, S_ALL,
                    "arg {i}: string flags (NUL after, fd -1, data set)"
                );
            }
            (
                Seen::Fd {
                    flags, dev, ino, ..
                },
                Want::I(d, n),
            ) => {
                assert_eq!((*dev, *ino), (*d, *n), "arg {i}: a different file");
                assert_eq!(
                    *flags,
                    F_NO_DATA | F_CLOEXEC | F_FSTAT_OK,
                    "arg {i}: fd flags"
                );
            }
            (s, Want::S(_)) => panic!("arg {i}: expected a string, got {s:?}"),
            (s, Want::I(..)) => panic!("arg {i}: expected an fd, got {s:?}"),
        }
    }
}

/// One argument as `rl_report` saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RArg {
    S(String),
    F { fd: i32, cloexec: bool },
}

/// What `rl_report` wrote.
#[derive(Debug, Default)]
pub struct Report {
    pub pid: i32,
    pub ppid: i32,
    pub uid: u32,
    pub comm: i32,
    pub comm_cloexec: bool,
    pub args: Vec<RArg>,
    /// Open fds and what they point to.
    pub open: BTreeMap<i32, String>,
    /// SigPnd, ShdPnd, SigBlk, SigIgn, SigCgt.
    pub sig: HashMap<String, u64>,
}

impl Report {
    pub fn sig(&self, k: &str) -> u64 {
        *self
            .sig
            .get(k)
            .unwrap_or_else(|| panic!("no {k} in the report"))
    }
}

/// Parses a whole `rl_report` report.
pub fn parse_report(text: &str) -> Report {
    let mut r = Report::default();
    for line in text.lines() {
        let mut w = line.splitn(2, ' ');
        let key = w.next().unwrap();
        let rest = w.next().unwrap_or("");
        let ce = |s: &str| s.ends_with("cloexec=1");
        match key {
            "pid" => r.pid = rest.parse().unwrap(),
            "ppid" => r.ppid = rest.parse().unwrap(),
            "uid" => r.uid = rest.parse().unwrap(),
            "comm" => {
                r.comm = rest.split(' ').next().unwrap().parse().unwrap();
                r.comm_cloexec = ce(rest);
            }
            "arg" => {
                let f: Vec<&str> = rest.splitn(4, ' ').collect();
                if f[1] == "S" {
                    r.args.push(RArg::S(f.get(3).unwrap_or(&"").to_string()));
                } else {
                    r.args.push(RArg::F {
                        fd: f[2].parse().unwrap(),
                        cloexec: ce(rest),
                    });
                }
            }
            "open" => {
                let (fd, target) = rest.split_once(' ').unwrap_or((rest, ""));
                r.open.insert(fd.parse().unwrap(), target.to_string());
            }
            "sig" => {
                let (k, v) = rest.split_once(' ').unwrap();
                r.sig
                    .insert(k.to_string(), u64::from_str_radix(v, 16).unwrap());
            }
            _ => panic!("unexpected report line {line:?}"),
        }
    }
    r
}
