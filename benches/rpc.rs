//! RPC benchmark: round trips of 64-byte messages. Floor: a raw
//! socketpair ping-pong between two processes (blocking read/write);
//! anyfork RPC sequential (driven by `wait`, as a program without an event
//! loop does) and pipelined (1,000 in flight) through the loop fd; a pool
//! of 2 workers doing 100,000 trivial calls. Interleaved repetitions (the
//! floor and sequential calls alternate in slices within each), median
//! [min–max]. For the floor and the sequential calls, also the CPU time
//! per round trip of both processes (caller thread and echo child or
//! worker), which a busy machine distorts less than the wall clock.
//! `-- --quick` for 3 short repetitions.

#[path = "common/calls.rs"]
mod calls;
#[path = "common/worker.rs"]
mod worker;

use calls::{MSG, pipelined, sequential, stats};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyfork::Process;
use anyfork::rpc::{Pool, PoolOpts, Rpc};

/// The floor and sequential round trips of one repetition alternate in
/// this many slices.
const SLICES: usize = 100;

/// The floor: a child process echoing 64-byte messages on a socketpair
/// with blocking reads and writes, and nothing else.
struct Floor {
    fd: i32,
    pid: i32,
}

impl Floor {
    fn new() -> Floor {
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
            Floor { fd: sv[0], pid }
        }
    }

    /// How long `n` round trips take.
    fn run(&self, n: usize) -> Duration {
        let mut b = [7u8; MSG];
        let t = Instant::now();
        for _ in 0..n {
            // SAFETY: a buffer of MSG bytes on our own socket.
            unsafe {
                libc::write(self.fd, b.as_ptr().cast(), MSG);
                assert_eq!(
                    libc::read(self.fd, b.as_mut_ptr().cast(), MSG),
                    MSG as isize
                );
            }
        }
        t.elapsed()
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        // SAFETY: our socket and our child.
        unsafe {
            libc::close(self.fd);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time process `pid` (single-threaded) has used, from its schedstat.
fn process_cpu(pid: i32) -> Duration {
    let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap();
    Duration::from_nanos(s.split_whitespace().next().unwrap().parse().unwrap())
}

/// The RPC worker's pid (the test worker answers "pid").
fn worker_pid(rpc: &Rpc) -> i32 {
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    rpc.call(b"pid", move |r| *g.lock().unwrap() = Some(r.unwrap()))
        .unwrap();
    while got.lock().unwrap().is_none() {
        anyfork::wait(-1).unwrap();
    }
    let pid = got.lock().unwrap().take().unwrap();
    String::from_utf8(pid).unwrap().parse().unwrap()
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

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (reps, n, pn) = if quick {
        (3, 5_000, 20_000)
    } else {
        (7, 20_000, 100_000)
    };
    // SAFETY: set before any thread or process is made.
    unsafe { std::env::set_var("ANYFORK_SERVE", env!("CARGO_BIN_EXE_anyfork-serve")) };
    let lib = worker::worker_lib("rpc_bench_worker");
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
    let fl = Floor::new();
    fl.run(1000);
    sequential(&rpc, 1000);
    pool_rate(&pool, 1000);
    let wpid = worker_pid(&rpc);
    let (mut f, mut s, mut pl, mut po, mut r1, mut r2) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut cf, mut cs, mut r3) = (vec![], vec![], vec![]);
    for _ in 0..reps {
        // The floor and the sequential calls alternate in slices, so that
        // both see the same share of the machine's other load. CPU time
        // (the caller's thread and the other process) is counted too: it
        // depends far less on that load than the wall clock does.
        let (mut tf, mut ts) = (Duration::ZERO, Duration::ZERO);
        let (mut uf, mut us) = (Duration::ZERO, Duration::ZERO);
        let (pf, pw) = (process_cpu(fl.pid), process_cpu(wpid));
        for _ in 0..SLICES {
            let u = thread_cpu();
            tf += fl.run(n / SLICES);
            let u1 = thread_cpu();
            ts += sequential(&rpc, n / SLICES);
            uf += u1 - u;
            us += thread_cpu() - u1;
        }
        let a = n as f64 / tf.as_secs_f64();
        let b = n as f64 / ts.as_secs_f64();
        let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
        let x = per(uf + (process_cpu(fl.pid) - pf));
        let y = per(us + (process_cpu(wpid) - pw));
        cf.push(x);
        cs.push(y);
        r3.push(x / y);
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
    ratio("CPU µs per round trip (both processes): floor", &cf);
    ratio(
        "CPU µs per round trip (both processes): anyfork RPC, sequential",
        &cs,
    );
    ratio("CPU per round trip: floor ÷ sequential", &r3);
}
