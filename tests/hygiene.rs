//! Issue 6, hygiene: what a new process starts with and what the library
//! leaves alone. Received fds are close-on-exec; a process holds only 0, 1,
//! 2, its socket and what it was sent, whatever the template or the caller
//! had open; processes start with default signal dispositions, an empty
//! mask and nothing pending, whatever the caller had; the library never
//! touches the caller's signal state; no socket has a name; fork_from_fd
//! refuses a peer of another uid unless asked not to.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyfork::Process;
use common::*;

/// Checks a report: the comm socket and every fd argument are
/// close-on-exec, and the open fds are exactly stdio, the comm socket and
/// the fd arguments.
fn assert_clean_fds(r: &Report, stdio: &BTreeSet<i32>, n_fd_args: usize, what: &str) {
    assert!(
        r.comm_cloexec,
        "{what}: the comm socket is not close-on-exec"
    );
    let mut want: BTreeSet<i32> = stdio.clone();
    want.insert(r.comm);
    let mut fd_args = 0;
    for a in &r.args {
        if let RArg::F { fd, cloexec } = a {
            assert!(cloexec, "{what}: received fd {fd} is not close-on-exec");
            want.insert(*fd);
            fd_args += 1;
        }
    }
    assert_eq!(fd_args, n_fd_args, "{what}: {:?}", r.args);
    let open: BTreeSet<i32> = r.open.keys().copied().collect();
    assert_eq!(
        open, want,
        "{what}: the process holds other fds: {:#?}",
        r.open
    );
}

/// Fifty forks queued at once on a stopped template, so that their
/// sockets reach it in a few large batches: each process still holds
/// only its own socket and its own fd, none of its siblings'.
#[test]
fn processes_forked_in_a_batch_hold_only_their_own_fds() {
    let stdio = std_fds();
    let t = new_template();
    let tpid = t.pid().unwrap();
    let shared = memfd("shared");
    let mut t = t;
    t.send_fd(shared.as_fd()).unwrap();
    kill(tpid, libc::SIGSTOP);
    let mut rxs = Vec::new();
    for i in 0..50 {
        let mut k = t.fork().unwrap();
        let own = memfd(&format!("own-{i}"));
        k.send_fd(own.as_fd()).unwrap();
        k.send_arg(format!("{i}").as_bytes()).unwrap();
        rxs.push(run_async(k, "rl_report"));
    }
    kill(tpid, libc::SIGCONT);
    for (i, rx) in rxs.iter().enumerate() {
        let sock = pump(rx, Duration::from_secs(30), "rl_report").unwrap();
        let r = parse_report(&String::from_utf8(common::read_to_eof(sock)).unwrap());
        assert_clean_fds(&r, &stdio, 2, &format!("process {i}"));
        assert_eq!(r.args.last(), Some(&RArg::S(format!("{i}"))));
        let own = r.open.values().filter(|t| t.contains("memfd:own-")).count();
        assert_eq!(own, 1, "process {i}: {:?}", r.open);
        assert!(
            r.open
                .values()
                .any(|t| t.contains(&format!("memfd:own-{i} "))),
            "process {i} got another's fd: {:?}",
            r.open
        );
    }
    // The template itself holds stdio, its socket, its signalfd and the
    // one fd it was sent: nothing of its children.
    let tfds = fds_of(tpid);
    assert_eq!(tfds.len(), stdio.len() + 3, "template fds: {tfds:#?}");
}

/// A process of the default template, and a forked grandchild, with fds
/// sent at every level: every received fd is close-on-exec.
#[test]
fn received_fds_are_close_on_exec_at_every_level() {
    let stdio = std_fds();
    let (a, b, c) = (memfd("a"), memfd("b"), memfd("c"));
    let mut p = new_child();
    p.send_fd(a.as_fd()).unwrap();
    p.send_fd(b.as_fd()).unwrap();
    let r = parse_report(&run_text(p, "rl_report"));
    assert_clean_fds(&r, &stdio, 2, "default template process");

    let mut t = new_template();
    t.send_fd(a.as_fd()).unwrap();
    let mut mid = t.fork().unwrap();
    mid.send_fd(b.as_fd()).unwrap();
    let mut leaf = mid.fork().unwrap();
    leaf.send_fd(c.as_fd()).unwrap();
    let r = parse_report(&run_text(leaf, "rl_report"));
    assert_clean_fds(&r, &stdio, 3, "fork of a fork");
    drop(mid);
}

/// Parses signal_probe's output into (label, report) pairs.
fn probe_reports(out: &str) -> Vec<(String, Report)> {
    let mut v = Vec::new();
    let mut cur: Option<(String, String)> = None;
    for line in out.lines() {
        if let Some(l) = line.strip_prefix("report ") {
            cur = Some((l.to_string(), String::new()));
        } else if line == "end" {
            let (l, text) = cur.take().expect("end without report");
            v.push((l, parse_report(&text)));
        } else if let Some((_, text)) = cur.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    v
}

fn signal_probe(mode: &str) -> Vec<(String, Report)> {
    let exe = build("signal_probe", Kind::Program, &["-rdynamic"]);
    let mut cmd = Command::new(&exe);
    cmd.args([child_lib(), mode]).stdin(Stdio::null());
    let r = common::run_in_session(&mut cmd, Duration::from_secs(60), Duration::from_secs(10));
    assert!(
        r.status.success() && r.leftovers.is_empty(),
        "signal_probe {mode}: {}\n{}\n{}\nleft: {:?}",
        r.status,
        r.stdout,
        r.stderr,
        r.leftovers
    );
    let reports = probe_reports(&r.stdout);
    assert_eq!(reports.len(), 3, "{}", r.stdout);
    reports
}

fn sigs(mask: u64) -> Vec<String> {
    (1..=64)
        .filter(|s| mask & (1u64 << (s - 1)) != 0)
        .map(|s: i32| {
            // SAFETY: strsignal returns a static or thread-local string.
            let name = unsafe { std::ffi::CStr::from_ptr(libc::strsignal(s)) };
            format!("{s} ({})", name.to_string_lossy())
        })
        .collect()
}

/// glibc's internal signals (32 SIGCANCEL, 33 SIGSETXID): glibc's
/// `sigaction` refuses to touch them, and its `posix_spawn` leaves them
/// ignored in every program it starts (the test harness starts the helper
/// programs that way), so they are outside what a process can reset with
/// libc calls; glibc installs its handlers for them when it needs them.
const GLIBC_INTERNAL: u64 = (1 << 31) | (1 << 32);

/// Nothing blocked, nothing pending, only the expected fds: checked for
/// processes from fork_template (a copy of a caller with handlers, ignored,
/// blocked and pending signals, and fds without close-on-exec), the
/// default template and a new server, also when the caller forked early.
fn assert_empty_mask_nothing_pending(mode: &str) {
    for (label, r) in signal_probe(mode) {
        let what = format!("{mode}/{label}");
        assert_eq!(
            r.sig("SigBlk"),
            0,
            "{what}: blocked: {:?}",
            sigs(r.sig("SigBlk"))
        );
        assert_eq!(
            r.sig("SigPnd"),
            0,
            "{what}: pending: {:?}",
            sigs(r.sig("SigPnd"))
        );
        assert_eq!(
            r.sig("ShdPnd"),
            0,
            "{what}: pending: {:?}",
            sigs(r.sig("ShdPnd"))
        );
        // Only 0, 1, 2, the socket and fd 0 as sent: not the three
        // inherited /dev/null fds without close-on-exec.
        assert_clean_fds(&r, &[0, 1, 2].into(), 1, &what);
    }
}

#[test]
fn processes_start_with_an_empty_mask_nothing_pending_and_only_their_fds() {
    assert_empty_mask_nothing_pending("messy");
}

#[test]
fn processes_start_with_an_empty_mask_nothing_pending_and_only_their_fds_after_fork_early() {
    assert_empty_mask_nothing_pending("early");
}

/// Which sources gave processes with signals `key` (SigCgt, SigIgn) set,
/// glibc's internal ones left out.
fn with_signals(key: &str) -> Vec<String> {
    let mut bad = Vec::new();
    for mode in ["messy", "early"] {
        for (label, r) in signal_probe(mode) {
            let m = r.sig(key) & !GLIBC_INTERNAL;
            if m != 0 {
                bad.push(format!("{mode}/{label}: {:?}", sigs(m)));
            }
        }
    }
    bad
}

/// No handler in a new process, whatever the caller had installed.
#[test]
fn processes_start_with_no_signal_handler() {
    let bad = with_signals("SigCgt");
    assert!(bad.is_empty(), "handlers in new processes: {bad:#?}");
}

/// Ignored dispositions survive fork and exec, so they must be reset
/// explicitly: a process must not start with SIGPIPE or anything else
/// ignored.
#[test]
fn processes_start_with_no_signal_ignored() {
    let bad = with_signals("SigIgn");
    assert!(bad.is_empty(), "ignored signals in new processes: {bad:#?}");
}

/// The same seen from a program run with the exec builtin: an ignored
/// SIGPIPE survives exec, so e.g. `yes | head -1` run through anyfork
/// gets EPIPE errors instead of ending quietly.
#[test]
fn programs_run_through_exec_start_with_no_signal_ignored() {
    let mut p = Process::new().unwrap();
    p.eval("anyfork_comm_fd", &[b"1"]).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    p.exec(&[b"/bin/cat", b"/proc/self/status"], None, move |r| {
        tx.send(r).unwrap()
    })
    .unwrap();
    let sock = pump(&rx, Duration::from_secs(30), "exec").unwrap();
    let status = String::from_utf8(common::read_to_eof(sock)).unwrap();
    let ign = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .expect("SigIgn");
    let ign = ign & !GLIBC_INTERNAL;
    assert_eq!(ign, 0, "the exec'd program ignores {:?}", sigs(ign));
}

/// What the inherited handler does to user code: a run function that
/// overflows its stack must die of SIGSEGV (with default dispositions),
/// not of the server runtime's "has overflowed its stack" abort.
#[test]
fn a_stack_overflow_in_a_child_is_a_plain_sigsegv() {
    let mut p = new_child();
    let ex = exit_rx(&mut p);
    let rx = run_async(p, "rl_overflow");
    let sock = pump(&rx, Duration::from_secs(30), "rl_overflow").unwrap();
    assert!(common::read_to_eof(sock).is_empty());
    let (_, st) = pump(&ex, Duration::from_secs(30), "exit");
    let st = st.unwrap();
    assert_eq!(
        signaled(st),
        Some(libc::SIGSEGV),
        "wait status {st:#x} (signal {:?})",
        signaled(st)
    );
}

/// A C caller whose dispositions are all default goes through a workload
/// that includes writing to a killed template: its dispositions and mask
/// are unchanged after, and no SIGPIPE killed it.
#[test]
fn the_library_leaves_the_callers_signal_state_alone() {
    let exe = build("signal_probe", Kind::Program, &["-rdynamic"]);
    let mut cmd = Command::new(&exe);
    cmd.args([child_lib(), "untouched"]).stdin(Stdio::null());
    let r = common::run_in_session(&mut cmd, Duration::from_secs(60), Duration::from_secs(10));
    assert!(
        r.status.success(),
        "signal_probe untouched: {}\n{}\n{}",
        r.status,
        r.stdout,
        r.stderr
    );
    assert!(r.stdout.contains("untouched ok"), "{}", r.stdout);
    assert!(r.leftovers.is_empty(), "{:?}", r.leftovers);
    let reports = probe_reports(&r.stdout);
    assert_eq!(reports.len(), 2, "{}", r.stdout);
}

// ---------------------------------------------------------------------
// Sockets without names.

/// inode -> (path, flags) of every AF_UNIX socket, from /proc/net/unix.
fn unix_sockets() -> BTreeMap<u64, (String, u32)> {
    let text = std::fs::read_to_string("/proc/net/unix").unwrap();
    let mut m = BTreeMap::new();
    for line in text.lines().skip(1) {
        // Num RefCount Protocol Flags Type St Inode [Path]
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 7 {
            continue;
        }
        let flags = u32::from_str_radix(f[3], 16).unwrap_or(0);
        let inode: u64 = f[6].parse().unwrap_or(0);
        m.insert(inode, (f.get(7).unwrap_or(&"").to_string(), flags));
    }
    m
}

/// Socket inodes among `pid`'s fds.
fn socket_inodes(pid: i32) -> Vec<(i32, u64)> {
    fds_of(pid)
        .into_iter()
        .filter_map(|(fd, t)| {
            let ino = t
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            Some((fd, ino))
        })
        .collect()
}

/// Every socket held by the caller, its templates (default, exec'd,
/// forked, custom) and a running process is an unnamed, unlistening unix
/// socket: nothing in the filesystem or the abstract namespace that
/// another process could connect to.
#[test]
fn no_socket_has_a_name_or_listens() {
    let _g = serial();
    let mut held = new_child();
    let held_pid = held.pid().unwrap();
    let default_t = ppid_of(held_pid).unwrap();
    held.send_arg(b"wait").unwrap();
    let t = new_template();
    let tpid = t.pid().unwrap();
    let fork_t = t.fork().unwrap();
    let fork_t_pid = fork_t.pid().unwrap();
    let k = fork_t.fork().unwrap();
    let kpid = k.pid().unwrap();
    let running = run_async(held, "rl_die");
    let sock = pump(&running, Duration::from_secs(30), "rl_die").unwrap();
    let serve = env!("CARGO_BIN_EXE_anyfork-serve");
    let custom = anyfork::new_exec_argv(&[serve.as_bytes()]).unwrap();
    let cpid = custom.pid().unwrap();

    let mut all = unix_sockets();
    let me = std::process::id() as i32;
    let mut seen = 0;
    for (who, pid) in [
        ("caller", me),
        ("default template", default_t),
        ("exec'd template", tpid),
        ("forked template", fork_t_pid),
        ("unrun process", kpid),
        ("running process", held_pid),
        ("custom server", cpid),
    ] {
        let socks = socket_inodes(pid);
        assert!(!socks.is_empty() || who == "caller", "{who} has no socket");
        for (fd, ino) in socks {
            if !all.contains_key(&ino) {
                // Other tests of this binary run alongside and open and
                // close sockets in the caller: one newer than the snapshot
                // is looked up again; one that is still no unix socket (or
                // closed since) is theirs, as the library makes only
                // socketpairs. The other processes run only our code.
                all = unix_sockets();
                if !all.contains_key(&ino) && who == "caller" {
                    continue;
                }
            }
            let Some((path, flags)) = all.get(&ino) else {
                panic!("{who} (pid {pid}) fd {fd}: socket {ino} is not a unix socket");
            };
            assert!(
                path.is_empty(),
                "{who} (pid {pid}) fd {fd}: socket {ino} has the name {path:?}"
            );
            assert_eq!(
                flags & 0x10000,
                0,
                "{who} (pid {pid}) fd {fd}: socket {ino} listens"
            );
            seen += 1;
        }
    }
    assert!(seen >= 8, "only {seen} sockets checked");
    drop(sock);
    drop((t, fork_t, k, custom));
}

// ---------------------------------------------------------------------
// fork_from_fd and uids.

#[test]
fn from_fd_refuses_a_peer_of_another_uid_unless_allowed() {
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: needs root to make a peer of another uid");
        return;
    }
    let exe = build("foreign_uid", Kind::Program, &[]);
    let mut cmd = Command::new(&exe);
    cmd.arg(child_lib()).stdin(Stdio::null());
    let r = common::run_in_session(&mut cmd, Duration::from_secs(60), Duration::from_secs(10));
    assert!(
        r.status.success(),
        "foreign_uid: {}\n{}\n{}",
        r.status,
        r.stdout,
        r.stderr
    );
    assert!(r.stdout.contains("checks passed"), "{}", r.stdout);
    assert!(r.leftovers.is_empty(), "{:?}", r.leftovers);
}
