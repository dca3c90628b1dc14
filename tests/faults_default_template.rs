//! Issue 6, faults of the default template. These kill the template that
//! `Process::new` shares, so they live in a binary of their own and run one
//! at a time.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyfork::{Errno, Process};
use common::*;

/// The default template's pid: the parent of a process forked from it.
fn default_template_pid() -> i32 {
    let p = Process::new().unwrap();
    let pid = p.pid().unwrap();
    let t = ppid_of(pid).unwrap();
    drop(p);
    t
}

#[derive(Default)]
struct Counts {
    runs: Vec<Vec<anyfork::Result<std::os::fd::OwnedFd>>>,
    exits: Vec<Vec<(i32, Option<Errno>)>>,
}

/// SIGSTOPs the default template, queues 500 `Process::new` + require +
/// send_arg + run on it, SIGKILLs it: every run and exit callback fires
/// exactly once, nothing hangs, nothing stays pending, and the next
/// `Process::new` spawns a new template that works. Every exit callback
/// gets an error (no process was made). A run callback gets an error when
/// the fork request was still queued in the library, or, when the request
/// had already been written into the template's socket (the run callback
/// does not wait for the pid any more), the comm socket, which then ends
/// without a byte (EOF, or ECONNRESET: our commands died unread).
#[test]
fn the_default_template_killed_with_500_processes_queued() {
    let _g = serial();
    // It works before.
    let mut p = new_child();
    p.send_arg(b"before").unwrap();
    assert_eq!(run_text(p, "echo_strings"), "before\n");
    let tpid = default_template_pid();

    kill(tpid, libc::SIGSTOP);
    assert!(common::eventually(Duration::from_secs(5), || state_of(
        tpid
    ) == Some(
        'T'
    )));
    let counts = Arc::new(Mutex::new(Counts {
        runs: (0..500).map(|_| Vec::new()).collect(),
        exits: (0..500).map(|_| Vec::new()).collect(),
    }));
    for i in 0..500 {
        let mut p = new_child();
        let c = counts.clone();
        p.on_exit(move |pid, st| {
            c.lock().unwrap().exits[i].push((pid, st.err().map(|e| e.errno())))
        });
        p.send_arg(format!("{i}").as_bytes()).unwrap();
        let c = counts.clone();
        p.run("echo_strings", move |r| c.lock().unwrap().runs[i].push(r))
            .unwrap();
    }
    kill(tpid, libc::SIGKILL);

    let t0 = Instant::now();
    pump_until(Duration::from_secs(30), "every callback", || {
        let c = counts.lock().unwrap();
        c.runs.iter().all(|v| !v.is_empty()) && c.exits.iter().all(|v| !v.is_empty())
    });
    let took = t0.elapsed();
    for _ in 0..5 {
        anyfork::wait(10).unwrap();
    }
    let mut c = counts.lock().unwrap();
    let mut messages = BTreeSet::new();
    let mut sockets = 0;
    for i in 0..500 {
        assert_eq!(c.runs[i].len(), 1, "process {i}: run callbacks");
        match c.runs[i].pop().unwrap() {
            Err(e) => {
                assert!(e.errno() == Errno::EPIPE, "process {i}: {e}");
                messages.insert(e.message().to_string());
            }
            Ok(sock) => {
                sockets += 1;
                let got = read_until_end(sock);
                assert!(
                    got.is_empty(),
                    "process {i} ran on a killed template: {got:?}"
                );
            }
        }
        assert_eq!(c.exits[i].len(), 1, "process {i}: exit callbacks");
        assert!(c.exits[i][0].1.is_some(), "process {i}: {:?}", c.exits[i]);
    }
    drop(c);
    eprintln!("failed in {took:?}: {sockets} sockets that ended, errors {messages:?}");
    assert!(took < Duration::from_secs(10));
    assert_eq!(anyfork::pending(), 0);

    // The next Process::new spawns a fresh template.
    let mut p = new_child();
    p.send_arg(b"after").unwrap();
    let pid = p.pid().unwrap();
    let new_t = ppid_of(pid).unwrap();
    assert_ne!(new_t, tpid);
    assert_eq!(run_text(p, "echo_strings"), "after\n");
    // The killed one was our child: reaped, no zombie left.
    pump_until(Duration::from_secs(10), "the old template reaped", || {
        state_of(tpid).is_none()
    });
}

/// The default template killed while idle: the next `Process::new`
/// notices and respawns it, without an error reaching the caller.
#[test]
fn the_default_template_killed_while_idle_is_respawned() {
    let _g = serial();
    for round in 0..3 {
        let tpid = default_template_pid();
        kill(tpid, libc::SIGKILL);
        assert!(gone_within(tpid, Duration::from_secs(5)));
        let mut p = new_child();
        p.send_arg(format!("round {round}").as_bytes()).unwrap();
        assert_eq!(run_text(p, "echo_strings"), format!("round {round}\n"));
        assert_ne!(default_template_pid(), tpid);
    }
}

/// Killed between forks that were already confirmed: the processes that
/// exist carry on (their sockets are their own); only the exit reports,
/// which the template would have sent, become unknowable (-ECHILD).
#[test]
fn processes_of_a_killed_default_template_still_run() {
    let _g = serial();
    let mut kids = Vec::new();
    for i in 0..5 {
        let mut p = new_child();
        let ex = exit_rx(&mut p);
        p.send_arg(format!("kid {i}").as_bytes()).unwrap();
        p.pid().unwrap();
        kids.push((p, ex));
    }
    let tpid = ppid_of(kids[0].0.pid().unwrap()).unwrap();
    kill(tpid, libc::SIGKILL);
    assert!(gone_within(tpid, Duration::from_secs(5)));
    for (i, (p, ex)) in kids.into_iter().enumerate() {
        assert_eq!(run_text(p, "echo_strings"), format!("kid {i}\n"));
        let (_, st) = pump(&ex, Duration::from_secs(10), "exit");
        let e = st.expect_err("nobody can report this exit");
        assert_eq!(e.errno(), Errno::ECHILD, "{e}");
    }
    assert_eq!(anyfork::pending(), 0);
}

/// Four threads create processes from the default template while it is
/// killed again and again: every creation either fails at once or its run
/// callback fires exactly once (with the echo, or with an error), nothing
/// hangs, and afterwards the default template works.
#[test]
fn threads_creating_while_the_default_template_is_killed_repeatedly() {
    let _g = serial();
    raise_nofile();
    let per_thread = 300;
    let calls = Arc::new(Mutex::new(vec![0u8; 4 * per_thread]));
    let outcome = Arc::new(Mutex::new((0usize, 0usize, 0usize))); // ok, run error, new error
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut killed = BTreeSet::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && killed.len() < 8 {
                std::thread::sleep(Duration::from_millis(40));
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let me = std::process::id() as i32;
                for t in serve_children(me) {
                    if killed.insert(t) {
                        try_kill(t, libc::SIGKILL);
                        break;
                    }
                }
            }
            killed.len()
        })
    };
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let calls = calls.clone();
            let outcome = outcome.clone();
            std::thread::spawn(move || {
                let mut socks = Vec::new();
                for i in 0..per_thread {
                    let idx = w * per_thread + i;
                    let mut p = match Process::new() {
                        Ok(p) => p,
                        Err(e) => {
                            assert!(!e.message().is_empty());
                            outcome.lock().unwrap().2 += 1;
                            calls.lock().unwrap()[idx] = 1;
                            continue;
                        }
                    };
                    let sent = p
                        .require(child_lib())
                        .and_then(|()| p.send_arg(format!("{idx}").as_bytes()));
                    if let Err(e) = sent {
                        // The process is gone already: no run, no callback.
                        assert!(!e.message().is_empty());
                        outcome.lock().unwrap().2 += 1;
                        calls.lock().unwrap()[idx] = 1;
                        continue;
                    }
                    let (tx, rx) = std::sync::mpsc::channel();
                    let c = calls.clone();
                    let ran = p.run("echo_strings", move |r| {
                        c.lock().unwrap()[idx] += 1;
                        // The receiver outlives every callback that can come.
                        let _ = tx.send(r);
                    });
                    if let Err(e) = ran {
                        assert!(!e.message().is_empty());
                        outcome.lock().unwrap().2 += 1;
                        calls.lock().unwrap()[idx] = 1;
                        continue;
                    }
                    socks.push((idx, rx));
                }
                for (idx, rx) in socks {
                    match pump(&rx, Duration::from_secs(60), "a run callback") {
                        Ok(fd) => {
                            // The run callback may come once the fork
                            // request is written: a process whose template
                            // died before forking it shows as the end of
                            // its socket (EOF, or ECONNRESET: the commands
                            // we wrote died unread with the template; see
                            // tests/destructive.rs). If it answered, it
                            // answered right.
                            let got = read_until_end(fd);
                            if !got.is_empty() {
                                assert_eq!(got, format!("{idx}\n").into_bytes());
                            }
                            outcome.lock().unwrap().0 += 1;
                        }
                        Err(e) => {
                            assert!(!e.message().is_empty());
                            outcome.lock().unwrap().1 += 1;
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a creating thread panicked");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let kills = killer.join().unwrap();
    for _ in 0..10 {
        anyfork::wait(10).unwrap();
    }
    let calls = calls.lock().unwrap();
    for (i, c) in calls.iter().enumerate() {
        assert_eq!(*c, 1, "creation {i}: its run callback ran {c} times");
    }
    let (ok, run_err, new_err) = *outcome.lock().unwrap();
    eprintln!("{kills} kills: {ok} ran, {run_err} run errors, {new_err} creation errors");
    assert_eq!(ok + run_err + new_err, 4 * per_thread);
    assert!(ok > 0, "nothing ran at all");
    assert_eq!(anyfork::pending(), 0);
    let mut p = new_child();
    p.send_arg(b"after the storm").unwrap();
    assert_eq!(run_text(p, "echo_strings"), "after the storm\n");
}

/// Reads a comm socket to its end: EOF, or ECONNRESET (the peer went away
/// with bytes we wrote unread). Anything else, or 30 s, fails.
fn read_until_end(fd: std::os::fd::OwnedFd) -> Vec<u8> {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::from(fd);
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut v = Vec::new();
    match s.read_to_end(&mut v) {
        Ok(_) => v,
        Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => v,
        Err(e) => panic!("reading a comm socket: {e}"),
    }
}
