//! The library under threads and forks of the caller (issue 17 items 1 and
//! 3): any number of threads waiting at once, and a program that forks
//! itself without calling fork_reset_after_fork.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyfork::Process;
use common::{Kind, build, serial};

/// `threads` threads each run `while wait(-1) > 0 {}` while `creations`
/// processes complete; every thread must return. Repeated `rounds` times.
fn waiters(threads: usize, creations: usize, rounds: usize) {
    let _g = serial();
    for round in 0..rounds {
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..creations {
            let mut p = Process::new().expect("new");
            let r = ran.clone();
            p.on_exit(move |_, st| {
                st.expect("exit status");
                r.fetch_add(1, Ordering::SeqCst);
            });
            let r = ran.clone();
            p.run("anyfork_exit", move |sock| {
                drop(sock.expect("run"));
                r.fetch_add(1, Ordering::SeqCst);
            })
            .expect("run");
        }
        let (tx, rx) = mpsc::channel();
        for _ in 0..threads {
            let tx = tx.clone();
            std::thread::spawn(move || {
                while anyfork::wait(-1).expect("wait") > 0 {}
                let _ = tx.send(());
            });
        }
        for t in 0..threads {
            assert!(
                rx.recv_timeout(Duration::from_secs(20)).is_ok(),
                "round {round}: waiter {t} of {threads} did not return ({} of {} callbacks ran, {} pending)",
                ran.load(Ordering::SeqCst),
                2 * creations,
                anyfork::pending()
            );
        }
        assert_eq!(ran.load(Ordering::SeqCst), 2 * creations);
        assert_eq!(anyfork::pending(), 0);
    }
}

#[test]
fn two_threads_wait_for_one_creation_a_thousand_times() {
    waiters(2, 1, 1000);
}

#[test]
fn eight_threads_wait_for_one_creation_a_thousand_times() {
    waiters(8, 1, 1000);
}

#[test]
fn two_and_eight_threads_wait_for_a_thousand_creations() {
    waiters(2, 1000, 10);
    waiters(8, 1000, 10);
}

/// One thread waits with -1 while another dispatches from its own loop:
/// the waiter returns once the dispatcher ran the last callback.
#[test]
fn a_waiter_returns_when_another_thread_dispatches_the_last_callback() {
    let _g = serial();
    for round in 0..200 {
        let p = Process::new().expect("new");
        let (tx, rx) = mpsc::channel();
        p.run("anyfork_exit", |sock| drop(sock.expect("run")))
            .expect("run");
        let waiter = std::thread::spawn(move || {
            while anyfork::wait(-1).expect("wait") > 0 {}
            let _ = tx.send(());
        });
        while anyfork::pending() > 0 {
            anyfork::dispatch().expect("dispatch");
            std::thread::sleep(Duration::from_micros(50));
        }
        assert!(
            rx.recv_timeout(Duration::from_secs(20)).is_ok(),
            "round {round}: the waiter slept on after the dispatcher ran the last callback"
        );
        waiter.join().unwrap();
    }
}

#[test]
fn a_program_that_forks_without_reset_keeps_both_sides_working() {
    let _g = serial();
    common::run_checks(&build("fork_noreset", Kind::Program, &[]), &[]);
}
