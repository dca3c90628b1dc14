//! Issue 6, bad input: calls with arguments the protocol cannot carry, and
//! a corrupt command stream written straight into a server's socket. A
//! call fails with an errno and a message that names the problem; a server
//! that reads garbage says so on its stderr and exits 125, without
//! crashing, hanging, or allocating what a forged length claims.
//! (tests/c/api_errors.c covers NULL handles, negative and closed fds and
//! empty names in C; tests/c/bad_input.c the C calls it leaves out.)

mod common;

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyfork::{Errno, Process};
use common::*;

// ---------------------------------------------------------------------
// Names and arguments through the Rust API.

fn expect_err(r: anyfork::Result<()>, errno: Errno, words: &[&str], what: &str) {
    let e = r.expect_err(what);
    assert_eq!(e.errno(), errno, "{what}: {e}");
    for w in words {
        assert!(e.message().contains(w), "{what}: {e:?} does not say {w:?}");
    }
}

#[test]
fn names_with_a_nul_empty_or_too_long_are_refused_and_nothing_is_sent() {
    let mut p = new_child();
    p.send_arg(b"first").unwrap();
    let long = "x".repeat(5000);
    expect_err(
        p.require("lib\0x.so"),
        Errno::EINVAL,
        &["require", "NUL"],
        "require NUL",
    );
    expect_err(
        p.require(""),
        Errno::EINVAL,
        &["require", "empty"],
        "require empty",
    );
    expect_err(
        p.require(&long),
        Errno::ENAMETOOLONG,
        &["require", "longer"],
        "require long",
    );
    expect_err(
        p.eval("rl_\0nproc", &[]),
        Errno::EINVAL,
        &["eval", "NUL"],
        "eval NUL",
    );
    expect_err(
        p.eval("", &[]),
        Errno::EINVAL,
        &["eval", "empty"],
        "eval empty",
    );
    expect_err(
        p.eval(&long, &[]),
        Errno::ENAMETOOLONG,
        &["eval", "longer"],
        "eval long",
    );
    // Strings may hold NULs: they are data, not names.
    p.send_arg(b"a\0b").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let cb_tx = tx.clone();
    let r = new_child().run("rl_\0echo", move |x| cb_tx.send(x).unwrap());
    expect_err(r, Errno::EINVAL, &["run", "NUL"], "run NUL");
    let cb_tx = tx.clone();
    let r = new_child().run("", move |x| cb_tx.send(x).unwrap());
    expect_err(r, Errno::EINVAL, &["run", "empty"], "run empty");
    let r = new_child().run(&long, move |x| tx.send(x).unwrap());
    expect_err(r, Errno::ENAMETOOLONG, &["run", "longer"], "run long");
    let r = new_child().run_detached("a\0b");
    expect_err(r, Errno::EINVAL, &["NUL"], "run_detached NUL");
    // The refused runs never call back, and the handle that saw the
    // refusals got exactly what was accepted.
    let out = run_text(p, "rl_report");
    let rep = parse_report(&out);
    assert_eq!(
        rep.args,
        vec![RArg::S("first".into()), RArg::S("a".into())],
        "{out}"
    );
    assert!(out.contains("arg 1 S 3 a"), "{out}");
    anyfork::wait(50).unwrap();
    assert!(rx.try_recv().is_err(), "a refused run called back");
}

#[test]
fn custom_servers_and_exec_refuse_what_cannot_be_run() {
    let e = anyfork::new_exec_argv(&[]).err().expect("empty argv");
    assert_eq!(e.errno(), Errno::EINVAL, "{e}");
    let e = anyfork::new_exec_argv(&[b"/bin/sh\0x"])
        .err()
        .expect("NUL in argv");
    assert_eq!(e.errno(), Errno::EINVAL, "{e}");
    assert!(e.message().contains("NUL"), "{e}");
    let e = anyfork::new_exec_argv(&[b"/nonexistent/anyfork-server"])
        .err()
        .expect("a missing server");
    assert!(e.message().contains("/nonexistent/anyfork-server"), "{e}");
    let e = Process::new()
        .unwrap()
        .exec(&[], None, |_| panic!("called back"))
        .expect_err("exec of nothing");
    assert_eq!(e.errno(), Errno::EINVAL, "{e}");
    assert!(e.message().contains("argv"), "{e}");
}

fn run_bad_input(args: &[&str]) {
    let mut all = vec![child_lib()];
    all.extend_from_slice(args);
    common::run_checks(&build("bad_input", Kind::Program, &[]), &all);
}

#[test]
fn c_functions_refuse_bad_input_beyond_api_errors() {
    run_bad_input(&[]);
}

/// `fork_send_arg(p, buf, n)` with `n` from a failed `read()` (-1, so
/// SIZE_MAX): documented as -E2BIG (4 GiB or more).
#[test]
fn a_length_of_size_max_is_e2big_not_an_abort() {
    run_bad_input(&["size_max"]);
}

// ---------------------------------------------------------------------
// A corrupt command stream.

/// A fresh anyfork-serve whose stderr goes to a file of its own (through
/// `sh -c 'exec anyfork-serve 2>FILE'` as a custom server command).
fn server_with_stderr(tag: &str) -> (Process, PathBuf) {
    let err = own_dir().join(format!("stderr-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&err);
    let serve = env!("CARGO_BIN_EXE_anyfork-serve");
    let p = anyfork::new_exec_argv(&[
        b"/bin/sh",
        b"-c",
        b"exec \"$0\" 2>\"$1\"",
        serve.as_bytes(),
        err.display().to_string().as_bytes(),
    ])
    .expect("starting anyfork-serve under sh");
    (p, err)
}

/// A server that will read `bytes` (its pid, its exit receiver, and the
/// socket to write them to).
struct Victim {
    pid: i32,
    exit: ExitRx,
    sock: UnixStream,
    stderr: PathBuf,
    /// The template a forked victim came from (kept open).
    _template: Option<Process>,
}

/// `forked`: a process forked from a server (its exit is reported by the
/// template); otherwise the server itself (a direct child).
fn victim(tag: &str, forked: bool) -> Victim {
    let (mut t, stderr) = server_with_stderr(tag);
    let tpid = t.pid().unwrap();
    // The server runs anyfork-serve (sh exec'd it) once it answers.
    t.send_arg(b"warm-up").unwrap();
    let (mut p, template) = if forked {
        let k = t.fork().unwrap();
        (k, Some(t))
    } else {
        (t, None)
    };
    let exit = exit_rx(&mut p);
    let pid = if forked { p.pid().unwrap() } else { tpid };
    let fd = p.into_fd().expect("into_fd");
    let sock = UnixStream::from(fd);
    sock.set_nonblocking(false).unwrap();
    assert!(common::eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim() == "anyfork-serve")
    }));
    Victim {
        pid,
        exit,
        sock,
        stderr,
        _template: template,
    }
}

/// Writes `bytes` (ignoring a server that already hung up), closes our end
/// first when `close` (else keeps it open until the server has exited on
/// its own), and returns the wait status and the server's stderr.
fn feed(v: Victim, bytes: &[u8], close: bool) -> (i32, String) {
    let mut sock = v.sock;
    let _ = sock.write_all(bytes);
    let sock = if close {
        drop(sock);
        None
    } else {
        Some(sock)
    };
    let t = Instant::now();
    let (pid, st) = pump(&v.exit, Duration::from_secs(20), "the server's exit");
    assert!(t.elapsed() < Duration::from_secs(20));
    drop(sock);
    assert_eq!(pid, v.pid);
    let st = st.expect("the exit status of a server we started");
    let err = std::fs::read_to_string(&v.stderr).unwrap_or_default();
    let _ = std::fs::remove_file(&v.stderr);
    (st, err)
}

fn assert_125(st: i32, err: &str, needle: &str, what: &str) {
    assert_eq!(
        exited(st),
        Some(125),
        "{what}: wait status {st:#x}, stderr {err:?}"
    );
    assert!(
        err.contains("corrupt command stream") || err.contains("truncated"),
        "{what}: stderr {err:?}"
    );
    assert!(
        err.contains(needle),
        "{what}: stderr {err:?} lacks {needle:?}"
    );
}

/// Frames that cannot be valid, sent to a server and to a forked process
/// (which reads commands just like its template did).
#[test]
fn a_corrupt_frame_makes_the_server_report_it_and_exit_125() {
    let mut eval_forged = vec![b'E', 10, 0, 0, 0];
    // A varint claiming a name longer than the frame.
    eval_forged.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    let mut hello_v99 = vec![b'H', 12, 0, 0, 0];
    hello_v99.extend_from_slice(b"anyfork\0");
    hello_v99.extend_from_slice(&99u32.to_le_bytes());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "unknown tag",
            b"\x00garbage".to_vec(),
            "unknown frame tag 0x00",
        ),
        (
            "text",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            "unknown frame tag 0x47",
        ),
        (
            "fd frame without an fd",
            b"D\0\0\0\0".to_vec(),
            "fd that was not passed",
        ),
        (
            "fork without an fd",
            b"F\0\0\0\0".to_vec(),
            "fd that was not passed",
        ),
        (
            "report frame",
            b"P\x04\0\0\0\x01\0\0\0".to_vec(),
            "report frame",
        ),
        ("empty require", b"L\0\0\0\0".to_vec(), "cannot be 0 bytes"),
        ("forged eval varint", eval_forged, "corrupt command stream"),
        ("bad run flags", b"R\x03\0\0\0\x7fab".to_vec(), "run flags"),
        ("hello of version 99", hello_v99, "version 99"),
        (
            "fd frame with a length",
            b"D\x01\0\0\0x".to_vec(),
            "cannot be 1 bytes",
        ),
    ];
    for forked in [false, true] {
        for (what, bytes, needle) in &cases {
            let what = format!("{what} (forked {forked})");
            let v = victim("frame", forked);
            let (st, err) = feed(v, bytes, false);
            assert_125(st, &err, needle, &what);
        }
    }
}

/// A Str header claiming 4 GiB - 1 followed by a few bytes: the server
/// waits for the rest without allocating what was claimed, and what it
/// holds grows with what arrives, not with the claim. At EOF it exits
/// without a crash.
#[test]
fn a_forged_4_gib_length_allocates_nothing_like_it() {
    let _g = serial();
    let v = victim("forged", false);
    let pid = v.pid;
    let before = status_kb(pid, "VmHWM").unwrap();
    let mut frame = vec![b'S'];
    frame.extend_from_slice(&u32::MAX.to_le_bytes());
    frame.extend_from_slice(b"just a few bytes");
    let mut sock = v.sock.try_clone().unwrap();
    sock.write_all(&frame).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        common::alive(pid),
        "the server died waiting for a long string"
    );
    let hwm = status_kb(pid, "VmHWM").unwrap();
    let peak = status_kb(pid, "VmPeak").unwrap();
    eprintln!("forged 4 GiB: VmHWM {before} -> {hwm} kB, VmPeak {peak} kB");
    assert!(
        hwm < before + 8 * 1024,
        "the server's resident peak grew from {before} to {hwm} kB"
    );
    assert!(peak < 512 * 1024, "the server's virtual peak is {peak} kB");
    // 16 MiB more of the string: memory follows what arrived.
    let chunk = vec![0x5au8; 1 << 20];
    for _ in 0..16 {
        sock.write_all(&chunk).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let hwm2 = status_kb(pid, "VmHWM").unwrap();
    eprintln!("after 16 MiB more: VmHWM {hwm2} kB");
    assert!(
        hwm2 < before + 40 * 1024,
        "16 MiB received, but the peak grew from {before} to {hwm2} kB"
    );
    drop(sock);
    let (st, err) = feed(v, b"", true);
    assert!(
        exited(st).is_some(),
        "the server crashed at EOF inside a string: {st:#x} {err:?}"
    );
    assert!(
        matches!(exited(st), Some(0) | Some(125)),
        "status {st:#x}, {err:?}"
    );
}

/// Random bytes (fixed seeds), with a few fds attached to the first
/// write: the server ends on its own or at EOF with a status of 0
/// (garbage that happened to parse as a string, then EOF), 125 (corrupt)
/// or 127 (garbage that parsed as a require/eval/run of a name that does
/// not exist), never by a signal, and says why whenever it is not 0.
#[test]
fn random_bytes_never_crash_or_hang_a_server() {
    let mut seen = std::collections::BTreeMap::new();
    for seed in 1..=24u64 {
        let forked = seed % 3 == 0;
        let v = victim("random", forked);
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let len = 64 + (seed as usize * 997) % 8192;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        if seed % 4 == 0 {
            // A few fds riding along with the garbage.
            let fds: Vec<OwnedFd> = (0..3)
                .map(|_| std::fs::File::open("/dev/null").unwrap().into())
                .collect();
            let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
            send_with_fds(&v.sock, &bytes[..1], &raw);
            let (st, err) = feed(v, &bytes[1..], true);
            check_random(seed, st, &err, &mut seen);
        } else {
            let (st, err) = feed(v, &bytes, true);
            check_random(seed, st, &err, &mut seen);
        }
    }
    eprintln!("random streams: exit statuses {seen:?}");
}

fn check_random(seed: u64, st: i32, err: &str, seen: &mut std::collections::BTreeMap<i32, u32>) {
    let code = exited(st).unwrap_or_else(|| panic!("seed {seed}: killed: {st:#x} {err:?}"));
    *seen.entry(code).or_default() += 1;
    assert!(
        matches!(code, 0 | 125 | 127),
        "seed {seed}: status {code}, {err:?}"
    );
    if code != 0 {
        assert!(
            !err.trim().is_empty(),
            "seed {seed}: exit {code} without a word"
        );
    }
    if code == 125 {
        assert!(
            err.contains("corrupt command stream") || err.contains("truncated"),
            "seed {seed}: {err:?}"
        );
    }
}

fn send_with_fds(sock: &UnixStream, bytes: &[u8], fds: &[i32]) {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let iov = [std::io::IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).unwrap();
}

/// A template that cannot take the fds it is sent (its RLIMIT_NOFILE
/// lowered by an eval): the kernel truncates the control message
/// (MSG_CTRUNC). The server must not carry on as if the arguments were
/// complete, nor die for it: it says so, fails its forks with EMFILE and
/// serves on (tests/server_reader.rs covers the rest).
#[test]
fn fds_a_template_cannot_take_are_a_reported_error() {
    let (mut t, stderr) = server_with_stderr("ctrunc");
    let tpid = t.pid().unwrap();
    let ex = exit_rx(&mut t);
    t.require(child_lib()).unwrap();
    t.eval("rl_nofile", &[b"16"]).unwrap();
    // Far more fds than 16: the template loses some (MSG_CTRUNC), says
    // so, and serves on; a fork of it fails with EMFILE (its children
    // would lack those arguments).
    let files: Vec<std::fs::File> = (0..200)
        .map(|_| std::fs::File::open("/dev/null").unwrap())
        .collect();
    for f in &files {
        t.send_fd(std::os::fd::AsFd::as_fd(f)).unwrap();
    }
    let e = t.fork().unwrap().pid().unwrap_err();
    assert_eq!(e.errno(), Errno::EMFILE, "{e}");
    assert!(alive(tpid), "the template died");
    drop(t);
    let (pid, st) = pump(&ex, Duration::from_secs(30), "the template's exit");
    assert_eq!(pid, tpid);
    let st = st.unwrap();
    let err = std::fs::read_to_string(&stderr).unwrap_or_default();
    let _ = std::fs::remove_file(&stderr);
    assert_eq!(exited(st), Some(0), "status {st:#x}, stderr {err:?}");
    assert!(err.contains("open-file limit (EMFILE)"), "{err:?}");
}
