//! Remote templates over a loopback OpenSSH server (tests/common/sshd.rs
//! starts a private sshd): creations through one ssh connection,
//! sequential and pipelined, against one ssh connection per process (the
//! way AnyEvent::Fork::Remote works: a template started over ssh, one
//! fork from it); and RPC round trips over the connection against the
//! same worker on this machine. Interleaved repetitions, median
//! [min–max]. `-- --quick` for 3 short repetitions.

#[path = "common/calls.rs"]
mod calls;
#[path = "common/worker.rs"]
mod worker;

use calls::stats;

#[path = "../tests/common/sshd.rs"]
#[allow(dead_code)]
mod sshd;

use std::io::Read;
use std::os::fd::OwnedFd;
use std::sync::mpsc::channel;
use std::time::Instant;

use anyfork::Process;
use anyfork::rpc::Rpc;

fn remote(argv: &[Vec<u8>]) -> Process {
    let a: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
    Process::new_remote(&a).expect("new_remote")
}

/// Runs `anyfork_exit` in a new process of `t`; the receiver gets its
/// comm socket.
fn create(t: &Process) -> std::sync::mpsc::Receiver<OwnedFd> {
    let (tx, rx) = channel();
    t.fork()
        .unwrap()
        .run("anyfork_exit", move |r| {
            let _ = tx.send(r.expect("run"));
        })
        .unwrap();
    rx
}

/// Waits for the run callback, then for the process's end (EOF).
fn finish(rx: &std::sync::mpsc::Receiver<OwnedFd>) {
    let fd = loop {
        if let Ok(fd) = rx.try_recv() {
            break fd;
        }
        anyfork::wait(-1).unwrap();
    };
    let mut s = std::os::unix::net::UnixStream::from(fd);
    s.set_nonblocking(false).unwrap();
    let mut b = Vec::new();
    s.read_to_end(&mut b).unwrap();
}

/// Creations per second, one at a time.
fn sequential(t: &Process, n: usize) -> f64 {
    let s = Instant::now();
    for _ in 0..n {
        finish(&create(t));
    }
    n as f64 / s.elapsed().as_secs_f64()
}

/// Creations per second with up to `window` queued at once.
fn pipelined(t: &Process, n: usize, window: usize) -> f64 {
    let s = Instant::now();
    let mut q = std::collections::VecDeque::new();
    for _ in 0..n {
        if q.len() == window {
            finish(&q.pop_front().unwrap());
        }
        q.push_back(create(t));
    }
    for rx in q {
        finish(&rx);
    }
    n as f64 / s.elapsed().as_secs_f64()
}

/// Creations per second with a new ssh connection (and template) each.
fn ssh_each(transport: &[Vec<u8>], n: usize) -> f64 {
    let s = Instant::now();
    for _ in 0..n {
        let t = remote(transport);
        finish(&create(&t));
    }
    n as f64 / s.elapsed().as_secs_f64()
}

/// Round trips per second, one at a time.
fn rate(rpc: &Rpc, n: usize) -> f64 {
    n as f64 / calls::sequential(rpc, n).as_secs_f64()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (reps, n, each, calls) = if quick {
        (3, 200, 2, 2_000)
    } else {
        (5, 1_000, 4, 10_000)
    };
    let serve = std::path::PathBuf::from(env!("CARGO_BIN_EXE_anyfork-serve"));
    // SAFETY: set before any thread or process is made.
    unsafe { std::env::set_var("ANYFORK_SERVE", &serve) };
    let sshd = sshd::Sshd::start();
    let transport = sshd.transport(&serve);
    let lib = worker::worker_lib("remote_bench_worker");
    let mut conn = remote(&transport);
    conn.require(&lib).unwrap();
    let mut local = Process::new_exec().unwrap();
    local.require(&lib).unwrap();
    let rpc_remote = Rpc::start(conn.fork().unwrap(), "rpc_sync", None).unwrap();
    let rpc_local = Rpc::start(local.fork().unwrap(), "rpc_sync", None).unwrap();
    sequential(&conn, 50);
    rate(&rpc_remote, 500);
    rate(&rpc_local, 500);

    let mut v: [Vec<f64>; 11] = Default::default();
    for _ in 0..reps {
        let seq = sequential(&conn, n);
        let pip = pipelined(&conn, n * 2, 100);
        let one = ssh_each(&transport, each);
        let lseq = sequential(&local, n);
        let rs = rate(&rpc_remote, calls);
        let ls = rate(&rpc_local, calls);
        let rp = calls::pipelined(&rpc_remote, calls * 5, 1000);
        let lp = calls::pipelined(&rpc_local, calls * 5, 1000);
        for (i, x) in [
            seq,
            pip,
            one,
            lseq,
            rs,
            ls,
            rp,
            lp,
            seq / one,
            pip / one,
            rs / ls,
        ]
        .into_iter()
        .enumerate()
        {
            v[i].push(x);
        }
    }
    let row = |name: &str, x: &[f64]| {
        let (m, lo, hi) = stats(x);
        println!("| {name} | {m:.0} [{lo:.0}–{hi:.0}] |");
    };
    let ratio = |name: &str, x: &[f64]| {
        let (m, lo, hi) = stats(x);
        println!("| {name} | {m:.2} [{lo:.2}–{hi:.2}] |");
    };
    let pip_ratio: Vec<f64> = v[6].iter().zip(&v[7]).map(|(r, l)| r / l).collect();
    println!("| over a loopback sshd, per second, median [min–max] of {reps} | |\n|---|---|");
    row("creations through one ssh connection, sequential", &v[0]);
    row(
        "creations through one ssh connection, pipelined (100 queued)",
        &v[1],
    );
    row("creations with one ssh connection each", &v[2]);
    row(
        "creations from a local anyfork-serve template, sequential",
        &v[3],
    );
    row("RPC round trips over the connection, sequential", &v[4]);
    row("RPC round trips to a local worker, sequential", &v[5]);
    row(
        "RPC round trips over the connection, pipelined (1,000 in flight)",
        &v[6],
    );
    row(
        "RPC round trips to a local worker, pipelined (1,000 in flight)",
        &v[7],
    );
    ratio("one connection ÷ connection each, sequential", &v[8]);
    ratio("one connection ÷ connection each, pipelined", &v[9]);
    ratio("RPC over the connection ÷ local, sequential", &v[10]);
    ratio("RPC over the connection ÷ local, pipelined", &pip_ratio);
    drop(rpc_remote);
    drop(rpc_local);
}
