//! The grown caller and the template as large as it: heap ballast, benches/grow.c, big-template latencies.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyfork::Process;

use crate::methods::{await_sock, ok, to_inbox};
use crate::stats::pct_us;
use crate::sys::{MB, cc, check, manifest_dir, page_size, self_rss};

/// Heap blocks malloc'd and touched to make this process big; never freed.
#[derive(Default)]
pub struct Ballast {
    pub bytes: usize,
}

impl Ballast {
    /// Mallocs and writes every page until VmRSS reaches `target` bytes.
    pub fn grow_to(&mut self, target: usize) {
        let have = self_rss();
        if have >= target {
            return;
        }
        let need = target - have;
        let page = page_size();
        // SAFETY: malloc of `need` bytes; each page of the block is written
        // once; the block is leaked on purpose (it is the ballast).
        unsafe {
            let p = libc::malloc(need) as *mut u8;
            assert!(!p.is_null(), "malloc({need}) failed");
            // Keep the 4 KB pages the figures assume: no THP here.
            let start = (p as usize).next_multiple_of(page);
            let end = (p as usize + need) / page * page;
            if end > start {
                libc::madvise(
                    start as *mut libc::c_void,
                    end - start,
                    libc::MADV_NOHUGEPAGE,
                );
            }
            let mut off = 0;
            while off < need {
                p.add(off).write_volatile(1);
                off += page;
            }
            p.add(need - 1).write_volatile(1);
        }
        self.bytes += need;
    }
}

/// Builds benches/grow.c as a library a template can require.
pub fn build_grow(out_dir: &Path) -> PathBuf {
    let root = manifest_dir();
    let out = out_dir.join("libanyfork-bench-grow.so");
    let cc = cc();
    let ok = Command::new(&cc)
        .args(["-O2", "-shared", "-fPIC", "-o"])
        .arg(&out)
        .arg(root.join("benches/grow.c"))
        .arg("-I")
        .arg(root.join("include"))
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "cannot compile benches/grow.c with {cc}");
    out
}

/// One creation from `t`: fork and run `bench_hello`; ns until its byte
/// arrives (the new process runs user code). Its exit, which for a large
/// process takes as long as the fork, is not waited for.
pub fn one_from(t: &Process) -> u64 {
    let s = Instant::now();
    let p = ok(t.fork(), "Process::fork");
    ok(p.run("bench_hello", to_inbox), "run");
    let sock = await_sock();
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    check(unsafe { libc::poll(&mut pfd, 1, 60_000) }, "poll");
    let ns = s.elapsed().as_nanos() as u64;
    let mut b = 0u8;
    // SAFETY: reads one byte into a local.
    let n = unsafe { libc::read(sock.as_raw_fd(), (&mut b as *mut u8).cast(), 1) };
    assert_eq!((n, b), (1, b'!'), "bench_hello did not answer");
    ns
}

/// The warm pool's case: a template as large as the caller (`bytes`),
/// single creations with pauses between them, timed until the new process
/// runs user code. `rounds` creations without a pool, then as many with a
/// pool of one child (after one untimed), each after a pause of four times
/// the pool-less p50 and 10 ms (time for the last process to exit and the
/// pool to refill). Sorted latencies (ns) of both.
pub fn big_template_latency(grow: &Path, bytes: usize, rounds: usize) -> (Vec<u64>, Vec<u64>) {
    let mut t = ok(Process::new_exec(), "Process::new_exec");
    ok(t.require(&grow.display().to_string()), "require");
    let mib = (bytes / MB).to_string();
    ok(t.eval("bench_grow", &[mib.as_bytes()]), "eval bench_grow");
    one_from(&t);
    let mut cold: Vec<u64> = (0..rounds)
        .map(|_| {
            let ns = one_from(&t);
            std::thread::sleep(Duration::from_nanos(2 * ns));
            ns
        })
        .collect();
    cold.sort_unstable();
    let pause = Duration::from_nanos(4 * cold[cold.len() / 2]) + Duration::from_millis(10);
    ok(t.eval("anyfork_warm", &[b"1"]), "eval anyfork_warm");
    std::thread::sleep(pause);
    one_from(&t);
    std::thread::sleep(pause);
    let mut warm: Vec<u64> = (0..rounds)
        .map(|_| {
            let ns = one_from(&t);
            std::thread::sleep(pause);
            ns
        })
        .collect();
    warm.sort_unstable();
    (cold, warm)
}

/// Spacing of the sparse creations.
const SPARSE_GAP: Duration = Duration::from_millis(5);

/// Issue 18's warm-pool case: sparse creations (one every 5 ms) from a
/// small template (a fresh anyfork-serve that required benches/grow.c's
/// library), timed until the new process's first byte arrives. Two such
/// templates, one keeping a warm pool of 2, take turns creation by
/// creation, so that both see the same load. For each of `reps`
/// repetitions of `rounds` creations each: the p50 (µs) without and with
/// the pool.
pub fn sparse_latency(grow: &Path, reps: usize, rounds: usize) -> Vec<(f64, f64)> {
    let lib = grow.display().to_string();
    let make = |warm: bool| {
        let mut t = ok(Process::new_exec(), "Process::new_exec");
        ok(t.require(&lib), "require");
        if warm {
            ok(t.eval("anyfork_warm", &[b"2"]), "eval anyfork_warm");
        }
        one_from(&t);
        t
    };
    let (cold, warm) = (make(false), make(true));
    std::thread::sleep(Duration::from_millis(20));
    let out = (0..reps)
        .map(|_| {
            let (mut a, mut b) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
            for i in 0..2 * rounds {
                std::thread::sleep(SPARSE_GAP);
                if i % 2 == 0 {
                    a.push(one_from(&cold));
                } else {
                    b.push(one_from(&warm));
                }
            }
            a.sort_unstable();
            b.sort_unstable();
            (pct_us(&a, 50), pct_us(&b, 50))
        })
        .collect();
    drop((cold, warm));
    let _ = anyfork::dispatch();
    out
}
