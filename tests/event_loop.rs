//! Issue 3: the library driven by a loop. Pids and exit statuses for
//! processes forked from templates, creations queued without dispatching,
//! a template that dies with work queued, back-pressure without a busy
//! loop, and an idle loop fd. Each test runs in a fresh process of this
//! binary (`support::isolated`): the loop fd is library-wide, so idleness
//! and callback counts are only meaningful when no other test shares it,
//! and a hang in the library then fails the test instead of the suite.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyfork::Process;
use common::*;

const LIMIT: Duration = Duration::from_secs(90);

/// Polls the loop fd for readability for up to `ms`.
fn loop_readable(ms: i32) -> bool {
    let fd = anyfork::loop_fd().expect("loop_fd");
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    assert!(n >= 0, "poll: {}", std::io::Error::last_os_error());
    n == 1
}

/// Turns the loop the way an event loop does: wait for the loop fd, then
/// dispatch, until `done` holds. Returns the callbacks dispatch ran.
fn drive(limit: Duration, what: &str, done: impl Fn() -> bool) -> usize {
    let t = Instant::now();
    let mut ran = 0;
    while !done() {
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        if loop_readable(100) {
            ran += anyfork::dispatch().expect("dispatch");
        }
    }
    ran
}

/// Dispatches until no callback is pending and the reports still on
/// their way (exits of children nobody waits for) are read, then checks
/// that the loop fd stays unreadable: idle means no busy loop. A loop fd
/// that stays readable although dispatch has nothing to do fails after
/// 1,000 dispatches.
fn settle_and_expect_idle() {
    drive(Duration::from_secs(20), "every callback to run", || {
        anyfork::pending() == 0
    });
    let t = Instant::now();
    let mut n = 0;
    while loop_readable(300) {
        n += 1;
        anyfork::dispatch().unwrap();
        assert!(
            n < 1000 && t.elapsed() < Duration::from_secs(10),
            "the loop fd keeps being readable with nothing to do: {n} dispatches in {:?}",
            t.elapsed()
        );
    }
    assert!(
        !loop_readable(0),
        "the loop fd is readable with nothing to do"
    );
}

/// After every process's exit was reported: one dispatch at most (for a
/// stale wake-up), then the loop fd is not readable at all.
fn expect_idle_now() {
    assert_eq!(anyfork::pending(), 0, "callbacks still pending");
    if loop_readable(0) {
        anyfork::dispatch().unwrap();
    }
    assert!(
        !loop_readable(0),
        "the loop fd is readable with nothing to do"
    );
    assert!(
        !loop_readable(100),
        "the loop fd became readable with nothing to do"
    );
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    Exit(i32),
    Signal(i32),
}

fn decode(status: i32) -> End {
    if libc::WIFEXITED(status) {
        End::Exit(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        End::Signal(libc::WTERMSIG(status))
    } else {
        panic!("wait status {status:#x} is neither an exit nor a signal")
    }
}

#[test]
fn exit_statuses_and_pids_of_100_forked_processes_match_what_the_children_saw() {
    isolated(
        "exit_statuses_and_pids_of_100_forked_processes_match_what_the_children_saw",
        LIMIT,
        || {
            let mut t = new_template();
            let tpid = t.pid().unwrap();
            let t_exit = exit_rx(&mut t);
            let ends = [
                ("0", End::Exit(0)),
                ("3", End::Exit(3)),
                ("kill", End::Signal(libc::SIGKILL)),
                ("segv", End::Signal(libc::SIGSEGV)),
            ];
            let mut procs = Vec::new();
            for i in 0..100 {
                // Half from the default template, half from our own.
                let mut p = if i % 2 == 0 {
                    new_child()
                } else {
                    t.fork().unwrap()
                };
                // Each source gets every kind of end.
                let (how, end) = ends[(i / 2) % ends.len()];
                p.send_arg(how.as_bytes()).unwrap();
                let ex = exit_rx(&mut p);
                // Every third asks for its pid before running.
                let asked = (i % 3 == 0).then(|| p.pid().expect("pid of a forked process"));
                let run = run_async(p, "pid_then_exit");
                procs.push((i, end, asked, run, ex));
            }
            let mut pids = BTreeSet::new();
            for (i, end, asked, run, ex) in &procs {
                let sock = wait_run(run).unwrap_or_else(|e| panic!("#{i}: run: {e}"));
                let out = read_all(sock).unwrap_or_else(|e| panic!("#{i}: read: {e}"));
                assert_eq!(out.len(), 4, "#{i}: the child wrote its pid");
                let seen = u32::from_le_bytes(out[..4].try_into().unwrap()) as i32;
                let (pid, status) = wait_exit(ex);
                let status = status.unwrap_or_else(|e| panic!("#{i}: exit status unknown: {e}"));
                assert_eq!(
                    pid, seen,
                    "#{i}: the exit callback's pid is not the child's getpid()"
                );
                if let Some(a) = asked {
                    assert_eq!(*a, seen, "#{i}: Process::pid is not the child's getpid()");
                }
                assert_eq!(decode(status), *end, "#{i}: wait status {status:#x}");
                assert!(pids.insert(seen), "#{i}: pid {seen} reported twice");
                assert_ne!(
                    state_of(seen),
                    Some('Z'),
                    "#{i}: the template left a zombie"
                );
            }
            drop(t);
            let (pid, st) = wait_exit(&t_exit);
            assert_eq!(pid, tpid);
            assert_eq!(
                decode(st.unwrap()),
                End::Exit(0),
                "a freed template exits 0"
            );
            expect_idle_now();
        },
    );
}

/// Queues `n` creations from the default template without dispatching,
/// then drives the loop until every run and exit callback ran once.
fn queued_creations(n: usize) {
    raise_nofile();
    // Warm up: the default template exists and the loop is idle.
    let p = Process::new().unwrap();
    run(p, "anyfork_exit").unwrap();
    settle_and_expect_idle();

    let runs = Arc::new(Mutex::new(HashMap::<usize, Result<(), String>>::new()));
    let exits = Arc::new(Mutex::new(HashMap::<usize, End>::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    for i in 0..n {
        let mut p = Process::new().unwrap_or_else(|e| panic!("#{i}: new: {e}"));
        p.send_arg(b"7").unwrap();
        let (e, c) = (exits.clone(), calls.clone());
        p.on_exit(move |_pid, st| {
            c.fetch_add(1, Ordering::SeqCst);
            let prev = e
                .lock()
                .unwrap()
                .insert(i, decode(st.expect("exit status")));
            assert!(prev.is_none(), "#{i}: exit callback ran twice");
        });
        let (r, c) = (runs.clone(), calls.clone());
        p.run("anyfork_exit", move |sock| {
            c.fetch_add(1, Ordering::SeqCst);
            let v = sock.map(drop).map_err(|e| e.to_string());
            let prev = r.lock().unwrap().insert(i, v);
            assert!(prev.is_none(), "#{i}: run callback ran twice");
        })
        .unwrap();
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "a callback ran inside Process::run"
    );
    // Every callback counts, and so does the template's socket while
    // requests still wait in its queue (it needs the loop too).
    let pending = anyfork::pending();
    assert!(
        pending == 2 * n || pending == 2 * n + 1,
        "pending() is {pending} with {n} creations queued"
    );
    assert!(
        loop_readable(10_000),
        "the loop fd did not become readable with {n} creations queued"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "a callback ran without dispatch"
    );

    let ran = drive(LIMIT, "all queued creations", || {
        runs.lock().unwrap().len() == n && exits.lock().unwrap().len() == n
    });
    assert_eq!(ran, 2 * n, "dispatch's return counts the callbacks it ran");
    for (i, r) in runs.lock().unwrap().iter() {
        assert!(r.is_ok(), "#{i}: run callback got {r:?}");
    }
    for (i, e) in exits.lock().unwrap().iter() {
        assert_eq!(*e, End::Exit(7), "#{i}");
    }
    expect_idle_now();
}

#[test]
fn two_hundred_queued_creations_make_the_loop_fd_readable_and_complete() {
    isolated(
        "two_hundred_queued_creations_make_the_loop_fd_readable_and_complete",
        LIMIT,
        || queued_creations(200),
    );
}

#[test]
fn two_thousand_queued_creations_make_the_loop_fd_readable_and_complete() {
    isolated(
        "two_thousand_queued_creations_make_the_loop_fd_readable_and_complete",
        LIMIT,
        || queued_creations(2000),
    );
}

/// A template that cannot read (SIGSTOP) while `n` forks and runs queue
/// up, then continues: all of them must be delivered.
fn forks_queued_on_a_stopped_template(n: usize) {
    raise_nofile();
    let t = new_template();
    let tpid = t.pid().unwrap();
    stop(tpid);
    let mut rxs = Vec::new();
    for i in 0..n {
        let mut k = t.fork().unwrap_or_else(|e| panic!("#{i}: fork: {e}"));
        k.send_arg(format!("{i}").as_bytes()).unwrap();
        rxs.push(run_async(k, "echo_strings"));
    }
    // Nothing can progress: the loop may turn, but must not spin.
    anyfork::dispatch().unwrap();
    anyfork::dispatch().unwrap();
    assert!(
        !loop_readable(0),
        "the loop fd is readable while the template is stopped"
    );
    kill(tpid, libc::SIGCONT);
    for (i, rx) in rxs.iter().enumerate() {
        let sock = wait_run(rx).unwrap_or_else(|e| panic!("#{i}: {e}"));
        assert_eq!(
            read_all(sock).unwrap(),
            format!("{i}\n").into_bytes(),
            "#{i}"
        );
    }
    drop(t);
    settle_and_expect_idle();
}

#[test]
fn forks_queued_on_a_stopped_template_are_delivered_when_it_continues() {
    isolated(
        "forks_queued_on_a_stopped_template_are_delivered_when_it_continues",
        LIMIT,
        || forks_queued_on_a_stopped_template(100),
    );
}

#[test]
fn six_hundred_forks_queued_on_a_stopped_template_are_delivered_when_it_continues() {
    isolated(
        "six_hundred_forks_queued_on_a_stopped_template_are_delivered_when_it_continues",
        LIMIT,
        || forks_queued_on_a_stopped_template(600),
    );
}

/// A template is stopped, 500 forks + runs are queued on it, then it is
/// killed. Every run callback and every exit callback must run exactly
/// once. The exit callback reports that the process never existed (pid -1
/// and an error). The run callback gets an error — or, for forks whose
/// request was already written into the dead template's socket, a comm
/// socket that reads EOF at once, as include/anyfork.h (fork_run) allows
/// since "the run callback no longer waits for the template's pid report".
fn killed_template_with_runs_queued() {
    raise_nofile();
    let mut t = new_template();
    let tpid = t.pid().unwrap();
    let t_exit = exit_rx(&mut t);
    stop(tpid);
    let n = 500;
    let runs: Arc<Mutex<Vec<Vec<anyfork::Result<OwnedFd>>>>> =
        Arc::new(Mutex::new((0..n).map(|_| Vec::new()).collect()));
    type Exits = Vec<Vec<(i32, anyfork::Result<i32>)>>;
    let exits: Arc<Mutex<Exits>> = Arc::new(Mutex::new((0..n).map(|_| Vec::new()).collect()));
    let calls = Arc::new(AtomicUsize::new(0));
    for i in 0..n {
        let mut k = t.fork().unwrap_or_else(|e| panic!("#{i}: fork: {e}"));
        k.send_arg(b"0").unwrap();
        let (e, c) = (exits.clone(), calls.clone());
        k.on_exit(move |pid, st| {
            e.lock().unwrap()[i].push((pid, st));
            c.fetch_add(1, Ordering::SeqCst);
        });
        let (r, c) = (runs.clone(), calls.clone());
        k.run("anyfork_exit", move |sock| {
            r.lock().unwrap()[i].push(sock);
            c.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    }
    kill(tpid, libc::SIGKILL);
    drive(
        LIMIT,
        "every callback of the killed template's forks",
        || calls.load(Ordering::SeqCst) >= 2 * n,
    );
    // Late duplicates would show up here.
    for _ in 0..5 {
        anyfork::dispatch().unwrap();
    }
    let (mut errors, mut eofs) = (0, 0);
    for (i, got) in std::mem::take(&mut *runs.lock().unwrap())
        .into_iter()
        .enumerate()
    {
        assert_eq!(got.len(), 1, "#{i}: run callbacks");
        match got.into_iter().next().unwrap() {
            Err(e) => {
                assert!(!e.message().is_empty(), "#{i}: an error without a message");
                errors += 1;
            }
            Ok(sock) => {
                // The fork request was written before the template died:
                // the socket ends at once (EOF, or a reset when the
                // commands written to it died unread), as fork_run says.
                match read_all(sock) {
                    Ok(out) => assert!(
                        out.is_empty(),
                        "#{i}: a process that never existed answered"
                    ),
                    Err(e) => {
                        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "#{i}: {e}")
                    }
                }
                eofs += 1;
            }
        }
    }
    for (i, got) in exits.lock().unwrap().iter().enumerate() {
        assert_eq!(got.len(), 1, "#{i}: exit callbacks");
        let (pid, st) = &got[0];
        let e = st
            .as_ref()
            .expect_err("an exit status for a process never forked");
        assert!(!e.message().is_empty());
        assert_eq!(*pid, -1, "#{i}: a pid for a process never forked");
    }
    eprintln!("{errors} run callbacks got an error, {eofs} a socket at EOF");
    let (pid, st) = wait_exit(&t_exit);
    assert_eq!(pid, tpid);
    assert_eq!(decode(st.unwrap()), End::Signal(libc::SIGKILL));
    // The handle of the dead template refuses more work.
    assert!(
        t.fork().and_then(|k| k.run("anyfork_exit", drop)).is_err(),
        "a dead template took work"
    );
    drop(t);
    expect_idle_now();
    assert!(!common::alive(tpid));
}

#[test]
fn a_template_killed_with_500_runs_queued_answers_every_callback_exactly_once() {
    isolated(
        "a_template_killed_with_500_runs_queued_answers_every_callback_exactly_once",
        LIMIT,
        killed_template_with_runs_queued,
    );
}

/// `count` strings of `size` bytes each (a pattern with a period of 251,
/// plus the string's index in its first bytes).
fn patterned(count: usize, size: usize) -> Vec<Vec<u8>> {
    let block: Vec<u8> = (0..251u32).map(|i| (i * 7 + 3) as u8).collect();
    (0..count)
        .map(|k| {
            let mut v = Vec::with_capacity(size);
            while v.len() < size {
                let n = block.len().min(size - v.len());
                v.extend_from_slice(&block[..n]);
            }
            v[..8].copy_from_slice(&(k as u64).to_le_bytes());
            v
        })
        .collect()
}

/// Sends `strings` to a stopped template: `send_arg` must not block and
/// the loop fd must not be readable while nothing can be written. Then the
/// template continues, and a fork of it must see every string intact.
fn strings_to_a_stopped_template(strings: &[Vec<u8>]) {
    let mut t = new_template();
    let tpid = t.pid().unwrap();
    stop(tpid);
    let t0 = Instant::now();
    for s in strings {
        t.send_arg(s).unwrap();
    }
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "send_arg blocked on a full socket"
    );
    anyfork::dispatch().unwrap();
    anyfork::dispatch().unwrap();
    assert!(
        !loop_readable(0),
        "the loop fd is readable while nothing can be written"
    );
    assert!(
        !loop_readable(100),
        "the loop fd is readable while nothing can be written"
    );
    kill(tpid, libc::SIGCONT);
    let k = t.fork().unwrap();
    let rx = run_async(k, "digest_args");
    let sock = wait_run(&rx).unwrap();
    let out = read_all(sock).unwrap();
    assert!(
        !out.is_empty(),
        "the template died (corrupt command stream?)"
    );
    let d = parse_digest(&out);
    let want: Vec<Seen> = strings
        .iter()
        .map(|s| Seen::Digest {
            flags: S_ALL,
            len: s.len() as u64,
            hash: fnv1a(s),
        })
        .collect();
    assert_eq!(d.args, want);
    drop(t);
    settle_and_expect_idle();
}

#[test]
fn sixty_four_mib_in_1_mib_strings_to_a_stopped_template_neither_block_nor_spin() {
    isolated(
        "sixty_four_mib_in_1_mib_strings_to_a_stopped_template_neither_block_nor_spin",
        LIMIT,
        || strings_to_a_stopped_template(&patterned(64, 1 << 20)),
    );
}

#[test]
fn a_64_mib_string_to_a_stopped_template_arrives_intact() {
    isolated(
        "a_64_mib_string_to_a_stopped_template_arrives_intact",
        LIMIT,
        || {
            // The corruption needs one recv of more than 1 MiB, which depends
            // on scheduling: several rounds make it likely.
            for _ in 0..4 {
                strings_to_a_stopped_template(&patterned(1, 64 << 20));
            }
        },
    );
}

#[test]
fn the_loop_fd_is_idle_before_use_between_uses_and_with_unrun_handles() {
    isolated(
        "the_loop_fd_is_idle_before_use_between_uses_and_with_unrun_handles",
        LIMIT,
        || {
            let fd = anyfork::loop_fd().unwrap();
            assert!(!loop_readable(0), "readable before anything was created");
            let p = new_child();
            let mut t = new_template();
            t.send_arg(b"x").unwrap();
            let k = t.fork().unwrap();
            k.pid().unwrap();
            settle_and_expect_idle();
            // Handles that exist but have nothing queued keep the loop idle.
            let out = run_output(new_child(), "echo_strings");
            assert!(out.is_empty());
            settle_and_expect_idle();
            drop((p, k));
            settle_and_expect_idle();
            drop(t);
            settle_and_expect_idle();
            assert_eq!(anyfork::loop_fd().unwrap(), fd, "the loop fd changed");
        },
    );
}

#[test]
fn callbacks_may_create_and_run_processes() {
    isolated("callbacks_may_create_and_run_processes", LIMIT, || {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let mut p = new_child();
        p.send_arg(b"first").unwrap();
        p.run("echo_strings", move |sock| {
            g.lock().unwrap().push(read_all(sock.unwrap()).unwrap());
            // From inside a callback: create and run another process.
            let mut q = new_child();
            q.send_arg(b"second").unwrap();
            let g2 = g.clone();
            q.run("echo_strings", move |sock| {
                g2.lock().unwrap().push(read_all(sock.unwrap()).unwrap());
            })
            .unwrap();
        })
        .unwrap();
        drive(Duration::from_secs(20), "both callbacks", || {
            got.lock().unwrap().len() == 2
        });
        assert_eq!(
            *got.lock().unwrap(),
            vec![b"first\n".to_vec(), b"second\n".to_vec()]
        );
        settle_and_expect_idle();
    });
}

#[test]
fn a_loop_fd_in_epoll_wakes_for_a_process_exit() {
    // An event loop's own epoll set with the loop fd in it, level-triggered,
    // as a libuv or libev user would add it.
    isolated("a_loop_fd_in_epoll_wakes_for_a_process_exit", LIMIT, || {
        // SAFETY: plain epoll calls; results checked.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(ep >= 0);
        let ep = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(ep) };
        let lfd = anyfork::loop_fd().unwrap();
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 7,
        };
        assert_eq!(
            unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, lfd, &mut ev) },
            0
        );
        let mut p = new_child();
        p.send_arg(b"eof").unwrap();
        let ex = Arc::new(Mutex::new(None));
        let e = ex.clone();
        p.on_exit(move |pid, st| *e.lock().unwrap() = Some((pid, st.map(decode))));
        let sock = Arc::new(Mutex::new(None));
        let s = sock.clone();
        p.run("pid_then_exit", move |r| {
            *s.lock().unwrap() = Some(r.unwrap())
        })
        .unwrap();
        let wait = |what: &str, done: &dyn Fn() -> bool| {
            let t = Instant::now();
            while !done() {
                assert!(t.elapsed() < Duration::from_secs(20), "{what}");
                let mut out = [libc::epoll_event { events: 0, u64: 0 }];
                // SAFETY: one event buffer.
                let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), out.as_mut_ptr(), 1, 1000) };
                if n == 1 {
                    assert_eq!({ out[0].u64 }, 7);
                    anyfork::dispatch().unwrap();
                }
            }
        };
        wait("the run callback", &|| sock.lock().unwrap().is_some());
        let fd = sock.lock().unwrap().take().unwrap();
        // The child runs until we close our end; then it exits 0.
        let mut b = [0u8; 4];
        let mut f = std::os::unix::net::UnixStream::from(fd);
        f.set_nonblocking(false).unwrap();
        std::io::Read::read_exact(&mut f, &mut b).unwrap();
        let pid = u32::from_le_bytes(b) as i32;
        assert!(
            ex.lock().unwrap().is_none(),
            "the exit was reported while the child runs"
        );
        assert!(common::alive(pid));
        drop(f);
        wait("the exit callback", &|| ex.lock().unwrap().is_some());
        let (xpid, st) = ex.lock().unwrap().take().unwrap();
        assert_eq!(xpid, pid);
        assert_eq!(st.unwrap(), End::Exit(0));
        settle_and_expect_idle();
    });
}
