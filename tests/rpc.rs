//! RPC workers and pools (src/rpc/): ordering, events, sync and async
//! workers, graceful free, crashes, retirement, scaling, backpressure,
//! soak, and a killed caller. Workers are tests/c/rpc_worker.c.

mod common;

use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyfork::rpc::{Pool, PoolOpts, Rpc};
use anyfork::{Process, Result};
use common::*;

fn worker_lib() -> String {
    build("rpc_worker", Kind::Library, &["-pthread"])
        .display()
        .to_string()
}

fn template() -> Process {
    let mut p = Process::new_exec().expect("new_exec");
    p.require(&worker_lib()).expect("require");
    p
}

fn child() -> Process {
    let mut p = Process::new().expect("new");
    p.require(&worker_lib()).expect("require");
    p
}

/// Polls the loop fd up to `ms` and dispatches (timers need no pending
/// callback to fire, so `anyfork::wait` alone would not sleep).
fn turn(ms: i32) {
    let fd = anyfork::loop_fd().unwrap();
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) };
    anyfork::dispatch().unwrap();
}

fn until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < limit, "timed out after {limit:?}: {what}");
        turn(10);
    }
}

fn text(r: Result<Vec<u8>>) -> String {
    String::from_utf8(r.expect("a reply")).unwrap()
}

/// Calls `req` and returns a receiver for its outcome.
fn call(rpc: &Rpc, req: &str) -> Receiver<Result<Vec<u8>>> {
    let (tx, rx) = channel();
    rpc.call(req.as_bytes(), move |r| {
        let _ = tx.send(r);
    })
    .expect("call");
    rx
}

fn pool_call(pool: &Pool, req: &str) -> Receiver<Result<Vec<u8>>> {
    let (tx, rx) = channel();
    pool.call(
        req.as_bytes(),
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    )
    .expect("pool call");
    rx
}

fn get(rx: &Receiver<Result<Vec<u8>>>) -> Result<Vec<u8>> {
    let t = Instant::now();
    loop {
        if let Ok(v) = rx.try_recv() {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no reply within 30 s"
        );
        turn(10);
    }
}

#[test]
fn a_sync_worker_answers_in_order_with_events_in_between() {
    let _s = serial();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let rpc = Rpc::start(
        child(),
        "rpc_sync",
        Some(Arc::new(move |e: Vec<u8>| {
            l.lock()
                .unwrap()
                .push(format!("event {}", String::from_utf8_lossy(&e)))
        })),
    )
    .unwrap();
    for req in ["echo a", "events 3", "echo b", "sleep 30", "echo c"] {
        let l = log.clone();
        rpc.call(req.as_bytes(), move |r| {
            l.lock().unwrap().push(format!("reply {}", text(r)))
        })
        .unwrap();
    }
    until(Duration::from_secs(10), "5 replies", || {
        log.lock().unwrap().len() == 8
    });
    assert_eq!(
        *log.lock().unwrap(),
        [
            "reply a",
            "event ev0",
            "event ev1",
            "event ev2",
            "reply done",
            "reply b",
            "reply slept",
            "reply c"
        ]
    );
}

#[test]
fn an_async_worker_answers_out_of_order_matched_by_id() {
    let _s = serial();
    let rpc = Rpc::start(child(), "rpc_async", None).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    for ms in [400, 10, 200] {
        let o = order.clone();
        rpc.call(format!("sleep {ms}").as_bytes(), move |r| {
            o.lock().unwrap().push(text(r))
        })
        .unwrap();
    }
    until(Duration::from_secs(10), "3 replies", || {
        order.lock().unwrap().len() == 3
    });
    assert_eq!(
        *order.lock().unwrap(),
        ["slept 10", "slept 200", "slept 400"]
    );
}

#[test]
fn free_is_graceful_calls_are_answered_then_the_worker_exits_then_destroyed() {
    let _s = serial();
    for function in ["rpc_sync", "rpc_async"] {
        let p = child();
        let pid = p.pid().unwrap();
        let rpc = Rpc::start(p, function, None).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        for i in 0..5 {
            let l = log.clone();
            rpc.call(format!("sleep {}", 10 * (5 - i)).as_bytes(), move |r| {
                l.lock()
                    .unwrap()
                    .push(if r.is_ok() { "reply" } else { "error" })
            })
            .unwrap();
        }
        let l = log.clone();
        let alive_at_destroy = Arc::new(Mutex::new(None));
        let a = alive_at_destroy.clone();
        rpc.free(move |why| {
            assert!(why.is_none(), "a clean end, got {why:?}");
            *a.lock().unwrap() = Some(alive(pid));
            l.lock().unwrap().push("destroyed")
        });
        // fork_wait counts the destroyed callback as pending.
        while anyfork::wait(-1).unwrap() > 0 {}
        assert_eq!(
            *log.lock().unwrap(),
            ["reply", "reply", "reply", "reply", "reply", "destroyed"],
            "{function}"
        );
        assert!(
            gone_within(pid, Duration::from_secs(5)),
            "{function}: worker left"
        );
    }
}

#[test]
fn a_worker_that_exits_fails_each_waiting_call_once_and_later_calls_are_refused() {
    let _s = serial();
    let rpc = Rpc::start(child(), "rpc_sync", None).unwrap();
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    for req in ["echo x", "exit", "echo y", "echo z"] {
        let o = outcomes.clone();
        rpc.call(req.as_bytes(), move |r| {
            o.lock().unwrap().push(r.map_err(|e| e.errno()))
        })
        .unwrap();
    }
    until(Duration::from_secs(10), "4 outcomes", || {
        outcomes.lock().unwrap().len() == 4
    });
    std::thread::sleep(Duration::from_millis(100));
    turn(0);
    let o = outcomes.lock().unwrap().clone();
    assert_eq!(o.len(), 4, "each call exactly once: {o:?}");
    // A synchronous worker writes the replies to requests that arrived
    // together at once: "echo x" is answered only if it came alone.
    assert!(o[0] == Ok(b"x".to_vec()) || o[0] == Err(anyfork::Errno::EPIPE));
    assert!(
        o[1..].iter().all(|r| *r == Err(anyfork::Errno::EPIPE)),
        "{o:?}"
    );
    let e = rpc.call(b"echo late", |_| panic!("a refused call ran its callback"));
    assert_eq!(e.unwrap_err().errno(), anyfork::Errno::EPIPE);
}

#[test]
fn a_slow_worker_never_blocks_the_loop() {
    let _s = serial();
    let slow = Rpc::start(child(), "rpc_sync", None).unwrap();
    let fast = Rpc::start(child(), "rpc_sync", None).unwrap();
    let first = call(&slow, "sleep 1500");
    // 8 MiB more than any socket buffer holds: queued, not written.
    let big = vec![b'x'; 8 << 20];
    let t = Instant::now();
    let mut req = b"echo ".to_vec();
    req.extend_from_slice(&big);
    let (tx, big_rx) = channel();
    slow.call(&req, move |r| {
        let _ = tx.send(r);
    })
    .unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "call blocked {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    assert_eq!(text(get(&call(&fast, "echo quick"))), "quick");
    assert!(
        t.elapsed() < Duration::from_millis(700),
        "another worker's reply took {:?} while the slow one slept",
        t.elapsed()
    );
    assert_eq!(text(get(&first)), "slept");
    assert_eq!(get(&big_rx).unwrap().len(), big.len());
}

#[test]
fn a_python_worker_speaks_the_framing_through_exec() {
    let _s = serial();
    if !have("python3", &["-c", "pass"]) {
        eprintln!("python3 missing: skipped");
        return;
    }
    let script = root().join("tests/c/rpc_worker.py");
    let mut p = Process::new().unwrap();
    p.eval("anyfork_comm_fd", &[b"0", b"1"]).unwrap();
    p.send_arg(b"python3").unwrap();
    p.send_arg(script.to_str().unwrap().as_bytes()).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = events.clone();
    let rpc = Rpc::start(
        p,
        "anyfork_exec",
        Some(Arc::new(move |d: Vec<u8>| e.lock().unwrap().push(d))),
    )
    .unwrap();
    let a = call(&rpc, "hello");
    let b = call(&rpc, "");
    assert_eq!(get(&a).unwrap(), b"HELLO");
    assert_eq!(get(&b).unwrap(), b"");
    assert_eq!(
        *events.lock().unwrap(),
        [b"got 5 bytes".to_vec(), b"got 0 bytes".to_vec()]
    );
    let (tx, rx) = channel();
    rpc.free(move |why| {
        let _ = tx.send(why);
    });
    let t = Instant::now();
    loop {
        if let Ok(why) = rx.try_recv() {
            assert!(why.is_none(), "{why:?}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10));
        turn(10);
    }
}

fn opts(max: usize, load: usize) -> PoolOpts {
    PoolOpts {
        max,
        load,
        ..PoolOpts::default()
    }
}

fn pid_of(r: Result<Vec<u8>>) -> i32 {
    text(r).parse().unwrap()
}

#[test]
fn a_pool_worker_killed_with_100_calls_in_flight_fails_each_once_and_the_pool_recovers() {
    let _s = serial();
    let pool = Pool::new(template(), "rpc_sync", opts(1, 200), None).unwrap();
    let pid = pid_of(get(&pool_call(&pool, "pid")));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..100 {
        let o = outcomes.clone();
        pool.call(
            b"sleep 20",
            Box::new(move |r| o.lock().unwrap().push(r.is_ok())),
        )
        .unwrap();
    }
    until(Duration::from_secs(5), "a few replies", || {
        outcomes.lock().unwrap().len() >= 3
    });
    kill(pid, libc::SIGKILL);
    until(Duration::from_secs(10), "100 outcomes", || {
        outcomes.lock().unwrap().len() >= 100
    });
    for _ in 0..10 {
        turn(10);
    }
    let o = outcomes.lock().unwrap().clone();
    assert_eq!(o.len(), 100, "each call exactly once");
    let failed = o.iter().filter(|ok| !**ok).count();
    assert!(
        failed >= 50,
        "{failed} of 100 failed; most were still in flight"
    );
    let again = pid_of(get(&pool_call(&pool, "pid")));
    assert_ne!(again, pid, "a replacement worker answers");
    assert_eq!(pool.workers(), 1);
}

#[test]
fn workers_retire_on_request_and_after_n_calls() {
    let _s = serial();
    let pool = Pool::new(template(), "rpc_sync", opts(1, 1), None).unwrap();
    let a = pid_of(get(&pool_call(&pool, "pid")));
    assert_eq!(text(get(&pool_call(&pool, "retire"))), "retiring");
    let b = pid_of(get(&pool_call(&pool, "pid")));
    assert_ne!(a, b, "a retired worker gets nothing new");
    assert!(
        gone_within(a, Duration::from_secs(5)),
        "the retired worker exited"
    );

    let mut o = opts(1, 1);
    o.retire_after = 3;
    let pool = Pool::new(template(), "rpc_sync", o, None).unwrap();
    let rxs: Vec<_> = (0..7).map(|_| pool_call(&pool, "pid")).collect();
    let pids: Vec<i32> = rxs.iter().map(|r| pid_of(get(r))).collect();
    assert_eq!(pids[0], pids[2]);
    assert_ne!(pids[2], pids[3]);
    assert_eq!(pids[3], pids[5]);
    assert_ne!(pids[5], pids[6]);
}

#[test]
fn a_pool_scales_up_after_start_and_down_after_stop() {
    let _s = serial();
    let o = PoolOpts {
        max: 3,
        idle: 1,
        load: 1,
        start: Duration::from_millis(300),
        stop: Duration::from_millis(500),
        retire_after: 0,
    };
    let pool = Pool::new(template(), "rpc_sync", o, None).unwrap();
    assert_eq!(pool.workers(), 1, "idle workers start at once");
    let t0 = Instant::now();
    let rxs: Vec<_> = (0..3).map(|_| pool_call(&pool, "sleep 1500")).collect();
    until(Duration::from_secs(5), "a second worker", || {
        pool.workers() == 2
    });
    let second = t0.elapsed();
    until(Duration::from_secs(5), "a third worker", || {
        pool.workers() == 3
    });
    let third = t0.elapsed();
    assert!(
        second >= Duration::from_millis(280) && second < Duration::from_millis(800),
        "second worker after {second:?}"
    );
    assert!(
        third - second >= Duration::from_millis(280),
        "third worker {:?} after the second",
        third - second
    );
    // Replies come at about 1.5, 1.8 and 2.1 s; each worker idle for
    // 0.5 s is stopped while more than `idle` (1) are idle.
    let first = {
        assert_eq!(text(get(&rxs[0])), "slept");
        Instant::now()
    };
    until(Duration::from_secs(5), "one worker stopped", || {
        pool.workers() == 2
    });
    let down = first.elapsed();
    assert!(
        down >= Duration::from_millis(450) && down < Duration::from_millis(1200),
        "the first idle worker was stopped {down:?} after its reply"
    );
    for r in &rxs[1..] {
        assert_eq!(text(get(r)), "slept");
    }
    until(Duration::from_secs(5), "back to the idle minimum", || {
        pool.workers() == 1
    });
    for _ in 0..80 {
        turn(10);
    }
    assert_eq!(pool.workers(), 1, "idle workers are kept");
}

#[test]
fn a_freed_pool_answers_its_queue_then_its_workers_exit_then_destroyed() {
    let _s = serial();
    let pool = Pool::new(template(), "rpc_sync", opts(2, 1), None).unwrap();
    let pids = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..10 {
        let (p, l) = (pids.clone(), log.clone());
        pool.call(
            b"pid",
            Box::new(move |r| {
                p.lock().unwrap().push(pid_of(r));
                l.lock().unwrap().push("reply");
            }),
        )
        .unwrap();
    }
    let l = log.clone();
    pool.free(Some(Box::new(move || l.lock().unwrap().push("destroyed"))));
    while anyfork::wait(-1).unwrap() > 0 {}
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 11);
    assert_eq!(log.last(), Some(&"destroyed"));
    for pid in pids.lock().unwrap().iter() {
        assert!(
            gone_within(*pid, Duration::from_secs(5)),
            "worker {pid} left"
        );
    }
}

#[test]
fn a_hundred_thousand_pool_calls_leave_fds_and_memory_flat() {
    let _s = serial();
    let mut o = opts(2, 64);
    o.idle = 2; // both workers from the start: their sockets are counted
    let pool = Pool::new(template(), "rpc_sync", o, None).unwrap();
    let me = std::process::id() as i32;
    let done = Arc::new(Mutex::new(0usize));
    let batch = |n: usize| {
        let target = *done.lock().unwrap() + n;
        for i in 0..n {
            let d = done.clone();
            pool.call(
                format!("echo {i}").as_bytes(),
                Box::new(move |r| {
                    assert_eq!(text(r), i.to_string());
                    *d.lock().unwrap() += 1;
                }),
            )
            .unwrap();
        }
        until(Duration::from_secs(60), "a batch", || {
            *done.lock().unwrap() == target
        });
    };
    batch(10_000);
    // Workers and pools of earlier tests finish closing meanwhile.
    for _ in 0..30 {
        turn(10);
    }
    let (fds, rss) = (open_fds(), status_kb(me, "VmRSS").unwrap());
    let before = fds_of(me);
    for _ in 0..9 {
        batch(10_000);
    }
    for _ in 0..30 {
        turn(10);
    }
    let (fds2, rss2) = (open_fds(), status_kb(me, "VmRSS").unwrap());
    assert_eq!(
        fds2,
        fds,
        "fd count changed: {before:?} -> {:?}",
        fds_of(me)
    );
    assert!(rss2 < rss + 4096, "RSS grew from {rss} kB to {rss2} kB");
}

#[test]
fn a_killed_caller_leaves_no_pool_worker_behind() {
    let _s = serial();
    let prog = build("rpc_caller", Kind::Program, &[]);
    let mut c = std::process::Command::new(&prog)
        .arg(worker_lib())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(c.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pids: Vec<i32> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "the caller printed {line:?}");
    assert_ne!(pids[0], pids[1]);
    assert!(pids.iter().all(|p| alive(*p)));
    kill(c.id() as i32, libc::SIGKILL);
    c.wait().unwrap();
    for p in pids {
        assert!(
            gone_within(p, Duration::from_secs(1)),
            "worker {p} outlived its caller"
        );
    }
}

#[test]
fn the_libuv_example_hands_200_requests_to_a_pool() {
    let _s = serial();
    example("rpc_pool_worker");
    let text = common::stdout_of(&mut std::process::Command::new(example("rpc_pool")));
    assert!(
        text.contains("pool destroyed (0); 200 answered, 0 failed"),
        "{text}"
    );
}
