//! Remote templates (`fork_new_remote`, issue 14) through a transport that
//! is a plain local command, `sh -c 'exec anyfork-serve --stdio'`: the
//! protocol itself, flow control, a dropped connection, the errors of a
//! start that fails, and that nothing is left behind. The same over a
//! real OpenSSH server is tests/remote_ssh.rs.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyfork::rpc::{Pool, PoolOpts, Rpc};
use anyfork::{Errno, Process};
use common::*;

/// `sh -c 'exec …/anyfork-serve --stdio'`.
fn local_transport() -> Vec<Vec<u8>> {
    vec![
        b"sh".to_vec(),
        b"-c".to_vec(),
        format!("exec {} --stdio", serve_exe().display()).into_bytes(),
    ]
}

fn remote(argv: &[Vec<u8>]) -> anyfork::Result<Process> {
    let a: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
    Process::new_remote(&a)
}

fn remote_template() -> Process {
    let mut t = remote(&local_transport()).expect("new_remote");
    t.require(child_lib()).expect("require");
    t
}

/// A line from a blocking read of a comm socket.
fn line(s: &mut UnixStream) -> String {
    let mut v = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        v.push(b[0]);
    }
    String::from_utf8(v).unwrap()
}

fn stream(fd: OwnedFd) -> UnixStream {
    let s = UnixStream::from(fd);
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

#[test]
fn processes_of_a_remote_template_run_with_their_arguments_pids_and_exits() {
    let _s = serial();
    let t = remote_template();
    let relay = t.pid().unwrap();

    let mut p = t.fork().unwrap();
    p.send_arg(b"hello").unwrap();
    p.send_arg(b"").unwrap();
    p.send_arg(&vec![b'x'; 300_000]).unwrap();
    let out = run_output(p, "echo_strings");
    assert_eq!(out.len(), 6 + 1 + 300_001);
    assert!(out.starts_with(b"hello\n\nxxx"));

    // pids are the remote ones, exit statuses come back.
    let mut p = t.fork().unwrap();
    let pid = p.pid().unwrap();
    p.send_arg(b"7").unwrap();
    let ex = exit_rx(&mut p);
    let out = run_output(p, "pid_then_exit");
    assert_eq!(u32::from_le_bytes(out[..4].try_into().unwrap()) as i32, pid);
    let (xpid, st) = wait_exit(&ex);
    assert_eq!((xpid, exited(st.unwrap())), (pid, Some(7)));

    // eval runs in the remote template, and its processes inherit it.
    let mut t2 = t.fork().unwrap();
    t2.eval("init_setenv", &[b"REMOTE_PROBE", b"yes"]).unwrap();
    let mut p = t2.fork().unwrap();
    p.send_arg(b"REMOTE_PROBE").unwrap();
    assert_eq!(run_text(p, "show_env"), "yes");

    // exec runs a program there.
    let mut p = t.fork().unwrap();
    let ex = exit_rx(&mut p);
    p.exec_detached(&[b"sh", b"-c", b"exit 3"], None).unwrap();
    assert_eq!(exited(wait_exit(&ex).1.unwrap()), Some(3));

    let family = descendants(relay);
    assert!(family.len() >= 2, "the relay has its transport: {family:?}");
    drop(t2);
    drop(t);
    all_gone(&family, "the relay's transport, the remote template");
    all_gone(&[relay], "the relay");
}

#[test]
fn send_fd_to_a_remote_process_is_refused_and_nothing_is_half_sent() {
    let _s = serial();
    let t = remote_template();
    let mut p = t.fork().unwrap();
    p.send_arg(b"before").unwrap();
    let (r, _w) = pipe();
    let e = p.send_fd(r.as_fd()).unwrap_err();
    assert_eq!(e.errno(), Errno::EOPNOTSUPP);
    assert!(
        e.message().contains("cannot cross machines"),
        "{}",
        e.message()
    );
    p.send_arg(b"after").unwrap();
    assert_eq!(run_text(p, "echo_strings"), "before\nafter\n");
}

#[test]
fn a_thousand_queued_forks_share_one_connection() {
    let _s = serial();
    let t = remote_template();
    let mut rxs = Vec::new();
    for i in 0..1000 {
        let mut p = t.fork().unwrap();
        p.send_arg(format!("n{i}").as_bytes()).unwrap();
        rxs.push(run_async(p, "echo_strings"));
    }
    for (i, rx) in rxs.iter().enumerate() {
        let fd = wait_run(rx).expect("run callback");
        assert_eq!(read_to_eof(fd), format!("n{i}\n").into_bytes());
    }
}

#[test]
fn a_process_that_does_not_read_holds_up_only_itself() {
    let _s = serial();
    let t = remote_template();
    let stuck = run(t.fork().unwrap(), "ignore_input").unwrap();
    let mut stuck = stream(stuck);
    let l = line(&mut stuck);
    let pid: i32 = l.strip_prefix("ready ").unwrap().parse().unwrap();
    // Fill everything between us and it: socket buffers and both relays'
    // windows. The writes stop (would block) while the link stays free.
    stuck.set_nonblocking(true).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    let mut sent = 0usize;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(2) {
        match stuck.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(sent > 256 * 1024, "the relays took the window: {sent}");
    assert!(
        sent < 64 * 1024 * 1024,
        "flow control stops a reader-less stream: {sent}"
    );
    // Others go on: round trips and new processes.
    for i in 0..20 {
        let mut p = t.fork().unwrap();
        p.send_arg(format!("r{i}").as_bytes()).unwrap();
        assert_eq!(run_text(p, "echo_strings"), format!("r{i}\n"));
    }
    kill(pid, libc::SIGKILL);
    // Its stream ends; what it never read is dropped.
    stuck.set_nonblocking(false).unwrap();
    let mut rest = Vec::new();
    let _ = stuck.read_to_end(&mut rest);
}

#[test]
fn a_dropped_connection_fails_every_pending_callback_once_and_ends_every_stream() {
    let name = "a_dropped_connection_fails_every_pending_callback_once_and_ends_every_stream";
    let r = isolated(name, Duration::from_secs(60), dropped_connection);
    if let Some(r) = r {
        assert!(r.leftovers.is_empty(), "left behind: {}", r.describe());
        assert!(
            r.stderr.contains("the link to the remote template")
                && r.stderr.contains("ended: the link reached end of file"),
            "the relay says why the streams ended: {}",
            r.stderr
        );
    }
}

fn dropped_connection() {
    let t = remote_template();
    let relay = t.pid().unwrap();
    // Two running processes that wait for EOF, one with an exit callback.
    let mut waiting = Vec::new();
    let mut exits = Vec::new();
    for _ in 0..2 {
        let mut p = t.fork().unwrap();
        exits.push(exit_rx(&mut p));
        waiting.push(stream(run(p, "wait_eof").unwrap()));
    }
    let family = descendants(relay);
    // The transport: the relay's child, `anyfork-serve --stdio`.
    let transport = children_of(relay);
    assert_eq!(transport.len(), 1, "{transport:?}");
    // A fork still in flight when it drops.
    let pending = run_async(t.fork().unwrap(), "wait_eof");
    kill(transport[0], libc::SIGKILL);
    for s in &mut waiting {
        let mut v = Vec::new();
        s.read_to_end(&mut v).expect("EOF, not a hang");
    }
    for ex in &exits {
        let (_, st) = wait_exit(ex);
        assert!(st.is_err(), "no exit status can come: {st:?}");
    }
    match wait_run(&pending) {
        Err(_) => {}
        Ok(fd) => assert!(read_to_eof(fd).is_empty()),
    }
    // The remote side sees its sockets end: template and processes exit.
    all_gone(&family, "the remote template and its processes");
    // Later forks fail: the template is gone.
    match t.fork() {
        Err(e) => assert_eq!(e.errno(), Errno::EPIPE, "{}", e.message()),
        Ok(p) => assert!(wait_run(&run_async(p, "wait_eof")).is_err()),
    }
    drop(t);
    all_gone(&[relay], "the relay");
}

fn start_error(argv: &[&str]) -> anyfork::Error {
    let a: Vec<Vec<u8>> = argv.iter().map(|s| s.as_bytes().to_vec()).collect();
    match remote(&a) {
        Ok(_) => panic!("{argv:?} started"),
        Err(e) => e,
    }
}

#[test]
fn a_writer_whose_reader_closed_fails_its_writes_as_it_would_locally() {
    let _s = serial();
    let t = remote_template();
    let mut p = t.fork().unwrap();
    p.eval("anyfork_comm_fd", &[b"1"]).unwrap();
    let ex = exit_rx(&mut p);
    let (tx, rx) = std::sync::mpsc::channel();
    p.exec(&[b"yes", b"remote"], None, move |r| {
        let _ = tx.send(r);
    })
    .unwrap();
    let mut s = stream(pump(&rx, Duration::from_secs(30), "exec").unwrap());
    let mut b = [0u8; 4096];
    s.read_exact(&mut b).unwrap();
    assert!(b.starts_with(b"remote\n"));
    drop(s);
    // The far side's `yes` writes into a socket whose reader is gone: its
    // write fails (EPIPE, or ECONNRESET once the far socket is closed with
    // bytes unread, as a local socket closed by its reader gives) and it
    // ends, instead of writing into the relay forever.
    let (_, st) = wait_exit(&ex);
    let st = st.unwrap();
    assert!(
        signaled(st) == Some(libc::SIGPIPE) || exited(st) == Some(1),
        "wait status {st:#x}"
    );
}

#[test]
fn a_start_that_fails_says_why() {
    let _s = serial();
    let e = start_error(&["/nonexistent/transport"]);
    assert!(
        e.message().contains("cannot start") && e.message().contains("/nonexistent/transport"),
        "{}",
        e.message()
    );

    let e = start_error(&[
        "sh",
        "-c",
        "echo 'sh: 1: anyfork-serve: not found' >&2; exit 127",
    ]);
    assert_eq!(e.errno(), Errno::ECONNREFUSED);
    let m = e.message();
    assert!(
        m.contains("status 127") && m.contains("command not found"),
        "{m}"
    );
    assert!(m.contains("anyfork-serve: not found"), "its stderr: {m}");

    let e = start_error(&["sh", "-c", "echo Welcome to the host"]);
    assert!(
        e.message().contains("is not anyfork-serve --stdio") && e.message().contains("Welcome"),
        "{}",
        e.message()
    );

    // A far side of another version: a hello with link version 99.
    let e = start_error(&[
        "sh",
        "-c",
        r"printf 'A\000\000\000\000\020\000\000\000afremote\143\000\000\000\002\000\000\000'; cat >/dev/null",
    ]);
    assert!(
        e.message().contains("version mismatch") && e.message().contains("99"),
        "{}",
        e.message()
    );

    let e = start_error(&[]);
    assert_eq!(e.errno(), Errno::EINVAL);
}

#[test]
fn megabytes_cross_the_link_intact_in_both_directions() {
    let _s = serial();
    let lib = build("rpc_worker", Kind::Library, &["-pthread"])
        .display()
        .to_string();
    let mut t = remote(&local_transport()).unwrap();
    t.require(&lib).unwrap();
    let rpc = Rpc::start(t.fork().unwrap(), "rpc_sync", None).unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut sent = Vec::new();
    for i in 0..8u8 {
        // 1.5 MiB each, more than the link's window per channel.
        let mut req = b"echo ".to_vec();
        req.extend((0..1_500_000u32).map(|k| (k as u8) ^ i.wrapping_mul(31)));
        let g = got.clone();
        rpc.call(&req, move |r| g.lock().unwrap().push((i, r.unwrap())))
            .unwrap();
        sent.push(req[5..].to_vec());
    }
    pump_until(Duration::from_secs(60), "8 big replies", || {
        got.lock().unwrap().len() == 8
    });
    for (i, reply) in got.lock().unwrap().iter() {
        assert!(
            reply == &sent[*i as usize],
            "reply {i} differs from its request"
        );
    }
}

#[test]
fn rpc_and_a_pool_over_two_remote_templates() {
    let _s = serial();
    let lib = build("rpc_worker", Kind::Library, &["-pthread"])
        .display()
        .to_string();
    let mut a = remote(&local_transport()).unwrap();
    a.require(&lib).unwrap();
    let mut b = remote(&local_transport()).unwrap();
    b.require(&lib).unwrap();

    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let rpc = Rpc::start(
        a.fork().unwrap(),
        "rpc_sync",
        Some(Arc::new(move |e: Vec<u8>| ev.lock().unwrap().push(e))),
    )
    .unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    for req in ["echo one", "events 2", "echo two"] {
        let g = got.clone();
        rpc.call(req.as_bytes(), move |r| g.lock().unwrap().push(r.unwrap()))
            .unwrap();
    }
    pump_until(Duration::from_secs(20), "3 replies", || {
        got.lock().unwrap().len() == 3
    });
    assert_eq!(
        *got.lock().unwrap(),
        [b"one".to_vec(), b"done".to_vec(), b"two".to_vec()]
    );
    assert_eq!(events.lock().unwrap().len(), 2);
    rpc.free(|_| {});

    let pool = Pool::new(
        a,
        "rpc_sync",
        PoolOpts {
            max: 4,
            load: 1,
            ..PoolOpts::default()
        },
        None,
    )
    .unwrap();
    pool.add_template(b).unwrap();
    let pids = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..40 {
        let p = pids.clone();
        pool.call(
            b"pid",
            Box::new(move |r| {
                p.lock()
                    .unwrap()
                    .push(String::from_utf8(r.unwrap()).unwrap())
            }),
        )
        .unwrap();
    }
    pump_until(Duration::from_secs(30), "40 replies", || {
        pids.lock().unwrap().len() == 40
    });
    pool.free(None);
}
