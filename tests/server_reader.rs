//! How a server reads its command socket: large frames that arrive while
//! it is busy, and fds it cannot take because it is at its open-file
//! limit.

mod common;

use anyfork::Process;
use common::*;

/// libreader_lib.so (tests/c/reader_lib.c).
fn reader_lib() -> String {
    build("reader_lib", Kind::Library, &[])
        .display()
        .to_string()
}

/// What `reader_report` writes for a string argument.
fn string_line(s: &[u8]) -> String {
    let sum = s
        .iter()
        .fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    format!("s {} {sum}\n", s.len())
}

/// A fresh template with reader_lib loaded: `anyfork-serve`, or with
/// `custom` a server of our own calling `fork_serve` (as the bindings'
/// interpreters do).
fn template(custom: bool) -> Process {
    let mut t = if custom {
        let exe = build("reader_server", Kind::Program, &[]);
        anyfork::new_exec_argv(&[exe.display().to_string().as_bytes()]).expect("new_exec_argv")
    } else {
        Process::new_exec().expect("Process::new_exec")
    };
    t.require(&reader_lib()).expect("require");
    t
}

/// A template busy in an eval is sent a large string, then more evals and
/// strings; a fork then holds every string exactly.
fn busy_template_then_large_string(custom: bool, size: usize) {
    let mut t = template(custom);
    let big: Vec<u8> = (0..size).map(|i| b'x' ^ (i % 7) as u8).collect();
    let mut expect = String::new();
    t.eval("reader_sleep_ms", &[b"300"]).unwrap();
    t.send_arg(&big).unwrap();
    expect += &string_line(&big);
    for i in 0..20 {
        t.eval("reader_sleep_ms", &[b"1"]).unwrap();
        let small = format!("after {i}");
        t.send_arg(small.as_bytes()).unwrap();
        expect += &string_line(small.as_bytes());
    }
    t.send_arg(&big[..size / 2]).unwrap();
    expect += &string_line(&big[..size / 2]);
    // An eval whose own argument is large, while the template sleeps.
    t.eval("reader_sleep_ms", &[b"20", &big]).unwrap();
    t.send_arg(b"last").unwrap();
    expect += &string_line(b"last");
    t.eval("reader_sleep_ms", &[b"50"]).unwrap();
    let k = t.fork().unwrap();
    let got = run_text(k, "reader_report");
    assert_eq!(got, expect, "size {size}");
}

#[test]
fn a_busy_template_reads_large_strings_and_the_frames_after_them_intact() {
    for custom in [false, true] {
        for size in [100 << 10, 1 << 20, (1 << 20) + 3, 3 << 20, 16 << 20] {
            busy_template_then_large_string(custom, size);
        }
    }
}

/// The same while other threads dispatch (and so flush the queue) all along.
#[test]
fn a_busy_template_reads_large_strings_intact_while_threads_dispatch() {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = anyfork::wait(5);
                }
            })
        })
        .collect();
    for custom in [false, true] {
        for size in [100 << 10, 1 << 20, 16 << 20] {
            busy_template_then_large_string(custom, size);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in waiters {
        w.join().unwrap();
    }
}

/// A process whose template is busy when its fork is requested gets large
/// strings and evals on its own socket before it exists; it reads them all.
#[test]
fn a_process_forked_late_by_a_busy_template_reads_its_large_strings_intact() {
    for custom in [false, true] {
        for size in [100 << 10, (1 << 20) + 3, 16 << 20] {
            let mut t = template(custom);
            t.eval("reader_sleep_ms", &[b"300"]).unwrap();
            let mut k = t.fork().unwrap();
            let big: Vec<u8> = (0..size).map(|i| b'x' ^ (i % 5) as u8).collect();
            let mut expect = String::new();
            for i in 0..3 {
                k.send_arg(&big[..size - i]).unwrap();
                expect += &string_line(&big[..size - i]);
                k.eval("reader_sleep_ms", &[b"10", &big]).unwrap();
                k.send_arg(b"small").unwrap();
                expect += &string_line(b"small");
            }
            assert_eq!(run_text(k, "reader_report"), expect, "size {size}");
        }
    }
}

// ---- fds a server cannot take (it is at its open-file limit) ----

/// Sets the soft RLIMIT_NOFILE of process `pid` (prlimit(2)).
fn set_nofile(pid: i32, soft: u64) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain prlimit calls with valid pointers.
    unsafe {
        assert_eq!(
            libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old),
            0
        );
        let new = libc::rlimit {
            rlim_cur: soft,
            rlim_max: old.rlim_max,
        };
        assert_eq!(
            libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()),
            0,
            "prlimit {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The lowest fd number free in process `pid`: with its soft limit
/// there, the process cannot open (or receive) another fd.
fn lowest_free_fd(pid: i32) -> u64 {
    let fds = fds_of(pid);
    (0..).find(|n| !fds.contains_key(n)).unwrap() as u64
}

/// `anyfork-serve` with reader_lib loaded and its stderr in a file.
fn template_with_stderr(tag: &str) -> (Process, std::path::PathBuf) {
    let err = own_dir().join(format!("stderr-reader-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&err);
    let serve = serve_exe();
    let mut t = anyfork::new_exec_argv(&[
        b"/bin/sh",
        b"-c",
        b"exec \"$0\" 2>\"$1\"",
        serve.display().to_string().as_bytes(),
        err.display().to_string().as_bytes(),
    ])
    .expect("starting anyfork-serve under sh");
    t.require(&reader_lib()).unwrap();
    (t, err)
}

fn inode(fd: &std::os::fd::OwnedFd) -> u64 {
    dev_ino(std::os::fd::AsFd::as_fd(fd)).1
}

/// A fork request whose socket a template at its open-file limit cannot
/// take fails alone with EMFILE; the template serves on, and the fds of
/// every later frame go to that frame (none is shifted onto another).
#[test]
fn a_fork_whose_socket_the_template_cannot_take_fails_with_emfile_and_the_template_serves_on() {
    let (mut t, stderr) = template_with_stderr("fork");
    let tpid = t.pid().unwrap();
    let a = memfd("held-by-template");
    t.send_fd(std::os::fd::AsFd::as_fd(&a)).unwrap();
    t.send_arg(b"t").unwrap();
    // Settled: the template holds the fd argument.
    assert_eq!(
        run_text(t.fork().unwrap(), "reader_report"),
        format!("d {}\n{}", inode(&a), string_line(b"t"))
    );
    set_nofile(tpid, lowest_free_fd(tpid));
    let refused: Vec<Process> = (0..3).map(|_| t.fork().unwrap()).collect();
    for k in &refused {
        let e = k.pid().expect_err("a fork without its socket has no pid");
        assert_eq!(e.errno(), anyfork::Errno::EMFILE, "{e}");
    }
    assert!(alive(tpid), "the template died");
    set_nofile(tpid, 1024);
    // Later frames get their own fds: the template's argument is still
    // `a`, the new process's is `b`.
    let b = memfd("sent-to-child");
    let mut k = t.fork().unwrap();
    k.send_fd(std::os::fd::AsFd::as_fd(&b)).unwrap();
    assert_eq!(
        run_text(k, "reader_report"),
        format!("d {}\n{}d {}\n", inode(&a), string_line(b"t"), inode(&b))
    );
    drop(refused);
    let err = std::fs::read_to_string(&stderr).unwrap_or_default();
    let _ = std::fs::remove_file(&stderr);
    assert!(
        err.contains("fork request refused") && err.contains("EMFILE"),
        "{err:?}"
    );
    assert!(!err.contains("corrupt"), "{err:?}");
}

/// Forks queued while the template is busy go out together when it reads
/// again; a template with a low open-file limit takes their sockets one
/// at a time, so none is lost.
#[test]
fn forks_queued_behind_a_busy_template_at_a_low_fd_limit_all_run() {
    let mut t = template(false);
    let tpid = t.pid().unwrap();
    set_nofile(tpid, 64);
    t.eval("reader_sleep_ms", &[b"300"]).unwrap();
    // Fills the socket, so that the forks after it wait in the queue.
    let big = vec![b'x'; 8 << 20];
    t.send_arg(&big).unwrap();
    let mut runs = Vec::new();
    for _ in 0..100 {
        runs.push(run_async(t.fork().unwrap(), "reader_report"));
    }
    for rx in &runs {
        let out = read_to_eof(wait_run(rx).expect("a queued fork failed"));
        assert_eq!(String::from_utf8(out).unwrap(), string_line(&big));
    }
    assert!(alive(tpid));
}

/// fd arguments a process at its open-file limit cannot take: the
/// process serves on; its forks fail with EMFILE, and its run function
/// is not entered (exit status 124, a message naming EMFILE).
#[test]
fn fd_arguments_a_process_cannot_take_fail_its_forks_and_its_run_with_emfile() {
    // The template's own arguments.
    let (mut t, stderr) = template_with_stderr("args");
    let tpid = t.pid().unwrap();
    set_nofile(tpid, 64);
    let files: Vec<std::fs::File> = (0..80)
        .map(|_| std::fs::File::open("/dev/null").unwrap())
        .collect();
    for f in &files {
        t.send_fd(std::os::fd::AsFd::as_fd(f)).unwrap();
    }
    let k = t.fork().unwrap();
    let e = k
        .pid()
        .expect_err("a fork of a template that lost an argument");
    assert_eq!(e.errno(), anyfork::Errno::EMFILE, "{e}");
    assert!(alive(tpid), "the template died");
    // It still takes commands.
    t.eval("reader_sleep_ms", &[b"1"]).unwrap();
    let e = t.fork().unwrap().pid().unwrap_err();
    assert_eq!(e.errno(), anyfork::Errno::EMFILE, "{e}");
    drop(k);
    let ex = {
        let mut t2 = t;
        let rx = exit_rx(&mut t2);
        drop(t2);
        rx
    };
    let (_, st) = wait_exit(&ex);
    assert_eq!(exited(st.unwrap()), Some(0), "the template ends at EOF");
    let err = std::fs::read_to_string(&stderr).unwrap_or_default();
    let _ = std::fs::remove_file(&stderr);
    assert!(err.contains("open-file limit (EMFILE)"), "{err:?}");
    assert!(!err.contains("corrupt"), "{err:?}");

    // A child's arguments.
    let (t, stderr) = template_with_stderr("child");
    let mut k = t.fork().unwrap();
    let kpid = k.pid().unwrap();
    set_nofile(kpid, 64);
    let ex = exit_rx(&mut k);
    for f in &files {
        k.send_fd(std::os::fd::AsFd::as_fd(f)).unwrap();
    }
    let out = read_to_eof(run(k, "reader_report").expect("the run callback"));
    assert!(out.is_empty(), "the run function ran: {out:?}");
    let (pid, st) = wait_exit(&ex);
    assert_eq!(pid, kpid);
    assert_eq!(exited(st.unwrap()), Some(124));
    // The template is untouched.
    assert_eq!(run_text(t.fork().unwrap(), "reader_report"), "");
    let err = std::fs::read_to_string(&stderr).unwrap_or_default();
    let _ = std::fs::remove_file(&stderr);
    assert!(
        err.contains("could not be received") && err.contains("EMFILE"),
        "{err:?}"
    );
}
