//! Issue 2: the core engine seen from a user. Strings and fds arrive in
//! order and intact, forks clone what was sent before them, require, eval
//! and run call code from a shared library, failures end the child with a
//! status and a message, the child holds exactly the fds it should, many
//! threads can create processes at once, and a caller that exits leaves no
//! server behind. Nothing here kills the default template (see
//! tests/destructive.rs), so these tests share it and run in parallel.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyfork::Process;
use common::*;

fn status_of(r: anyfork::Result<i32>) -> i32 {
    r.unwrap_or_else(|e| panic!("the exit status is unknown: {e}"))
}

#[test]
fn every_byte_value_and_embedded_nuls_arrive_intact() {
    let mut p = new_child();
    let all: Vec<u8> = (0..=255u8).collect();
    let mut want: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    want.push(all.clone());
    want.push(all.iter().rev().copied().collect());
    want.push(b"a\0b\0\0c".to_vec());
    want.push(b"\0".to_vec());
    want.push(b"\xff\xfe\0\x80 trailing \0".to_vec());
    for s in &want {
        p.send_arg(s).unwrap();
    }
    let d = parse_dump(&run_output(p, "dump_args"));
    let w: Vec<Want> = want.iter().map(|s| Want::S(s)).collect();
    assert_args(&d.args, &w);
    assert_eq!(
        d.comm_flags,
        C_BLOCKING | C_CLOEXEC | C_UNIX_STREAM,
        "the child's comm socket must be a blocking, close-on-exec unix stream socket"
    );
}

#[test]
fn empty_strings_arrive_in_order_between_fds() {
    let m = memfd("empty-neighbour");
    let mut p = new_child();
    p.send_arg(b"").unwrap();
    p.send_arg(b"").unwrap();
    p.send_fd(m.as_fd()).unwrap();
    p.send_arg(b"").unwrap();
    p.send_arg(b"x").unwrap();
    p.send_arg(b"").unwrap();
    p.send_arg(&[]).unwrap();
    let d = parse_dump(&run_output(p, "dump_args"));
    assert_args(
        &d.args,
        &[
            Want::S(b""),
            Want::S(b""),
            wfd(&m),
            Want::S(b""),
            Want::S(b"x"),
            Want::S(b""),
            Want::S(b""),
        ],
    );
}

#[test]
fn a_64_mib_string_arrives_intact() {
    // A pattern with a period (251) that matches no power of two, so a
    // dropped, repeated or shifted chunk changes the hash.
    let block: Vec<u8> = (0..251u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut big = Vec::with_capacity(64 << 20);
    while big.len() < 64 << 20 {
        let n = block.len().min((64 << 20) - big.len());
        big.extend_from_slice(&block[..n]);
    }
    big[0] = 0xAA;
    big[32 << 20] = 0xBB;
    *big.last_mut().unwrap() = 0xCC;
    let mut p = new_child();
    p.send_arg(b"before").unwrap();
    p.send_arg(&big).unwrap();
    p.send_arg(b"after").unwrap();
    let d = parse_digest(&run_output(p, "digest_args"));
    assert_eq!(d.args.len(), 3);
    let expect = |s: &[u8]| Seen::Digest {
        flags: S_ALL,
        len: s.len() as u64,
        hash: fnv1a(s),
    };
    assert_eq!(d.args[0], expect(b"before"));
    assert_eq!(d.args[1], expect(&big), "the 64 MiB string differs");
    assert_eq!(d.args[2], expect(b"after"));
}

#[test]
fn five_hundred_fds_arrive_in_order_and_the_callers_copies_may_be_closed() {
    let mut p = new_child();
    let mut want: Vec<(u64, u64)> = Vec::new();
    let mut strings: Vec<Vec<u8>> = Vec::new();
    for i in 0..500 {
        let m = memfd(&format!("fd-{i}"));
        want.push(dev_ino(m.as_fd()));
        if i % 2 == 0 {
            // Sent as a duplicate; our copy is closed at once.
            p.send_fd(m.as_fd()).unwrap();
            drop(m);
        } else {
            p.send_owned_fd(m).unwrap();
        }
        if i % 50 == 49 {
            let s = format!("after fd {i}").into_bytes();
            p.send_arg(&s).unwrap();
            strings.push(s);
        }
    }
    let d = parse_dump(&run_output(p, "dump_args"));
    let mut w = Vec::new();
    let mut si = strings.iter();
    for (i, &(dev, ino)) in want.iter().enumerate() {
        w.push(Want::I(dev, ino));
        if i % 50 == 49 {
            w.push(Want::S(si.next().unwrap()));
        }
    }
    assert_args(&d.args, &w);
    let fds: BTreeSet<i32> = d
        .args
        .iter()
        .filter_map(|a| match a {
            Seen::Fd { fd, .. } => Some(*fd),
            _ => None,
        })
        .collect();
    assert_eq!(
        fds.len(),
        500,
        "the child's 500 fd arguments must be distinct fds"
    );
}

#[test]
fn fork_clones_what_was_sent_before_it_and_later_args_stay_per_child() {
    let (r, w) = pipe();
    let late = memfd("late");
    let mut t = new_template();
    t.send_arg(b"t1").unwrap();
    t.send_fd(r.as_fd()).unwrap();
    t.send_arg(b"t2").unwrap();

    let mut a = t.fork().unwrap();
    let mut b = t.fork().unwrap();
    // Sent to the template after a and b were forked: only later forks see it.
    t.send_arg(b"t3").unwrap();
    t.send_fd(late.as_fd()).unwrap();
    let c = t.fork().unwrap();
    let mut kids = Vec::new();
    for i in 0..4 {
        let mut k = t.fork().unwrap();
        k.send_arg(format!("kid {i}").as_bytes()).unwrap();
        kids.push(k);
    }
    let ma = memfd("a");
    a.send_arg(b"a only").unwrap();
    a.send_fd(ma.as_fd()).unwrap();
    b.send_arg(b"b only").unwrap();

    let ra = run_async(a, "dump_args");
    let rb = run_async(b, "dump_args");
    let rc = run_async(c, "dump_args");
    let rk: Vec<_> = kids
        .into_iter()
        .map(|k| run_async(k, "dump_args"))
        .collect();
    drop(t);

    let da = parse_dump(&common::read_to_eof(wait_run(&ra).unwrap()));
    assert_args(
        &da.args,
        &[
            Want::S(b"t1"),
            wfd(&r),
            Want::S(b"t2"),
            Want::S(b"a only"),
            wfd(&ma),
        ],
    );
    let db = parse_dump(&common::read_to_eof(wait_run(&rb).unwrap()));
    assert_args(
        &db.args,
        &[Want::S(b"t1"), wfd(&r), Want::S(b"t2"), Want::S(b"b only")],
    );
    let dc = parse_dump(&common::read_to_eof(wait_run(&rc).unwrap()));
    assert_args(
        &dc.args,
        &[
            Want::S(b"t1"),
            wfd(&r),
            Want::S(b"t2"),
            Want::S(b"t3"),
            wfd(&late),
        ],
    );
    for (i, rx) in rk.iter().enumerate() {
        let d = parse_dump(&common::read_to_eof(wait_run(rx).unwrap()));
        let own = format!("kid {i}");
        assert_args(
            &d.args,
            &[
                Want::S(b"t1"),
                wfd(&r),
                Want::S(b"t2"),
                Want::S(b"t3"),
                wfd(&late),
                Want::S(own.as_bytes()),
            ],
        );
    }
    // The cloned fd is the same pipe, not a copy of its name: it still
    // works after all the children exited (our write end is open).
    drop(w);
}

#[test]
fn the_manuals_pool_example_gives_fh_str1_str2_fh1_fh2_str3() {
    // my $pool = AnyEvent::Fork->new->send_arg ("str1", "str2")->send_fh ($fh1, $fh2);
    // for (1..2) { $pool->fork->send_arg ("str3")->run ("Some::function", ...) }
    let (fh1, _w1) = pipe();
    let fh2 = memfd("fh2");
    let mut pool = Process::new().unwrap();
    pool.require(child_lib()).unwrap();
    pool.send_arg(b"str1").unwrap();
    pool.send_arg(b"str2").unwrap();
    pool.send_fd(fh1.as_fd()).unwrap();
    pool.send_fd(fh2.as_fd()).unwrap();
    let mut rxs = Vec::new();
    for i in 1..=2 {
        let mut p = pool.fork().unwrap();
        p.send_arg(format!("str3 #{i}").as_bytes()).unwrap();
        rxs.push(run_async(p, "dump_args"));
    }
    for (i, rx) in rxs.iter().enumerate() {
        let sock = wait_run(rx).unwrap();
        let d = parse_dump(&common::read_to_eof(sock));
        // $fh is the comm socket: the run function's first parameter.
        assert!(d.comm_fd > 2, "the comm socket is fd {}", d.comm_fd);
        assert_eq!(d.comm_flags, C_BLOCKING | C_CLOEXEC | C_UNIX_STREAM);
        let s3 = format!("str3 #{}", i + 1);
        assert_args(
            &d.args,
            &[
                Want::S(b"str1"),
                Want::S(b"str2"),
                wfd(&fh1),
                wfd(&fh2),
                Want::S(s3.as_bytes()),
            ],
        );
    }
}

#[test]
fn forks_of_forks_accumulate_args_in_order() {
    let mut t = new_template();
    t.send_arg(b"a").unwrap();
    let mut p = t.fork().unwrap();
    p.send_arg(b"b").unwrap();
    let mut q = p.fork().unwrap();
    q.send_arg(b"c").unwrap();
    let mut r = q.fork().unwrap();
    r.send_arg(b"d").unwrap();
    let outs: Vec<_> = [(p, "p"), (q, "q"), (r, "r")]
        .into_iter()
        .map(|(x, n)| (run_async(x, "dump_args"), n))
        .collect();
    drop(t);
    let want: [&[&[u8]]; 3] = [
        &[b"a", b"b"],
        &[b"a", b"b", b"c"],
        &[b"a", b"b", b"c", b"d"],
    ];
    for ((rx, n), w) in outs.iter().zip(want) {
        let d = parse_dump(&common::read_to_eof(wait_run(rx).unwrap()));
        let w: Vec<Want> = w.iter().map(|s| Want::S(s)).collect();
        assert!(d.args.len() == w.len(), "process {n}: {:?}", d.args);
        assert_args(&d.args, &w);
    }
}

#[test]
fn require_eval_and_run_call_functions_of_a_test_library() {
    let (r, w) = pipe();
    let mut p = new_child();
    p.send_fd(w.as_fd()).unwrap();
    p.send_arg(b"s1").unwrap();
    // init_write_fd writes its argument to the first fd received so far.
    p.eval("init_write_fd", &[b"hello from init"]).unwrap();
    p.eval("init_record", &[b"e1", b"", b"e3"]).unwrap();
    p.send_arg(b"s2").unwrap();
    drop(w);
    let out = run_output(p, "dump_recorded");
    let mut rd = Rd(&out);
    assert_eq!(rd.u32(), 1, "init_record ran once");
    let n = rd.u32() as usize;
    let eval_args = Rd(rd.take(n)).dump(false);
    let n = rd.u32() as usize;
    let received = Rd(rd.take(n)).dump(false);
    let run = rd.dump(false);
    assert!(rd.is_empty());
    // The eval saw its own strings as arguments...
    assert_args(
        &eval_args.args,
        &[Want::S(b"e1"), Want::S(b""), Want::S(b"e3")],
    );
    // ...and, through fork_child_args, what was sent before it.
    assert_args(&received.args, &[wfd(&r), Want::S(b"s1")]);
    // The run function gets every fd and string, but not the eval's strings.
    assert_args(&run.args, &[wfd(&r), Want::S(b"s1"), Want::S(b"s2")]);
    let mut got = String::new();
    std::fs::File::from(r).read_to_string(&mut got).unwrap();
    assert_eq!(
        got, "hello from init",
        "the eval could not use an fd sent before it"
    );
}

#[test]
fn at_eof_on_the_comm_socket_the_pipes_the_child_held_are_closed() {
    // README, "Comm socket": a process whose run function returned closes
    // all its fds, the comm socket last, then exits; so once the caller
    // reads EOF, the pipe the child was sent has no writer left.
    for _ in 0..20 {
        let (r, w) = pipe();
        let mut p = new_child();
        p.send_fd(w.as_fd()).unwrap();
        drop(w);
        assert_eq!(run_output(p, "count_args"), b"1\n");
        // SAFETY: F_SETFL on a pipe end this test owns.
        let rc = unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        assert_eq!(rc, 0, "fcntl: {}", std::io::Error::last_os_error());
        let mut buf = [0u8; 8];
        match std::fs::File::from(r).read(&mut buf) {
            Ok(n) => assert_eq!(n, 0, "the child wrote to the pipe"),
            Err(e) => panic!("the pipe still had a writer after EOF on the comm socket: {e}"),
        }
    }
}

#[test]
fn fork_handlers_of_a_required_library_run_in_every_new_process() {
    // The server forks without fork handlers only while no library is
    // loaded; once one is, its pthread_atfork child handlers run as usual.
    let t = new_template();
    for _ in 0..2 {
        let out = run_output(t.fork().unwrap(), "show_atfork");
        assert_eq!(String::from_utf8_lossy(&out), "1");
    }
    // A process that required the library itself was forked before it
    // was loaded: no handler of it ran there.
    let mut p = new_child();
    p.require(child_lib()).unwrap();
    assert_eq!(String::from_utf8_lossy(&run_output(p, "show_atfork")), "0");
}

#[test]
fn a_lock_held_by_a_library_thread_is_free_in_every_new_process() {
    // A library that registers no fork handler lets the server fork with
    // `_Fork`, but not once it started a thread: glibc's `fork` frees in
    // the new process the stdio locks other threads held (the process has
    // none of them); a copy made by `_Fork` would block on that stream,
    // and at exit flushing every stream.
    let lib = build("held_lock", Kind::Library, &["-pthread"]);
    let mut t = Process::new_exec().unwrap();
    t.require(lib.to_str().unwrap()).unwrap();
    t.eval("hold_stream_lock", &[]).unwrap();
    let tpid = t.pid().unwrap();
    let mut answers = Vec::new();
    for _ in 0..3 {
        let a = common::read_all(run(t.fork().unwrap(), "use_stream").unwrap());
        let blocked = a.is_err();
        answers.push(a);
        if blocked {
            break;
        }
    }
    // A process blocked on the stream would never end: stopped here, then
    // the template lets the lock go, so that it can exit.
    for pid in common::children_of(tpid) {
        common::kill(pid, libc::SIGKILL);
    }
    t.eval("release_stream_lock", &[]).unwrap();
    for (i, a) in answers.into_iter().enumerate() {
        let out = a.unwrap_or_else(|e| panic!("process {i} did not answer within 30 s: {e}"));
        assert_eq!(out, b"ok", "process {i}");
    }
}

/// The children a warm template keeps waiting, once there are `n`.
fn waiting(tpid: i32, n: usize) -> Vec<i32> {
    let mut kids = Vec::new();
    assert!(
        common::eventually(Duration::from_secs(10), || {
            kids = common::children_of(tpid);
            kids.len() == n
        }),
        "the template has children {kids:?}, not {n} waiting ones"
    );
    kids
}

/// What a template keeping 2 children waiting promises, whoever keeps
/// them (`keep`: the template's warm pool, or the caller's forked-ahead
/// processes): a fork is one of the children waiting before it, with the
/// template's strings; a replacement follows; a string sent to the
/// template dismisses the waiting children (copies without it) and the
/// next forks see it. Returns the template and its pid.
fn waiting_children_hold_the_templates_current_args(keep: impl Fn(&mut Process)) -> (Process, i32) {
    let mut t = new_template();
    t.send_arg(b"one").unwrap();
    keep(&mut t);
    let tpid = t.pid().unwrap();
    let before = waiting(tpid, 2);

    let mut p = t.fork().unwrap();
    let ex = exit_rx(&mut p);
    let pid = p.pid().unwrap();
    assert!(before.contains(&pid), "pid {pid} is not one of {before:?}");
    let d = parse_dump(&run_output(p, "dump_args"));
    assert_args(&d.args, &[Want::S(b"one")]);
    let (xpid, st) = wait_exit(&ex);
    assert_eq!((xpid, exited(status_of(st))), (pid, Some(0)));
    let mut stale = Vec::new();
    pump_until(Duration::from_secs(10), "a replacement", || {
        stale = common::children_of(tpid);
        stale.len() == 2
    });
    assert!(
        stale.iter().any(|k| !before.contains(k)),
        "no replacement: {stale:?}"
    );

    t.send_arg(b"two").unwrap();
    assert!(
        common::eventually(Duration::from_secs(10), || stale
            .iter()
            .all(|&k| !common::alive(k))),
        "dismissed children {stale:?} did not exit"
    );
    let fresh = waiting(tpid, 2);
    assert!(fresh.iter().all(|k| !stale.contains(k)));
    for _ in 0..3 {
        let mut p = t.fork().unwrap();
        let ex = exit_rx(&mut p);
        let d = parse_dump(&run_output(p, "dump_args"));
        assert_args(&d.args, &[Want::S(b"one"), Want::S(b"two")]);
        assert_eq!(exited(status_of(wait_exit(&ex).1)), Some(0));
    }
    (t, tpid)
}

/// Frees `t`: it and every child waiting in it go.
fn gone_with_its_children(t: Process, tpid: i32) {
    drop(t);
    assert!(
        common::eventually(Duration::from_secs(10), || !common::alive(tpid)
            && common::children_of(tpid).is_empty()),
        "the template {tpid} or its waiting children stayed"
    );
}

#[test]
fn a_warm_template_hands_forks_to_waiting_children_that_hold_its_current_args() {
    let (t, tpid) = waiting_children_hold_the_templates_current_args(|t| {
        t.eval("anyfork_warm", &[b"2"]).unwrap()
    });
    gone_with_its_children(t, tpid);
}

#[test]
fn a_warm_template_that_enters_a_run_function_leaves_it_no_children() {
    let mut t = new_template();
    t.eval("anyfork_warm", &[b"2"]).unwrap();
    let tpid = t.pid().unwrap();
    let kids = waiting(tpid, 2);
    // The template itself runs wait_eof: its waiting children are gone,
    // reaped, before user code starts.
    let sock = run(t, "wait_eof").unwrap();
    // (Unreaped, they would stay zombies for as long as it runs.)
    let mut left = Vec::new();
    assert!(
        common::eventually(Duration::from_secs(10), || {
            left = common::children_and_zombies_of(tpid);
            left.is_empty()
        }),
        "children {left:?} left to user code (the waiting ones were {kids:?})"
    );
    drop(sock);
    assert!(common::eventually(Duration::from_secs(10), || {
        !common::alive(tpid)
    }));
}

#[test]
fn processes_forked_ahead_are_handed_out_and_hold_the_templates_current_args() {
    let (t, tpid) = waiting_children_hold_the_templates_current_args(|t| t.fork_ahead(2).unwrap());
    // Fewer: the extra one goes.
    t.fork_ahead(1).unwrap();
    waiting(tpid, 1);
    gone_with_its_children(t, tpid);
}

#[test]
fn a_replacement_is_forked_after_a_pause_or_at_once_when_forks_come_fast() {
    // In a process of its own: another test's dispatch would fork the
    // delayed replacement early.
    isolated(
        "a_replacement_is_forked_after_a_pause_or_at_once_when_forks_come_fast",
        Duration::from_secs(60),
        replacement_body,
    );
}

fn replacement_body() {
    let t = new_template();
    t.fork_ahead(2).unwrap();
    let tpid = t.pid().unwrap();
    let first = waiting(tpid, 2);
    // A hand-out after a quiet spell: the replacement waits for a dispatch
    // after the refill delay, so nothing competes with the new process.
    std::thread::sleep(Duration::from_millis(10));
    let a = t.fork().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        common::children_of(tpid).len(),
        2,
        "forked before the delay"
    );
    pump_until(Duration::from_secs(10), "the delayed replacement", || {
        common::children_of(tpid).len() == 3
    });
    // Two hand-outs in a row: the second refills at once, no dispatch.
    let b = t.fork().unwrap();
    let c = t.fork().unwrap();
    assert!(
        common::eventually(Duration::from_secs(10), || common::children_of(tpid).len()
            == 5),
        "children {:?}: not 3 handed out and 2 waiting",
        common::children_of(tpid)
    );
    let pids: Vec<i32> = [&a, &b, &c].iter().map(|p| p.pid().unwrap()).collect();
    assert!(
        first.iter().all(|k| pids.contains(k)),
        "{first:?} not handed out first: {pids:?}"
    );
    drop((a, b, c, t));
    all_gone(&[tpid], "the template");
}

#[test]
fn fork_ahead_refuses_more_than_64_and_forks_nothing() {
    let t = new_template();
    let tpid = t.pid().unwrap();
    let e = t.fork_ahead(65).unwrap_err();
    assert_eq!(e.errno(), anyfork::Errno::EINVAL);
    assert!(e.message().contains("64"), "{}", e.message());
    std::thread::sleep(Duration::from_millis(100));
    assert!(common::children_of(tpid).is_empty());
    // Turned off again, forks are forks.
    t.fork_ahead(0).unwrap();
    let d = parse_dump(&run_output(t.fork().unwrap(), "dump_args"));
    assert_args(&d.args, &[]);
}

#[test]
fn anyfork_warm_rejects_a_size_it_cannot_keep() {
    for bad in [&b"65"[..], b"-1", b"many", b""] {
        let mut t = new_template();
        let ex = exit_rx(&mut t);
        t.eval("anyfork_warm", &[bad]).unwrap();
        // A failing eval ends the template with its status.
        let (_, st) = wait_exit(&ex);
        assert_eq!(exited(status_of(st)), Some(1), "{bad:?}");
    }
}

#[test]
fn eval_in_a_template_is_inherited_by_every_fork() {
    let mut t = new_template();
    t.send_arg(b"before eval").unwrap();
    t.eval(
        "init_setenv",
        &[b"ANYFORK_TEST_VAR", b"set in the template"],
    )
    .unwrap();
    t.eval("init_record", &[b"template"]).unwrap();
    let mut rxs = Vec::new();
    for i in 0..3 {
        let mut k = t.fork().unwrap();
        k.send_arg(format!("{i}").as_bytes()).unwrap();
        k.send_arg(b"ANYFORK_TEST_VAR").unwrap();
        rxs.push(run_async(k, "show_env"));
    }
    let k = t.fork().unwrap();
    let rec = run_async(k, "dump_recorded");
    drop(t);
    for rx in &rxs {
        let out = common::read_to_eof(wait_run(rx).unwrap());
        assert_eq!(String::from_utf8_lossy(&out), "set in the template");
    }
    let out = common::read_to_eof(wait_run(&rec).unwrap());
    let mut rd = Rd(&out);
    assert_eq!(
        rd.u32(),
        1,
        "the template's eval ran once, before the fork, not in the child"
    );
    let n = rd.u32() as usize;
    assert_args(&Rd(rd.take(n)).dump(false).args, &[Want::S(b"template")]);
    let n = rd.u32() as usize;
    assert_args(&Rd(rd.take(n)).dump(false).args, &[Want::S(b"before eval")]);
}

/// The child exits with `status` before answering. The caller's run
/// callback gets the socket (or an error, should the process die before
/// the run frame was written), nothing is read from it, and the exit
/// callback reports the status. Returns how reading ended: `Ok` for EOF,
/// else the error.
fn expect_silent_exit(mut p: Process, status: i32) -> std::io::Result<()> {
    let ex = exit_rx(&mut p);
    // The process may be gone before the run is written (run fails with
    // EPIPE and its callback never runs), or after (the callback gets the
    // socket, or an error).
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = match p.run("dump_args", move |r| tx.send(r).unwrap()) {
        Ok(()) => wait_run(&rx),
        Err(e) => Err(e),
    };
    let end = match outcome {
        Ok(sock) => match read_all(sock) {
            Ok(b) => {
                assert!(b.is_empty(), "the child answered {} bytes", b.len());
                Ok(())
            }
            Err(e) => Err(e),
        },
        Err(e) => {
            assert!(!e.message().is_empty());
            Ok(())
        }
    };
    let (pid, st) = wait_exit(&ex);
    assert!(pid > 0);
    let st = status_of(st);
    assert_eq!(exited(st), Some(status), "wait status {st:#x}");
    end
}

#[test]
fn an_unknown_run_function_exits_127_and_the_caller_sees_eof() {
    let mut p = new_child();
    let ex = exit_rx(&mut p);
    p.send_arg(b"x").unwrap();
    let sock = run(p, "anyfork_test_no_such_function").expect("the run itself is delivered");
    assert!(read_all(sock).expect("a clean EOF").is_empty());
    let st = status_of(wait_exit(&ex).1);
    assert_eq!(exited(st), Some(127), "wait status {st:#x}");
}

#[test]
fn an_unknown_eval_function_a_missing_library_and_a_failing_eval_end_the_child_with_eof() {
    // include/anyfork.h, fork_require: "exits with status 127 (the caller
    // sees EOF)"; issue 2: "the caller sees EOF". A clean EOF, not a reset,
    // although the run frame was never read.
    let mut p = new_child();
    p.eval("anyfork_test_no_such_init", &[]).unwrap();
    expect_silent_exit(p, 127).expect("EOF after a missing eval function");

    let mut p = Process::new().unwrap();
    p.require("/nonexistent/libanyfork_test_missing.so")
        .unwrap();
    expect_silent_exit(p, 127).expect("EOF after a missing library");

    let mut p = new_child();
    p.eval("init_status", &[b"0"]).unwrap();
    p.eval("init_status", &[b"42"]).unwrap();
    expect_silent_exit(p, 42).expect("EOF after a failing eval");
}

#[test]
fn failures_in_the_child_are_explained_on_its_stderr() {
    let _g = serial();
    let exe = build("stderr_probe", Kind::Program, &[]);
    let cases = [
        ("run", 127, "anyfork_probe_no_such_function"),
        ("eval", 127, "anyfork_probe_no_such_init"),
        ("require", 127, "libanyfork_probe_missing.so"),
        ("fail", 42, "init_status"),
    ];
    for (mode, status, needle) in cases {
        let out = Command::new(&exe)
            .args([child_lib(), mode])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{mode}: probe failed: {stdout} {stderr}"
        );
        let kv = |k: &str| -> i64 {
            stdout
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{k}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{mode}: no {k}= in {stdout:?}"))
        };
        assert!(kv("run") == 1 || kv("run") < 0, "{mode}: {stdout}");
        if kv("run") == 1 {
            assert_eq!(
                kv("bytes"),
                0,
                "{mode}: the caller must see EOF and nothing else"
            );
            assert_eq!(
                kv("read_errno"),
                0,
                "{mode}: the socket must end with EOF, not an error"
            );
        }
        let st = kv("status") as i32;
        assert_eq!(exited(st), Some(status), "{mode}: wait status {st:#x}");
        assert!(kv("pid") > 0, "{mode}: {stdout}");
        assert!(
            stderr.contains(needle),
            "{mode}: the child's stderr does not mention {needle:?}: {stderr:?}"
        );
    }
}

/// Parses `list_fds`: (comm fd, fd arguments, open fds).
fn parse_fd_list(out: &[u8]) -> (i32, Vec<i32>, BTreeSet<i32>) {
    let (mut comm, mut args, mut open) = (-1, Vec::new(), BTreeSet::new());
    for line in String::from_utf8(out.to_vec()).unwrap().lines() {
        let (k, v) = line.split_once(' ').unwrap();
        let v: i32 = v.parse().unwrap();
        match k {
            "comm" => comm = v,
            "arg" => args.push(v),
            "open" => {
                open.insert(v);
            }
            _ => panic!("bad line {line:?}"),
        }
    }
    (comm, args, open)
}

fn assert_exact_fds(out: &[u8], n_args: usize) {
    let (comm, args, open) = parse_fd_list(out);
    assert_eq!(args.len(), n_args);
    let mut want = std_fds();
    want.insert(comm);
    want.extend(&args);
    assert_eq!(
        want.len(),
        3 + 1 + n_args,
        "fds overlap: comm {comm}, args {args:?}"
    );
    assert_eq!(
        open, want,
        "the child's open fds (comm {comm}, args {args:?})"
    );
}

#[test]
fn the_child_holds_exactly_stdio_its_comm_socket_and_the_fds_it_was_sent() {
    // From the default template, with no fds and with some.
    let p = new_child();
    assert_exact_fds(&run_output(p, "list_fds"), 0);

    let (r, w) = pipe();
    let m = memfd("exact");
    let mut p = new_child();
    p.send_fd(r.as_fd()).unwrap();
    p.send_arg(b"between").unwrap();
    p.send_fd(w.as_fd()).unwrap();
    p.send_fd(m.as_fd()).unwrap();
    assert_exact_fds(&run_output(p, "list_fds"), 3);

    // From a template, with fds sent before and after the fork.
    let mut t = new_template();
    t.send_fd(m.as_fd()).unwrap();
    let mut k = t.fork().unwrap();
    k.send_fd(r.as_fd()).unwrap();
    let out = run_output(k, "list_fds");
    drop(t);
    assert_exact_fds(&out, 2);
}

#[test]
fn an_inherited_fd_without_cloexec_does_not_reach_a_new_server() {
    // A caller that leaks an fd (no O_CLOEXEC) into every exec: anyfork-serve
    // closes it, so neither the template nor its children hold it. The
    // tests that run other programs wait meanwhile (they would inherit it).
    child_lib();
    let _g = serial();
    let mut fds = [0; 2];
    // SAFETY: pipe fills two fds.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fresh fds.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let t = new_template();
    drop(w);
    let k = t.fork().unwrap();
    assert_exact_fds(&run_output(k, "list_fds"), 0);
    // Nobody holds the write end any more: the read end reaches EOF.
    let mut pfd = libc::pollfd {
        fd: r.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, 20_000) };
    assert_eq!(
        n,
        1,
        "a server process still holds the leaked pipe (template alive: {})",
        t.pid().is_ok()
    );
    let mut buf = [0u8; 1];
    assert_eq!(std::fs::File::from(r).read(&mut buf).unwrap(), 0);
    drop(t);
}

#[test]
fn eight_threads_create_200_processes_each_at_once() {
    // Runs in its own process (its 1,600 processes load the default
    // template alone); spawning it waits for the fd-leak test.
    let _g = serial();
    isolated(
        "eight_threads_create_200_processes_each_at_once",
        Duration::from_secs(90),
        eight_threads_body,
    );
}

fn eight_threads_body() {
    raise_nofile();
    let lib = child_lib().to_string();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let lib = lib.clone();
            std::thread::spawn(move || {
                let mut rxs = Vec::new();
                for i in 0..200 {
                    let mut p = Process::new().unwrap_or_else(|e| panic!("thread {t}: new: {e}"));
                    p.require(&lib).unwrap();
                    p.send_arg(format!("{t}/{i}").as_bytes()).unwrap();
                    rxs.push(run_async(p, "echo_strings"));
                }
                for (i, rx) in rxs.iter().enumerate() {
                    let sock = wait_run(rx).unwrap_or_else(|e| panic!("thread {t} #{i}: {e}"));
                    let out = common::read_to_eof(sock);
                    assert_eq!(String::from_utf8_lossy(&out), format!("{t}/{i}\n"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a creating thread failed");
    }
}

#[test]
fn dropping_an_unrun_process_lets_it_exit() {
    let p = new_child();
    let pid = p.pid().unwrap();
    assert!(common::alive(pid));
    drop(p);
    assert!(
        gone(pid),
        "pid {pid} still runs after its handle was dropped"
    );

    let t = new_template();
    let k = t.fork().unwrap();
    let (tp, kp) = (t.pid().unwrap(), k.pid().unwrap());
    assert_eq!(
        ppid_of(kp),
        Some(tp),
        "a fork of a template is the template's child"
    );
    drop(k);
    assert!(gone(kp));
    assert!(
        common::alive(tp),
        "the template exits only when its own handle goes"
    );
    drop(t);
    // The template is our child: the library reaps it as the loop turns.
    pump_until(Duration::from_secs(10), "the template to exit", || {
        !common::alive(tp)
    });
}

#[test]
fn c_api_rejects_bad_arguments_with_a_message() {
    let _g = serial();
    let exe = build("api_errors", Kind::Program, &["-pthread"]);
    common::run_checks(&exe, &[child_lib()]);
}

/// Runs tests/c/exiting_caller.c, lets it exit as `mode` says, and checks
/// that its templates and their waiting children are all gone.
fn caller_exits(mode: &str) {
    let _g = serial();
    let exe = build("exiting_caller", Kind::Program, &[]);
    let mut child = Command::new(&exe)
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let caller = child.id() as i32;
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let forked: Vec<i32> = line
        .strip_prefix("ready")
        .unwrap_or_else(|| panic!("{mode}: helper said {line:?}"))
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(forked.len(), 5);
    let templates = serve_children(caller);
    assert_eq!(
        templates.len(),
        3,
        "{mode}: default template + 2 new_exec templates: {templates:?}"
    );
    for &k in &forked {
        assert!(common::alive(k), "{mode}: forked pid {k} is not running");
        assert!(
            templates.contains(&ppid_of(k).unwrap()),
            "{mode}: pid {k} is no template's child"
        );
    }
    let mut stdin = child.stdin.take().unwrap();
    if mode == "wait" {
        kill(caller, libc::SIGKILL);
    } else {
        stdin.write_all(b"bye").unwrap();
    }
    drop(stdin);
    let st = child.wait().unwrap();
    if mode != "wait" {
        assert!(st.success(), "{mode}: helper exited {st}");
    }
    for pid in templates.iter().chain(&forked) {
        assert!(
            gone(*pid),
            "{mode}: anyfork-serve pid {pid} outlived its caller"
        );
    }
}

#[test]
fn a_caller_that_returns_from_main_leaves_no_server_behind() {
    caller_exits("return");
}

#[test]
fn a_caller_that_calls_exit_leaves_no_server_behind() {
    caller_exits("_exit");
}

#[test]
fn a_caller_killed_by_sigkill_leaves_no_server_behind() {
    caller_exits("wait");
}
