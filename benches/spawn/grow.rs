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

/// Lets `gap` pass the way an event-loop program idles: waiting on the
/// loop fd and dispatching what it reports (exit reports, a refill of
/// processes forked ahead).
fn idle(gap: Duration) {
    let end = Instant::now() + gap;
    let fd = ok(anyfork::loop_fd(), "loop_fd");
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_micros().div_ceil(1000) as i32;
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, ms) } > 0 {
            let _ = anyfork::dispatch();
        }
    }
}

/// One repetition of [`sparse_latency`]: p50s in µs.
#[derive(Clone, Copy)]
pub struct Sparse {
    /// A plain template.
    pub cold: f64,
    /// A template keeping a warm pool of 2.
    pub warm: f64,
    /// A template with 2 processes forked ahead in the caller.
    pub ahead: f64,
}

/// Spacing of the sparse creations.
const SPARSE_GAP: Duration = Duration::from_millis(5);

/// Issue 18's warm-pool case: sparse creations (one every 5 ms) from a
/// small template (a fresh anyfork-serve that required benches/grow.c's
/// library), timed until the new process's first byte arrives; between
/// creations the caller idles as an event loop does ([`idle`]). Three such
/// templates take turns creation by creation, so that all see the same
/// load: one plain, one keeping a warm pool of 2 (`anyfork_warm`), one
/// with 2 processes forked ahead in the caller (`fork_ahead`). For each
/// of `reps` repetitions of `rounds` creations each: the p50s (µs).
pub fn sparse_latency(grow: &Path, reps: usize, rounds: usize) -> Vec<Sparse> {
    let lib = grow.display().to_string();
    let make = |warm: bool, ahead: bool| {
        let mut t = ok(Process::new_exec(), "Process::new_exec");
        ok(t.require(&lib), "require");
        if warm {
            ok(t.eval("anyfork_warm", &[b"2"]), "eval anyfork_warm");
        }
        if ahead {
            ok(t.fork_ahead(2), "fork_ahead");
        }
        one_from(&t);
        t
    };
    let (cold, warm, ahead) = (make(false, false), make(true, false), make(false, true));
    idle(Duration::from_millis(20));
    let out = (0..reps)
        .map(|_| {
            let mut got: [Vec<u64>; 3] = Default::default();
            for i in 0..3 * rounds {
                idle(SPARSE_GAP);
                let t = [&cold, &warm, &ahead][i % 3];
                got[i % 3].push(one_from(t));
            }
            let [a, b, c] = got.map(|mut v| {
                v.sort_unstable();
                pct_us(&v, 50)
            });
            Sparse {
                cold: a,
                warm: b,
                ahead: c,
            }
        })
        .collect();
    drop((cold, warm, ahead));
    let _ = anyfork::dispatch();
    out
}
