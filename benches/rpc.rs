//! RPC benchmark: round trips of 64-byte messages. Floor: a raw
//! socketpair ping-pong between two processes (blocking read/write);
//! anyfork RPC sequential and pipelined (1,000 in flight) through the
//! loop fd; a pool of 2 workers doing 100,000 trivial calls. Interleaved
//! repetitions, median [min–max]. `-- --quick` for 3 short repetitions.

use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyfork::Process;
use anyfork::rpc::{Pool, PoolOpts, Rpc};

const MSG: usize = 64;

fn worker_lib() -> String {
    let out = std::path::PathBuf::from(env!("CARGO_BIN_EXE_anyfork-serve"))
        .parent()
        .unwrap()
        .join("librpc_bench_worker.so");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/c/rpc_worker.c");
    let inc = concat!(env!("CARGO_MANIFEST_DIR"), "/include");
    let ok = std::process::Command::new("cc")
        .args(["-O2", "-shared", "-fPIC", "-pthread", "-I", inc, src, "-o"])
        .arg(&out)
        .status()
        .unwrap()
        .success();
    assert!(ok, "building the worker library");
    out.display().to_string()
}

/// Round trips per second of a blocking ping-pong over a socketpair.
fn floor(n: usize) -> f64 {
    let mut sv = [0i32; 2];
    // SAFETY: plain syscalls on fds this function owns.
    unsafe {
        assert_eq!(
            libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()),
            0
        );
        let pid = libc::fork();
        if pid == 0 {
            libc::close(sv[0]);
            let mut b = [0u8; MSG];
            while libc::read(sv[1], b.as_mut_ptr().cast(), MSG) == MSG as isize {
                libc::write(sv[1], b.as_ptr().cast(), MSG);
            }
            libc::_exit(0);
        }
        libc::close(sv[1]);
        let mut b = [7u8; MSG];
        let t = Instant::now();
        for _ in 0..n {
            libc::write(sv[0], b.as_ptr().cast(), MSG);
            assert_eq!(libc::read(sv[0], b.as_mut_ptr().cast(), MSG), MSG as isize);
        }
        let r = n as f64 / t.elapsed().as_secs_f64();
        libc::close(sv[0]);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
        r
    }
}

fn req() -> Vec<u8> {
    let mut r = b"echo ".to_vec();
    r.resize(MSG, b'x');
    r
}

fn sequential(rpc: &Rpc, n: usize) -> f64 {
    let req = req();
    let t = Instant::now();
    for _ in 0..n {
        let (tx, rx) = channel();
        rpc.call(&req, move |r| {
            let _ = tx.send(r.unwrap().len());
        })
        .unwrap();
        loop {
            anyfork::wait(-1).unwrap();
            if rx.try_recv().is_ok() {
                break;
            }
        }
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn pipelined(rpc: &Rpc, n: usize, window: usize) -> f64 {
    let req = req();
    let done = Arc::new(Mutex::new(0usize));
    let t = Instant::now();
    let mut sent = 0;
    while *done.lock().unwrap() < n {
        while sent < n && sent - *done.lock().unwrap() < window {
            let d = done.clone();
            rpc.call(&req, move |_| *d.lock().unwrap() += 1).unwrap();
            sent += 1;
        }
        anyfork::wait(-1).unwrap();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn pool_rate(pool: &Pool, n: usize) -> f64 {
    let done = Arc::new(Mutex::new(0usize));
    let t = Instant::now();
    for _ in 0..n {
        let d = done.clone();
        pool.call(b"echo 1", Box::new(move |_| *d.lock().unwrap() += 1))
            .unwrap();
    }
    while *done.lock().unwrap() < n {
        anyfork::wait(-1).unwrap();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (s[s.len() / 2], s[0], s[s.len() - 1])
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (reps, n, pn) = if quick {
        (3, 5_000, 20_000)
    } else {
        (7, 20_000, 100_000)
    };
    // SAFETY: set before any thread or process is made.
    unsafe { std::env::set_var("ANYFORK_SERVE", env!("CARGO_BIN_EXE_anyfork-serve")) };
    let lib = worker_lib();
    let mut p = Process::new().unwrap();
    p.require(&lib).unwrap();
    let rpc = Rpc::start(p, "rpc_sync", None).unwrap();
    let mut t = Process::new_exec().unwrap();
    t.require(&lib).unwrap();
    let opts = PoolOpts {
        max: 2,
        idle: 2,
        load: 64,
        ..PoolOpts::default()
    };
    let pool = Pool::new(t, "rpc_sync", opts, None).unwrap();
    sequential(&rpc, 1000);
    pool_rate(&pool, 1000);
    let (mut f, mut s, mut pl, mut po, mut r1, mut r2) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..reps {
        let a = floor(n);
        let b = sequential(&rpc, n);
        let c = pipelined(&rpc, n * 5, 1000);
        let d = pool_rate(&pool, pn);
        f.push(a);
        s.push(b);
        pl.push(c);
        po.push(d);
        r1.push(b / a);
        r2.push(c / b);
    }
    let row = |name: &str, v: &[f64]| {
        let (m, lo, hi) = stats(v);
        println!("| {name} | {m:.0} [{lo:.0}–{hi:.0}] |");
    };
    let ratio = |name: &str, v: &[f64]| {
        let (m, lo, hi) = stats(v);
        println!("| {name} | {m:.2} [{lo:.2}–{hi:.2}] |");
    };
    println!("| 64-byte round trips per second, median [min–max] of {reps} | |\n|---|---|");
    row("floor: socketpair ping-pong, two processes", &f);
    row("anyfork RPC, sequential", &s);
    row("anyfork RPC, pipelined (1,000 in flight)", &pl);
    row(
        &format!("pool of 2 workers, {pn} trivial calls (calls/s)"),
        &po,
    );
    ratio("sequential ÷ floor", &r1);
    ratio("pipelined ÷ sequential", &r2);
}
