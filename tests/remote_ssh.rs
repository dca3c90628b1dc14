//! Remote templates over a real OpenSSH server (issue 14): Debian's sshd
//! started by the test on 127.0.0.1 (tests/common/sshd.rs), reached with
//! `ssh … anyfork-serve --stdio`. Processes, pids, exits and RPC over the
//! connection; what a user sees when ssh cannot connect, cannot log in,
//! or finds no anyfork-serve; and what killing the ssh client does.
//! The protocol itself is tested through a local command in remote.rs.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyfork::rpc::Rpc;
use anyfork::{Errno, Process};
use common::sshd::{Sshd, free_port};
use common::*;

fn remote(argv: &[Vec<u8>]) -> anyfork::Result<Process> {
    let a: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
    Process::new_remote(&a)
}

/// Pids of the live processes whose command line contains `what`.
fn pids_running(what: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if pid != me && alive(pid) && cmd.contains(what) {
            v.push(pid);
        }
    }
    v
}

#[test]
fn over_ssh_processes_run_report_pids_and_exits_and_answer_rpc() {
    let _s = serial();
    let sshd = Sshd::start();
    let mut t = remote(&sshd.transport(&serve_exe())).expect("new_remote over ssh");
    t.require(child_lib()).unwrap();

    let mut p = t.fork().unwrap();
    p.send_arg(b"over").unwrap();
    p.send_arg(b"ssh").unwrap();
    assert_eq!(run_text(p, "echo_strings"), "over\nssh\n");

    let mut p = t.fork().unwrap();
    let pid = p.pid().unwrap();
    p.send_arg(b"5").unwrap();
    let ex = exit_rx(&mut p);
    let out = run_output(p, "pid_then_exit");
    assert_eq!(u32::from_le_bytes(out[..4].try_into().unwrap()) as i32, pid);
    assert_eq!(wait_exit(&ex), (pid, Ok(5 << 8)));

    let lib = build("rpc_worker", Kind::Library, &["-pthread"]);
    let mut w = t.fork().unwrap();
    w.require(&lib.display().to_string()).unwrap();
    let rpc = Rpc::start(w, "rpc_sync", None).unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    for i in 0..100 {
        let g = got.clone();
        rpc.call(format!("echo {i}").as_bytes(), move |r| {
            g.lock()
                .unwrap()
                .push(String::from_utf8(r.unwrap()).unwrap())
        })
        .unwrap();
    }
    pump_until(Duration::from_secs(30), "100 replies", || {
        got.lock().unwrap().len() == 100
    });
    let want: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    assert_eq!(*got.lock().unwrap(), want);
    rpc.free(|_| {});

    // Freed, everything on the far side ends: the --stdio end and its
    // template.
    let far = pids_running(&format!("{} --stdio", serve_exe().display()));
    assert!(!far.is_empty(), "the far side runs under sshd");
    drop(t);
    all_gone(&far, "anyfork-serve --stdio and its template");
}

fn start_error(argv: Vec<Vec<u8>>) -> String {
    match remote(&argv) {
        Ok(_) => panic!("started"),
        Err(e) => {
            assert_eq!(e.errno(), Errno::ECONNREFUSED, "{}", e.message());
            e.message().to_string()
        }
    }
}

#[test]
fn ssh_failures_name_their_cause() {
    let _s = serial();
    let sshd = Sshd::start();
    let serve = serve_exe().display().to_string();

    // Nothing listens on the port.
    let m = start_error(sshd.ssh(&sshd.key, free_port(), &[&serve, "--stdio"]));
    assert!(
        m.contains("status 255") && m.contains("ssh could not connect") && m.contains("refused"),
        "{m}"
    );

    // A key the server does not accept.
    let stranger = sshd.dir.join("stranger");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .unwrap();
    assert!(st.success());
    let m = start_error(sshd.ssh(&stranger, sshd.port, &[&serve, "--stdio"]));
    assert!(
        m.contains("status 255") && m.contains("Permission denied"),
        "{m}"
    );

    // No anyfork-serve where it was looked for.
    let m = start_error(sshd.ssh(
        &sshd.key,
        sshd.port,
        &["/nonexistent/anyfork-serve", "--stdio"],
    ));
    assert!(
        m.contains("status 127") && m.contains("is anyfork-serve installed"),
        "{m}"
    );
}

#[test]
fn killing_the_ssh_client_ends_every_remote_process_and_fails_their_callbacks() {
    let name = "killing_the_ssh_client_ends_every_remote_process_and_fails_their_callbacks";
    if let Some(r) = isolated(name, Duration::from_secs(60), ssh_killed) {
        assert!(r.leftovers.is_empty(), "left behind: {}", r.describe());
        assert!(
            r.stderr.contains("ended: the link reached end of file"),
            "the relay says why: {}",
            r.stderr
        );
    }
}

fn ssh_killed() {
    let sshd = Sshd::start();
    let mut t = remote(&sshd.transport(&serve_exe())).unwrap();
    t.require(child_lib()).unwrap();
    let relay = t.pid().unwrap();
    let mut running = Vec::new();
    let mut exits = Vec::new();
    for _ in 0..3 {
        let mut p = t.fork().unwrap();
        exits.push(exit_rx(&mut p));
        running.push(run(p, "wait_eof").unwrap());
    }
    let far = pids_running(&format!("{} --stdio", serve_exe().display()));
    let mut on_far_side = far.clone();
    for &f in &far {
        on_far_side.extend(descendants(f));
    }
    assert!(
        on_far_side.len() >= 5,
        "mux, template, 3 processes: {on_far_side:?}"
    );
    let ssh = children_of(relay);
    assert_eq!(ssh.len(), 1);
    kill(ssh[0], libc::SIGKILL);
    for fd in running {
        assert!(read_all(fd).is_ok(), "EOF on each remote process's socket");
    }
    for ex in &exits {
        assert!(wait_exit(ex).1.is_err(), "each exit callback fails once");
    }
    all_gone(&on_far_side, "the far side (sshd closes the session)");
    drop(t);
    all_gone(&[relay], "the relay");
}

#[test]
fn the_example_spreads_a_pool_over_two_hosts() {
    let _s = serial();
    let (a, b) = (Sshd::start(), Sshd::start());
    example("remote_pool_worker");
    let lib = examples_dir().join("libremote_pool_worker.so");
    let cmd = |s: &Sshd| {
        s.transport(&serve_exe())
            .into_iter()
            .map(|w| String::from_utf8(w).unwrap())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let text = common::stdout_of(
        std::process::Command::new(example("remote_pool"))
            .arg(cmd(&a))
            .arg(cmd(&b))
            .arg(&lib),
    );
    let (_, counts) = text.split_once("; ").expect(&text);
    let n: Vec<u32> = counts
        .split(", ")
        .map(|c| c.rsplit(' ').next().unwrap().trim().parse().unwrap())
        .collect();
    assert!(text.starts_with("100 answered, 0 failed"), "{text}");
    assert!(
        n.iter().all(|&k| k > 0) && n.iter().sum::<u32>() == 100,
        "{text}"
    );
}
