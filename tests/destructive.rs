//! Issue 2, the tests that disturb the whole library: killing the default
//! template, and counting the caller's fds across 5,000 creations. Each
//! runs in a fresh process of this binary (`support::isolated`), so the
//! default template it kills and the fds it counts are its own.

mod common;

use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyfork::Process;
use common::*;

const LIMIT: Duration = Duration::from_secs(120);

/// The default template: the parent of a freshly forked process, which
/// must be our own child running anyfork-serve.
fn default_template() -> i32 {
    let p = Process::new().unwrap();
    let pid = p.pid().unwrap();
    let t = ppid_of(pid).expect("the forked process exists");
    assert_eq!(
        ppid_of(t),
        Some(std::process::id() as i32),
        "the default template is our child"
    );
    assert_eq!(comm_of(t).as_deref(), Some("anyfork-serve"));
    assert!(serve_children(std::process::id() as i32).contains(&t));
    t
}

fn echo(p: Process, s: &str) -> Vec<u8> {
    let mut p = p;
    p.send_arg(s.as_bytes()).unwrap();
    run_output(p, "echo_strings")
}

/// The sockets `pid` has open, as "socket:[inode]" link texts.
fn sockets_of(pid: i32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return vec![];
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.display().to_string())
        .filter(|l| l.starts_with("socket:"))
        .collect()
}

/// Waits until no child of template `t` still holds one of its sockets (a
/// freshly forked child holds a copy of the template's socket until it
/// closes it, moments after the fork).
fn children_let_go(t: i32) {
    let mine = sockets_of(t);
    assert!(!mine.is_empty());
    let settled = common::eventually(Duration::from_secs(10), || {
        common::children_of(t)
            .iter()
            .all(|&k| sockets_of(k).iter().all(|s| !mine.contains(s)))
    });
    assert!(settled, "a child of the template kept its socket");
}

/// Kills the default template and checks that the next `Process::new`
/// works, that a process forked before the kill still runs, and that its
/// exit status is reported as unknowable.
fn kill_default_template_and_create(round: usize, settle: bool) {
    let old = default_template();
    // A process forked before the kill is a server of its own: it still
    // runs, but nobody can report its exit any more.
    let mut before = new_child();
    let before_exit = exit_rx(&mut before);
    before.pid().unwrap();
    let burst: Vec<Process> = (0..10).map(|_| Process::new().unwrap()).collect();
    for b in &burst {
        b.pid().unwrap();
    }
    if settle {
        children_let_go(old);
    }

    kill(old, libc::SIGKILL);
    assert!(gone(old), "round {round}: the template survived SIGKILL");

    let mut p = Process::new().unwrap_or_else(|e| panic!("round {round}: new after the kill: {e}"));
    p.require(child_lib()).unwrap();
    p.send_arg(format!("after kill {round}").as_bytes())
        .unwrap();
    let sock = run(p, "echo_strings")
        .unwrap_or_else(|e| panic!("round {round}: the first process after the kill: {e}"));
    assert_eq!(
        common::read_to_eof(sock),
        format!("after kill {round}\n").into_bytes()
    );
    let new = default_template();
    assert_ne!(new, old, "round {round}: the dead template was reused");

    assert_eq!(echo(before, "forked before"), b"forked before\n");
    let (_, st) = wait_exit(&before_exit);
    assert!(
        st.is_err(),
        "round {round}: an exit status from a dead template: {st:?}"
    );
    drop(burst);
}

#[test]
fn after_kill_9_of_the_default_template_new_works_again() {
    isolated(
        "after_kill_9_of_the_default_template_new_works_again",
        LIMIT,
        || {
            for round in 0..3 {
                kill_default_template_and_create(round, true);
            }
            // The dead templates were reaped (no zombies of ours).
            pump_until(
                Duration::from_secs(10),
                "the dead templates to be reaped",
                || serve_children(std::process::id() as i32).len() == 1,
            );
        },
    );
}

#[test]
fn new_works_right_after_kill_9_while_fresh_forks_still_start() {
    isolated(
        "new_works_right_after_kill_9_while_fresh_forks_still_start",
        LIMIT,
        || {
            // Busy threads slow the template's fresh children down, as a loaded
            // machine does; without them the race is rarer, not absent.
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let spin: Vec<_> = (0..4)
                .map(|_| {
                    let s = stop.clone();
                    std::thread::spawn(move || {
                        while !s.load(Ordering::Relaxed) {
                            std::hint::spin_loop();
                        }
                    })
                })
                .collect();
            let r = std::panic::catch_unwind(|| {
                for round in 0..40 {
                    kill_default_template_and_create(round, false);
                }
            });
            stop.store(true, Ordering::Relaxed);
            for t in spin {
                t.join().unwrap();
            }
            if let Err(e) = r {
                std::panic::resume_unwind(e);
            }
        },
    );
}

#[test]
fn killing_the_default_template_with_creations_queued_answers_each_once_and_recovers() {
    isolated(
        "killing_the_default_template_with_creations_queued_answers_each_once_and_recovers",
        LIMIT,
        || {
            let old = default_template();
            let n = 100;
            type Slots<T> = Arc<Mutex<Vec<Vec<T>>>>;
            let runs: Slots<anyfork::Result<OwnedFd>> =
                Arc::new(Mutex::new((0..n).map(|_| Vec::new()).collect()));
            let exits: Slots<(i32, anyfork::Result<i32>)> =
                Arc::new(Mutex::new((0..n).map(|_| Vec::new()).collect()));
            stop(old);
            for i in 0..n {
                let mut p = Process::new().unwrap();
                p.send_arg(b"0").unwrap();
                let e = exits.clone();
                p.on_exit(move |pid, st| e.lock().unwrap()[i].push((pid, st)));
                let r = runs.clone();
                p.run("anyfork_exit", move |s| r.lock().unwrap()[i].push(s))
                    .unwrap();
            }
            kill(old, libc::SIGKILL);
            assert!(gone(old));
            pump_until(Duration::from_secs(30), "every callback", || {
                runs.lock().unwrap().iter().all(|r| !r.is_empty())
                    && exits.lock().unwrap().iter().all(|r| !r.is_empty())
            });
            for _ in 0..5 {
                anyfork::dispatch().unwrap();
            }
            // None of them was forked. The run callback gets an error, or
            // (its request already written to the dead template) a socket
            // that ends without data; the exit callback says it never ran.
            for (i, r) in std::mem::take(&mut *runs.lock().unwrap())
                .into_iter()
                .enumerate()
            {
                assert_eq!(r.len(), 1, "#{i}: run callbacks");
                if let Ok(sock) = r.into_iter().next().unwrap() {
                    match read_all(sock) {
                        Ok(out) => assert!(out.is_empty(), "#{i}: answered"),
                        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "#{i}"),
                    }
                }
            }
            for (i, x) in exits.lock().unwrap().iter().enumerate() {
                assert_eq!(x.len(), 1, "#{i}: exit callbacks");
                assert!(
                    x[0].1.is_err(),
                    "#{i}: an exit status for a process never forked"
                );
                assert_eq!(x[0].0, -1, "#{i}: a pid for a process never forked");
            }
            assert_eq!(echo(new_child(), "recovered"), b"recovered\n");
        },
    );
}

#[test]
fn five_thousand_creations_leave_the_callers_fd_count_unchanged() {
    isolated(
        "five_thousand_creations_leave_the_callers_fd_count_unchanged",
        LIMIT,
        || {
            // Warm up: the reactor, the default template and libchildren exist.
            assert_eq!(echo(new_child(), "warm"), b"warm\n");
            let m = memfd("sent");
            pump_until(Duration::from_secs(10), "quiet", || anyfork::pending() == 0);
            let before = common::open_fds();

            let done = Arc::new(AtomicUsize::new(0));
            let mut expected = 0;
            for batch in 0..25 {
                for j in 0..200 {
                    let i = batch * 200 + j;
                    let mut p = Process::new().unwrap_or_else(|e| panic!("#{i}: new: {e}"));
                    if i % 5 == 0 {
                        p.send_fd(m.as_fd()).unwrap();
                    }
                    p.send_arg(b"0").unwrap();
                    if i % 11 == 0 {
                        // Freed without running.
                        drop(p);
                        continue;
                    }
                    let d = done.clone();
                    p.on_exit({
                        let d = d.clone();
                        move |_, st| {
                            assert_eq!(
                                st.map(|s| libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0),
                                Ok(true)
                            );
                            d.fetch_add(1, Ordering::SeqCst);
                        }
                    });
                    p.run("anyfork_exit", move |s| {
                        drop(s.expect("run"));
                        d.fetch_add(1, Ordering::SeqCst);
                    })
                    .unwrap();
                    expected += 2;
                }
                pump_until(Duration::from_secs(60), "a batch of creations", || {
                    done.load(Ordering::SeqCst) == expected
                });
            }
            // Freed handles close once their template confirms the fork.
            let ok = common::eventually(Duration::from_secs(10), || {
                let _ = anyfork::dispatch();
                common::open_fds() == before
            });
            assert!(
                ok,
                "open fds: {} before, {} after 5,000 creations",
                before,
                common::open_fds()
            );
        },
    );
}
