//! Driving an RPC worker of tests/c/rpc_worker.c the way a program without
//! an event loop does (`wait`): 64-byte echo requests one at a time or many
//! in flight, and the median [min–max] of repetitions. Shared by
//! benches/rpc.rs and benches/remote.rs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyfork::rpc::Rpc;

/// Bytes in each request (and, less the "echo " prefix, each reply).
pub const MSG: usize = 64;

/// An echo request of [`MSG`] bytes.
pub fn req() -> Vec<u8> {
    let mut r = b"echo ".to_vec();
    r.resize(MSG, b'x');
    r
}

/// How long `n` calls take one at a time: call, then `wait` until its
/// callback has run (it counts the replies, as a C program's callback
/// would set a flag).
pub fn sequential(rpc: &Rpc, n: usize) -> Duration {
    let req = req();
    let got = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    for i in 0..n {
        let g = got.clone();
        rpc.call(&req, move |r| {
            assert_eq!(r.unwrap().len(), MSG - 5);
            g.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        while got.load(Ordering::Relaxed) == i {
            anyfork::wait(-1).unwrap();
        }
    }
    t.elapsed()
}

/// Calls per second with up to `window` in flight.
pub fn pipelined(rpc: &Rpc, n: usize, window: usize) -> f64 {
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

/// Median, min and max.
pub fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (s[s.len() / 2], s[0], s[s.len() - 1])
}
