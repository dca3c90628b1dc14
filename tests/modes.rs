//! Every way to make a process (issue 4), each checked for running the
//! right code with the right arguments and fds:
//!
//! - template and early forks of a C program (tests/c/modes_template.c,
//!   tests/c/modes_early.c), which run that program's own functions;
//! - a custom server (tests/c/modes_server.c) started with
//!   `new_exec_argv`, whose dispatcher performs every eval and run;
//! - the `anyfork_exec` builtin: argv, fd mapping, environment, working
//!   directory, setsid, a program that cannot be executed, and no fds
//!   beyond the mapped ones (tests/c/modes_probe.c reports what it sees);
//! - handing a template to another process (tests/c/modes_handoff.c);
//! - `fork_reset_after_fork` in a child the caller forked itself
//!   (tests/c/modes_reset.c).
//!
//! The C drivers run as leaders of their own session
//! (`common::run_in_session`), which also proves they left no process
//! behind.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use anyfork::Process;
use common::*;

const LIMIT: Duration = Duration::from_secs(60);
const GRACE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------
// Building the C side

fn probe() -> PathBuf {
    build("modes_probe", Kind::Plain, &[])
}

fn run_c(exe: &Path, args: &[&str]) -> SessionRun {
    let mut cmd = Command::new(exe);
    cmd.args(args);
    common::run_in_session(&mut cmd, LIMIT, GRACE)
}

fn assert_clean(r: &SessionRun) {
    assert!(r.status.success(), "the program failed: {}", r.describe());
    assert!(
        r.leftovers.is_empty(),
        "processes left behind: {}",
        r.describe()
    );
}

// ---------------------------------------------------------------------
// Reading what the C drivers print

/// The lines of the block that starts with "<label> report:" and ends
/// before "<label> status N"; and N.
fn report(out: &str, label: &str) -> (Vec<String>, i32) {
    let head = format!("{label} report:");
    let tail = format!("{label} status ");
    let mut lines = out.lines().skip_while(|l| *l != head);
    assert!(lines.next().is_some(), "no {head:?} in:\n{out}");
    let mut body = Vec::new();
    for l in lines {
        if let Some(st) = l.strip_prefix(&tail) {
            return (body, st.trim().parse().unwrap());
        }
        body.push(l.to_string());
    }
    panic!("no {tail:?} after {head:?} in:\n{out}");
}

/// The number after `prefix` on the first line starting with it.
fn number_after(out: &str, prefix: &str) -> i64 {
    let rest = out
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{out}"));
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    digits.parse().unwrap()
}

/// The report's "pid P ppid Q" line.
fn pids(body: &[String]) -> (i64, i64) {
    let l = body
        .iter()
        .find(|l| l.starts_with("pid "))
        .expect("no pid line");
    let f: Vec<&str> = l.split(' ').collect();
    (f[1].parse().unwrap(), f[3].parse().unwrap())
}

/// The report without its pid line (which differs from run to run).
fn without_pids(body: &[String]) -> Vec<String> {
    body.iter()
        .filter(|l| !l.starts_with("pid "))
        .cloned()
        .collect()
}

fn lines(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The lines between "<label> pipe:" and the next line that starts with
/// neither "arg " nor "eval ", sorted.
fn pipe_lines(out: &str, label: &str) -> Vec<String> {
    let head = format!("{label} pipe:");
    let mut it = out.lines().skip_while(|l| *l != head);
    assert!(it.next().is_some(), "no {head:?} in:\n{out}");
    let mut v: Vec<String> = it
        .take_while(|l| l.starts_with("arg ") || l.starts_with("eval "))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// [`common::pipe`] as files, to read and write.
fn pipe_files() -> (std::fs::File, std::fs::File) {
    let (r, w) = common::pipe();
    (r.into(), w.into())
}

// ---------------------------------------------------------------------
// Template and early forks

#[test]
fn template_children_run_the_callers_function_with_its_state_and_args() {
    let exe = build("modes_template", Kind::Program, &["-rdynamic"]);
    let r = run_c(&exe, &["prepared-state-42"]);
    assert_clean(&r);
    let out = &r.stdout;
    let tpid = number_after(out, "template pid ");
    assert_ne!(tpid, i64::from(r.pid), "the template is the program itself");
    assert!(
        out.contains("outside child_args null=1 n=0\n"),
        "fork_child_args outside a created process: {}",
        r.describe()
    );

    // a: state from before fork_template (not the later change), the
    // template's eval, args sent before the fork then after it, in order.
    let (a, st) = report(out, "a");
    assert_eq!(exited(st), Some(0), "{}", r.describe());
    assert_eq!(
        without_pids(&a),
        lines(&[
            "state prepared-state-42",
            "init i1+i2 seen 0",
            "comm blocking=1 cloexec=1",
            "child_args same=1",
            "n 4",
            "arg 0 str before",
            "arg 1 fd",
            "arg 2 str after-a",
            "arg 3 fd",
        ]),
        "{}",
        r.describe()
    );
    let (apid, appid) = pids(&a);
    assert_eq!(appid, tpid, "a was not forked by the template");

    // b shares the template's arguments but not a's.
    let (b, st) = report(out, "b");
    assert_eq!(exited(st), Some(0));
    assert_eq!(
        without_pids(&b),
        lines(&[
            "state prepared-state-42",
            "init i1+i2 seen 0",
            "comm blocking=1 cloexec=1",
            "child_args same=1",
            "n 3",
            "arg 0 str before",
            "arg 1 fd",
            "arg 2 str after-b",
        ])
    );
    let (bpid, bppid) = pids(&b);
    assert_eq!(bppid, tpid);

    // c's run function returns 7: its exit status.
    let (c, st) = report(out, "c");
    assert!(c.is_empty());
    assert_eq!(exited(st), Some(7), "{}", r.describe());

    // The pids the exit callbacks got are the children's own.
    assert_eq!(number_after(out, "pids a "), apid);
    assert!(out.contains(&format!("pids a {apid} b {bpid} c ")));

    // Each fd argument is the pipe, at the position it was sent.
    assert_eq!(
        pipe_lines(out, "all"),
        {
            let mut v = vec![
                format!("arg 1 from {apid}"),
                format!("arg 3 from {apid}"),
                format!("arg 1 from {bpid}"),
                // The template's eval found the pipe among its arguments.
                format!("eval note from {tpid} saw 2"),
            ];
            v.sort();
            v
        },
        "{}",
        r.describe()
    );
    // Freed, the template exits by itself (status 0), reported with its pid.
    assert!(
        out.contains(&format!("template exit 0 pid {tpid}\n")),
        "{}",
        r.describe()
    );
}

#[test]
fn early_template_serves_new_exec_and_new_with_the_programs_functions() {
    let exe = build("modes_early", Kind::Program, &["-rdynamic"]);
    let r = run_c(&exe, &[]);
    assert_clean(&r);
    let out = &r.stdout;
    let self_exe = out
        .lines()
        .find_map(|l| l.strip_prefix("self exe "))
        .expect("self exe")
        .to_string();
    assert_eq!(Path::new(&self_exe), exe.canonicalize().unwrap());
    let exe_lines = [format!("exe {self_exe}"), format!("parent_exe {self_exe}")];

    // a: forked from a fork_new_exec template that evaluated early_init.
    let (a, st) = report(out, "a");
    assert_eq!(exited(st), Some(0), "{}", r.describe());
    let mut want = lines(&["set_after 0", "init E1"]);
    want.extend(exe_lines.iter().cloned());
    want.extend(lines(&[
        "comm blocking=1 cloexec=1",
        "child_args same=1",
        "n 3",
        "arg 0 str t-before",
        "arg 1 str a-after",
        "arg 2 fd",
    ]));
    assert_eq!(without_pids(&a), want, "{}", r.describe());
    let (apid, _) = pids(&a);
    assert_eq!(pipe_lines(out, "a"), vec![format!("arg 2 from {apid}")]);

    // n: fork_new's default template is a fork of this program too (its
    // parent's executable is the program, not anyfork-serve).
    let (n, st) = report(out, "n");
    assert_eq!(exited(st), Some(0));
    let mut want = lines(&["set_after 0", "init none"]);
    want.extend(exe_lines.iter().cloned());
    want.extend(lines(&[
        "comm blocking=1 cloexec=1",
        "child_args same=1",
        "n 1",
        "arg 0 str n-arg",
    ]));
    assert_eq!(without_pids(&n), want, "{}", r.describe());

    // x: fork_new_exec run directly.
    let (x, st) = report(out, "x");
    assert_eq!(exited(st), Some(0));
    let mut want = lines(&["set_after 0", "init none"]);
    want.extend(exe_lines.iter().cloned());
    want.extend(lines(&[
        "comm blocking=1 cloexec=1",
        "child_args same=1",
        "n 0",
    ]));
    assert_eq!(without_pids(&x), want, "{}", r.describe());
    assert!(
        !r.stdout.contains("anyfork-serve"),
        "an anyfork-serve was involved: {}",
        r.describe()
    );
}

// ---------------------------------------------------------------------
// Waiting for callbacks of processes made in this test process

fn run_cb() -> (
    impl FnOnce(anyfork::Result<OwnedFd>) + Send + 'static,
    RunRx,
) {
    let (tx, rx) = mpsc::channel();
    (
        move |r| {
            let _ = tx.send(r);
        },
        rx,
    )
}

/// Dispatches until `rx` has something.
fn pump<T>(rx: &mpsc::Receiver<T>, what: &str) -> T {
    common::pump(rx, LIMIT, what)
}

/// Reads a comm socket to its end. A process that exits with commands
/// still unread in its socket (a failed eval) makes the kernel reset the
/// connection: ECONNRESET is an end too.
fn read_comm(fd: OwnedFd) -> String {
    let mut s = std::os::unix::net::UnixStream::from(fd);
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    let mut v = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => v.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the comm socket: {e}"),
        }
    }
    String::from_utf8_lossy(&v).into_owned()
}

/// Run callback's socket read to EOF, then the exit: (comm bytes, pid, wait status).
fn finish(run: RunRx, exit: ExitRx, what: &str) -> (String, i32, i32) {
    let sock = pump(&run, what).unwrap_or_else(|e| panic!("{what}: run failed: {e}"));
    let comm = read_comm(sock);
    let (pid, st) = pump(&exit, what);
    let st = st.unwrap_or_else(|e| panic!("{what}: exit unknown: {e}; comm: {comm}"));
    (comm, pid, st)
}

// ---------------------------------------------------------------------
// A custom server with a dispatcher

#[test]
fn custom_server_dispatcher_sees_kind_name_fd_and_args() {
    let server = build("modes_server", Kind::Program, &[]);
    let mut t = anyfork::new_exec_argv(&[server.as_os_str().as_bytes(), b"--opt", b"two words"])
        .expect("new_exec_argv");
    let tpid = t.pid().expect("the server's pid");
    assert_eq!(
        std::fs::read_link(format!("/proc/{tpid}/exe")).unwrap(),
        server.canonicalize().unwrap(),
        "pid {tpid} is not the custom server"
    );

    let (reader, writer) = pipe_files();
    t.eval("srv_init", &[b"e1", b"e 2"]).unwrap();
    t.send_arg(b"before").unwrap();
    t.send_fd(writer.as_fd()).unwrap();
    drop(writer);

    // a: an eval and args after the fork, then a run.
    let mut a = t.fork().expect("fork a");
    a.eval("srv_late", &[]).unwrap();
    a.send_arg(b"after").unwrap();
    let a_exit = exit_rx(&mut a);
    let (cb, a_run) = run_cb();
    a.run("srv_run", cb).unwrap();

    // b: the dispatcher's return value is the exit status.
    let mut b = t.fork().expect("fork b");
    b.send_arg(b"5").unwrap();
    let b_exit = exit_rx(&mut b);
    let (cb, b_run) = run_cb();
    b.run("srv_exit", cb).unwrap();

    // c: an eval that fails (returns 6) ends the process with that status
    // (perhaps before the run command reaches it: then run fails at once).
    let mut c = t.fork().expect("fork c");
    let c_exit = exit_rx(&mut c);
    c.eval("srv_fail", &[b"x"]).unwrap();
    let (cb, c_run) = run_cb();
    let c_ran = c.run("srv_run", cb).is_ok();

    // d: builtins are found before the dispatcher (a second server, whose
    // first string is the status anyfork_exit takes).
    let t2 = anyfork::new_exec_argv(&[server.as_os_str().as_bytes()]).expect("second server");
    let mut d = t2.fork().expect("fork d");
    d.send_arg(b"9").unwrap();
    let d_exit = exit_rx(&mut d);
    let (cb, d_run) = run_cb();
    d.run("anyfork_exit", cb).unwrap();

    let (comm, apid, st) = finish(a_run, a_exit, "a");
    assert_eq!(exited(st), Some(0), "{comm}");
    let body: Vec<String> = comm.lines().map(str::to_string).collect();
    assert_eq!(pids(&body), (i64::from(apid), i64::from(tpid)), "{comm}");
    assert_eq!(
        without_pids(&body),
        lines(&[
            "argv [argv0] [--opt] [two words]",
            "eval srv_init fd=-1 n=2 [e1|e 2] ud=1",
            "eval srv_late fd=-1 n=0 [] ud=1",
            "run srv_run fd_sock=1 ud=1",
            "comm blocking=1 cloexec=1",
            "child_args same=1",
            "n 3",
            "arg 0 str before",
            "arg 1 fd",
            "arg 2 str after",
        ]),
        "{comm}"
    );

    let (comm, _, st) = finish(b_run, b_exit, "b");
    assert_eq!(exited(st), Some(5), "{comm}");
    assert!(comm.contains("run srv_exit fd_sock=1 ud=1\n"), "{comm}");
    assert!(comm.contains("arg 2 str 5\n"), "{comm}");

    // c never ran srv_run: the failed eval ended it with status 6.
    let (cpid, st) = pump(&c_exit, "c");
    assert_eq!(exited(st.expect("c's exit")), Some(6), "pid {cpid}");
    if c_ran {
        if let Ok(sock) = pump(&c_run, "c") {
            let comm = read_comm(sock);
            assert!(!comm.contains("run srv_run"), "{comm}");
        }
    }

    let (comm, _, st) = finish(d_run, d_exit, "d");
    assert_eq!(exited(st), Some(9), "{comm}");
    assert_eq!(comm, "", "the dispatcher ran a builtin");
    drop(t2);

    // What a's and b's report wrote into the pipe: a at position 1; b too.
    drop(t);
    let mut got = String::new();
    let mut reader = reader;
    reader.read_to_string(&mut got).unwrap();
    let mut got: Vec<&str> = got.lines().collect();
    got.sort();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got.contains(&format!("arg 1 from {apid}").as_str()),
        "{got:?}"
    );
}

#[test]
fn fork_serve_refuses_fds_it_cannot_serve() {
    let server = build("modes_server", Kind::Program, &[]);
    let r = run_c(&server, &["--serve-errors"]);
    assert_clean(&r);
    let out = &r.stdout;
    let line = |p: &str| {
        out.lines()
            .find(|l| l.starts_with(p))
            .unwrap_or_else(|| panic!("no {p:?} in {out}"))
            .to_string()
    };
    let neg = line("serve -1: ");
    assert!(
        neg.starts_with(&format!("serve -1: -{} ", libc::EBADF)),
        "{neg}"
    );
    assert!(neg.contains("EBADF"), "{neg}");
    let pipe = line("serve pipe: ");
    assert!(
        pipe.starts_with(&format!("serve pipe: -{} ", libc::ENOTSOCK)),
        "{pipe}"
    );
    assert!(pipe.contains("ENOTSOCK"), "{pipe}");
    let closed = line("serve closed: ");
    assert!(
        closed.starts_with(&format!("serve closed: -{} ", libc::EBADF)),
        "{closed}"
    );
}

// ---------------------------------------------------------------------
// The exec builtin

/// What modes_probe reported.
#[derive(Debug, Default)]
struct Probe {
    argv: Vec<String>,
    cwd: String,
    pid: i32,
    sid: i32,
    pgid: i32,
    fds: Vec<(i32, String)>,
    stdin: Option<String>,
    env: Vec<String>,
}

fn parse_probe(out: &str) -> Probe {
    assert!(
        out.ends_with("end\n"),
        "the probe's report is cut short:\n{out}"
    );
    let mut p = Probe::default();
    for l in out.lines() {
        let (key, rest) = l.split_once(' ').unwrap_or((l, ""));
        match key {
            "argv" => {
                let (_, v) = rest.split_once(' ').unwrap();
                p.argv.push(v[1..v.len() - 1].to_string());
            }
            "cwd" => p.cwd = rest.to_string(),
            "pid" => {
                let f: Vec<&str> = rest.split(' ').collect();
                p.pid = f[0].parse().unwrap();
                p.sid = f[2].parse().unwrap();
                p.pgid = f[4].parse().unwrap();
            }
            "fd" => {
                let (n, target) = rest.split_once(' ').unwrap();
                p.fds.push((n.parse().unwrap(), target.to_string()));
            }
            "stdin" => p.stdin = Some(rest[1..rest.len() - 1].to_string()),
            "env" => p.env.push(rest.to_string()),
            _ => {}
        }
    }
    p.fds.sort();
    p
}

/// What one exec'd program did.
struct Outcome {
    stdout: String,
    stderr: String,
    comm: String,
    pid: i32,
    status: i32,
}

impl Outcome {
    fn probe(&self) -> Probe {
        assert_eq!(
            exited(self.status),
            Some(0),
            "the probe failed: {}",
            self.show()
        );
        parse_probe(&self.stdout)
    }
    fn show(&self) -> String {
        format!(
            "status {:#x}\n--- stdout\n{}--- stderr\n{}--- comm\n{}",
            self.status, self.stdout, self.stderr, self.comm
        )
    }
}

/// Sends pipes as fds 0, 1 and 2 (stdin holding `input`), then `extra`
/// fds, and execs `argv` (with `env`) in `p`.
fn exec_stdio(
    mut p: Process,
    input: &[u8],
    extra: &[&OwnedFd],
    argv: &[&[u8]],
    env: Option<&[&[u8]]>,
) -> Outcome {
    let (in_r, mut in_w) = pipe_files();
    in_w.write_all(input).unwrap();
    drop(in_w);
    let (mut out_r, out_w) = pipe_files();
    let (mut err_r, err_w) = pipe_files();
    p.send_fd(in_r.as_fd()).unwrap();
    p.send_fd(out_w.as_fd()).unwrap();
    p.send_fd(err_w.as_fd()).unwrap();
    for fd in extra {
        p.send_fd(fd.as_fd()).unwrap();
    }
    drop((in_r, out_w, err_w));
    exec_collect(p, argv, env, Some((&mut out_r, &mut err_r)))
}

/// Execs `argv` in `p` and waits for it; reads `pipes` (stdout, stderr)
/// once it exited.
fn exec_collect(
    mut p: Process,
    argv: &[&[u8]],
    env: Option<&[&[u8]]>,
    pipes: Option<(&mut std::fs::File, &mut std::fs::File)>,
) -> Outcome {
    let exit = exit_rx(&mut p);
    let (cb, run) = run_cb();
    p.exec(argv, env, cb).expect("exec");
    let (comm, pid, status) = finish(run, exit, "exec");
    let (mut stdout, mut stderr) = (String::new(), String::new());
    if let Some((o, e)) = pipes {
        o.read_to_string(&mut stdout).unwrap();
        e.read_to_string(&mut stderr).unwrap();
    }
    Outcome {
        stdout,
        stderr,
        comm,
        pid,
        status,
    }
}

fn probe_bytes() -> Vec<u8> {
    probe().as_os_str().as_bytes().to_vec()
}

fn new() -> Process {
    Process::new().expect("Process::new")
}

#[test]
fn exec_passes_argv_in_order() {
    let pb = probe_bytes();
    let o = exec_stdio(
        new(),
        b"",
        &[],
        &[&pb, b"one", b"two words", b"", "ünï".as_bytes(), b"-x"],
        None,
    );
    let p = o.probe();
    assert_eq!(
        p.argv,
        vec![
            probe().display().to_string(),
            "one".into(),
            "two words".into(),
            "".into(),
            "ünï".into(),
            "-x".into()
        ],
        "{}",
        o.show()
    );
    assert_eq!(p.pid, o.pid, "the exit callback's pid is not the program's");
}

#[test]
fn exec_argv_follows_strings_sent_before_even_through_a_template() {
    let pb = probe_bytes();
    let mut t = Process::new_exec().expect("new_exec");
    t.send_arg(&pb).unwrap();
    t.send_arg(b"from-template").unwrap();
    let mut c = t.fork().expect("fork");
    c.send_arg(b"from-child").unwrap();
    let o = exec_stdio(c, b"", &[], &[b"from-exec"], None);
    assert_eq!(
        o.probe().argv,
        vec![
            probe().display().to_string(),
            "from-template".into(),
            "from-child".into(),
            "from-exec".into()
        ]
    );
}

// An exec right after a fork, with nothing else sent to the new process,
// is one spawn request: its template runs the program with posix_spawn
// instead of copying itself. What the program gets must not change.

#[test]
fn a_spawned_exec_gets_the_templates_strings_fds_and_comm_fd() {
    let file = own_dir().join("spawn-fd3-file");
    std::fs::write(&file, b"").unwrap();
    let f3: OwnedFd = std::fs::File::open(&file).unwrap().into();
    let (in_r, mut in_w) = pipe_files();
    in_w.write_all(b"stdin of a spawned program").unwrap();
    drop(in_w);
    let (mut out_r, out_w) = pipe_files();
    let (mut err_r, err_w) = pipe_files();
    let mut t = Process::new_exec().expect("new_exec");
    for fd in [in_r.as_fd(), out_w.as_fd(), err_w.as_fd(), f3.as_fd()] {
        t.send_fd(fd).unwrap();
    }
    drop((in_r, out_w, err_w));
    t.send_arg(&probe_bytes()).unwrap();
    t.send_arg(b"held by the template").unwrap();
    // fd 5, above the four mapped ones and past an unmapped fd 4.
    t.eval("anyfork_comm_fd", &[b"5"]).unwrap();
    let mut c = t.fork().expect("fork");
    let exit = exit_rx(&mut c);
    let (cb, run) = run_cb();
    c.exec(&[b"from-exec", b""], None, cb).expect("exec");
    let (comm, pid, status) = finish(run, exit, "spawned exec");
    // The template holds the pipes' write ends until it goes.
    drop(t);
    let (mut stdout, mut stderr) = (String::new(), String::new());
    out_r.read_to_string(&mut stdout).unwrap();
    err_r.read_to_string(&mut stderr).unwrap();
    let o = Outcome {
        stdout,
        stderr,
        comm,
        pid,
        status,
    };
    assert_eq!(exited(o.status), Some(0), "{}", o.show());
    let p = o.probe();
    assert_eq!(
        p.argv,
        vec![
            probe().display().to_string(),
            "held by the template".into(),
            "from-exec".into(),
            "".into()
        ],
        "{}",
        o.show()
    );
    assert_eq!(p.pid, o.pid, "the exit callback's pid is not the program's");
    assert_eq!(p.stdin.as_deref(), Some("stdin of a spawned program"));
    assert_eq!(o.stderr, "probe stderr\n", "{}", o.show());
    let nums: Vec<i32> = p.fds.iter().map(|f| f.0).collect();
    assert_eq!(nums, vec![0, 1, 2, 3, 5], "{:?}\n{}", p.fds, o.show());
    assert_eq!(Path::new(&p.fds[3].1), file.canonicalize().unwrap());
    assert!(p.fds[4].1.starts_with("socket:"), "{:?}", p.fds);
}

/// A detached exec (no run callback) is spawned without a socket of the
/// caller's: the program still gets the template's strings and fds, a
/// socket where `anyfork_comm_fd` asked for one (its peer closed), and a
/// program that cannot start still ends with 127 (the forked fallback
/// serves a socket of the template's own).
#[test]
fn a_detached_spawn_gets_what_the_template_holds_and_a_socket_where_asked() {
    let (mut out_r, out_w) = pipe_files();
    let (mut err_r, err_w) = pipe_files();
    let mut t = Process::new_exec().expect("new_exec");
    let null: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    for fd in [null.as_fd(), out_w.as_fd(), err_w.as_fd()] {
        t.send_fd(fd).unwrap();
    }
    drop((out_w, err_w));
    t.send_arg(&probe_bytes()).unwrap();
    t.eval("anyfork_comm_fd", &[b"4"]).unwrap();
    let mut c = t.fork().expect("fork");
    let exit = exit_rx(&mut c);
    c.exec_detached(&[b"detached"], None)
        .expect("exec_detached");
    let (pid, status) = wait_exit(&exit);
    let status = status.expect("an exit status");
    let mut missing = new();
    let exit = exit_rx(&mut missing);
    missing
        .exec_detached(&[b"/nonexistent/anyfork-no-such-program"], None)
        .expect("exec_detached");
    let (_, missing_status) = wait_exit(&exit);
    drop(t);
    let (mut stdout, mut stderr) = (String::new(), String::new());
    out_r.read_to_string(&mut stdout).unwrap();
    err_r.read_to_string(&mut stderr).unwrap();
    assert_eq!(exited(status), Some(0), "{status:#x}\n{stdout}{stderr}");
    assert_eq!(stderr, "probe stderr\n");
    let p = parse_probe(&stdout);
    assert_eq!(p.pid, pid, "the exit callback's pid is not the program's");
    assert_eq!(
        p.argv,
        vec![probe().display().to_string(), "detached".into()]
    );
    let nums: Vec<i32> = p.fds.iter().map(|f| f.0).collect();
    assert_eq!(nums, vec![0, 1, 2, 4], "{:?}", p.fds);
    assert!(p.fds[3].1.starts_with("socket:"), "{:?}", p.fds);
    assert_eq!(exited(missing_status.expect("an exit status")), Some(127));
}

/// A detached run (no run callback) of a process to which nothing was
/// sent goes without a socket of the caller's: the process gets the
/// template's arguments and a comm socket at EOF, and its exit status
/// still arrives.
#[test]
fn a_detached_fork_and_run_gets_the_templates_args_and_a_socket_at_eof() {
    let mut t = new_template();
    t.send_arg(b"7").unwrap();
    let mut status = t.fork().expect("fork");
    let exit = exit_rx(&mut status);
    status.run_detached("modes_status").expect("run_detached");
    let (pid, st) = wait_exit(&exit);
    assert!(pid > 0);
    assert_eq!(exited(st.expect("an exit status")), Some(7));
    let mut eof = t.fork().expect("fork");
    let exit = exit_rx(&mut eof);
    eof.run_detached("wait_eof").expect("run_detached");
    let (_, st) = wait_exit(&exit);
    assert_eq!(exited(st.expect("an exit status")), Some(0));
    // From a template's warm pool too: the waiting child takes the socket
    // its template made.
    t.eval("anyfork_warm", &[b"1"]).unwrap();
    for _ in 0..3 {
        let mut k = t.fork().expect("fork");
        let exit = exit_rx(&mut k);
        k.run_detached("modes_status").expect("run_detached");
        let (_, st) = wait_exit(&exit);
        assert_eq!(exited(st.expect("an exit status")), Some(7));
    }
}

#[test]
fn a_spawned_exec_starts_with_no_signal_blocked_or_ignored() {
    // The template blocks SIGCHLD (its signalfd); a forked child unblocks
    // it before user code, and a spawned program must start the same.
    let mut t = Process::new_exec().expect("new_exec");
    t.eval("anyfork_comm_fd", &[b"1"]).unwrap();
    let p = t.fork().expect("fork");
    let (tx, rx) = mpsc::channel();
    p.exec(&[b"/bin/cat", b"/proc/self/status"], None, move |r| {
        tx.send(r).unwrap()
    })
    .unwrap();
    let sock = pump(&rx, "exec").unwrap();
    let status = String::from_utf8(common::read_to_eof(sock)).unwrap();
    for key in ["SigBlk:", "SigIgn:"] {
        let v = status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap_or_else(|| panic!("no {key} in\n{status}"));
        // Bits 31 and 32 are glibc's own (cancellation, setxid).
        assert_eq!(v & !((1 << 31) | (1 << 32)), 0, "{key} {v:#x}");
    }
}

#[test]
fn exec_searches_path_for_a_name_without_slash() {
    let o = exec_stdio(
        new(),
        b"",
        &[],
        &[
            b"sh",
            b"-c",
            b"printf '%s|' \"$0\" \"$@\"",
            b"zero",
            b"a",
            b"b c",
        ],
        None,
    );
    assert_eq!(exited(o.status), Some(0), "{}", o.show());
    assert_eq!(o.stdout, "zero|a|b c|", "{}", o.show());
}

#[test]
fn exec_maps_sent_fds_to_0_1_2_and_on_and_nothing_else() {
    let file = own_dir().join("fd3-file");
    std::fs::write(&file, b"").unwrap();
    let f3: OwnedFd = std::fs::File::open(&file).unwrap().into();
    let pb = probe_bytes();
    let o = exec_stdio(new(), b"what stdin holds", &[&f3], &[&pb], None);
    let p = o.probe();
    assert_eq!(p.stdin.as_deref(), Some("what stdin holds"), "{}", o.show());
    assert_eq!(o.stderr, "probe stderr\n", "{}", o.show());
    assert_eq!(o.comm, "", "{}", o.show());
    let nums: Vec<i32> = p.fds.iter().map(|f| f.0).collect();
    assert_eq!(nums, vec![0, 1, 2, 3], "{}", o.show());
    assert!(p.fds[0].1.starts_with("pipe:"), "{:?}", p.fds);
    assert!(p.fds[1].1.starts_with("pipe:"), "{:?}", p.fds);
    assert!(p.fds[2].1.starts_with("pipe:"), "{:?}", p.fds);
    assert_eq!(Path::new(&p.fds[3].1), file.canonicalize().unwrap());
}

#[test]
fn exec_program_sees_only_the_mapped_fds() {
    // A leaky fd in this process (no close-on-exec) while a fresh server
    // is spawned, and fds sent to the template before the fork: neither
    // they, nor the comm socket, nor the server's socket reach the program
    // beyond the positions the fds were mapped to.
    static LEAK: Mutex<()> = Mutex::new(());
    let _g = LEAK.lock().unwrap();
    let mut raw = [0; 2];
    // SAFETY: pipe() into a two-element array.
    assert_eq!(unsafe { libc::pipe(raw.as_mut_ptr()) }, 0);
    let t = Process::new_exec();
    // SAFETY: closing the two fds pipe() just made.
    unsafe {
        libc::close(raw[0]);
        libc::close(raw[1]);
    }
    let t = t.expect("new_exec");
    let o = exec_stdio(t.fork().expect("fork"), b"", &[], &[&probe_bytes()], None);
    let p = o.probe();
    assert_eq!(
        p.fds.iter().map(|f| f.0).collect::<Vec<_>>(),
        vec![0, 1, 2],
        "{:?}\n{}",
        p.fds,
        o.show()
    );
    assert!(
        p.fds.iter().all(|f| f.1.starts_with("pipe:")),
        "{:?}",
        p.fds
    );

    // The same with `ls`, as a shell user would check.
    let (mut out_r, out_w) = pipe_files();
    let (mut err_r, err_w) = pipe_files();
    let devnull: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    let mut p = new();
    p.send_fd(devnull.as_fd()).unwrap();
    p.send_fd(out_w.as_fd()).unwrap();
    p.send_fd(err_w.as_fd()).unwrap();
    drop((out_w, err_w));
    let o = exec_collect(
        p,
        &[b"ls", b"-1", b"/proc/self/fd"],
        None,
        Some((&mut out_r, &mut err_r)),
    );
    assert_eq!(exited(o.status), Some(0), "{}", o.show());
    // 0, 1, 2, and the directory ls reads.
    assert_eq!(o.stdout, "0\n1\n2\n3\n", "{}", o.show());
}

#[test]
fn exec_comm_fd_makes_the_comm_socket_stderr() {
    let (mut out_r, out_w) = pipe_files();
    let devnull: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    let mut p = new();
    p.eval("anyfork_comm_fd", &[b"2"]).unwrap();
    p.send_fd(devnull.as_fd()).unwrap();
    p.send_fd(out_w.as_fd()).unwrap();
    drop(out_w);
    let mut no_err = pipe_files().0;
    let o = exec_collect(p, &[&probe_bytes()], None, Some((&mut out_r, &mut no_err)));
    let p = o.probe();
    assert_eq!(o.comm, "probe stderr\n", "{}", o.show());
    assert_eq!(
        p.fds.iter().map(|f| f.0).collect::<Vec<_>>(),
        vec![0, 1, 2],
        "{:?}",
        p.fds
    );
    assert_eq!(p.fds[0].1, "/dev/null");
    assert!(p.fds[2].1.starts_with("socket:"), "{:?}", p.fds);
}

#[test]
fn exec_setenv_sets_and_unsets_variables() {
    let mut p = new();
    p.eval("anyfork_setenv", &[b"AF_GONE=soon", b"AF_ONE=1"])
        .unwrap();
    p.eval(
        "anyfork_setenv",
        &[b"AF_TWO=two=2", b"AF_EMPTY=", b"AF_GONE"],
    )
    .unwrap();
    let o = exec_stdio(p, b"", &[], &[&probe_bytes()], None);
    let env = o.probe().env;
    for want in ["AF_ONE=1", "AF_TWO=two=2", "AF_EMPTY="] {
        assert!(env.iter().any(|e| e == want), "{want} missing: {env:?}");
    }
    assert!(!env.iter().any(|e| e.starts_with("AF_GONE=")), "{env:?}");
    // The rest of the environment is inherited.
    assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");
}

#[test]
fn exec_clearenv_empties_the_environment() {
    let mut p = new();
    p.eval("anyfork_clearenv", &[]).unwrap();
    p.eval("anyfork_setenv", &[b"ONLY=this"]).unwrap();
    let o = exec_stdio(p, b"", &[], &[&probe_bytes()], None);
    assert_eq!(o.probe().env, vec!["ONLY=this".to_string()], "{}", o.show());

    let o = exec_stdio(new(), b"", &[], &[&probe_bytes()], Some(&[]));
    assert_eq!(o.probe().env, Vec::<String>::new(), "{}", o.show());
}

#[test]
fn exec_with_env_replaces_the_environment() {
    let o = exec_stdio(
        new(),
        b"",
        &[],
        &[&probe_bytes()],
        Some(&[b"A=1", b"B=two words"]),
    );
    assert_eq!(
        o.probe().env,
        vec!["A=1".to_string(), "B=two words".to_string()],
        "{}",
        o.show()
    );
}

#[test]
fn exec_chdir_sets_the_working_directory() {
    let dir = common::out_dir().join("modes").join("cwd dir");
    std::fs::create_dir_all(&dir).unwrap();
    let mut p = new();
    p.eval("anyfork_chdir", &[dir.as_os_str().as_bytes()])
        .unwrap();
    let o = exec_stdio(p, b"", &[], &[&probe_bytes()], None);
    assert_eq!(
        Path::new(&o.probe().cwd),
        dir.canonicalize().unwrap(),
        "{}",
        o.show()
    );

    // A directory that is not there ends the process (status 1) before
    // the exec; what is sent after the eval may find it gone already.
    let mut p = new();
    let exit = exit_rx(&mut p);
    p.eval("anyfork_chdir", &[b"/nonexistent/anyfork-dir"])
        .unwrap();
    let _ = p.exec(&[&probe_bytes()], None, |_| {});
    let (pid, st) = pump(&exit, "chdir failure");
    assert_eq!(exited(st.expect("exit status")), Some(1), "pid {pid}");
}

#[test]
fn exec_setsid_makes_the_program_a_session_leader() {
    let mut p = new();
    p.eval("anyfork_setsid", &[]).unwrap();
    let o = exec_stdio(p, b"", &[], &[&probe_bytes()], None);
    let pr = o.probe();
    assert_eq!(pr.sid, pr.pid, "{}", o.show());
    assert_eq!(pr.pgid, pr.pid, "{}", o.show());

    // Without it, the program stays in the template's session.
    let o = exec_stdio(new(), b"", &[], &[&probe_bytes()], None);
    let pr = o.probe();
    assert_ne!(pr.sid, pr.pid, "{}", o.show());
}

#[test]
fn exec_reports_a_missing_program_on_the_comm_socket_with_status_127() {
    for prog in [
        &b"/nonexistent/anyfork-no-such-program"[..],
        b"anyfork-no-such-program-in-path",
    ] {
        let name = String::from_utf8_lossy(prog).into_owned();
        // With fds sent, a forked child execs; with nothing sent, the
        // template spawns (and falls back to a forked child to explain).
        let forked = exec_stdio(new(), b"", &[], &[prog, b"arg"], None);
        let spawned = exec_collect(new(), &[prog, b"arg"], None, None);
        for o in [forked, spawned] {
            assert_eq!(exited(o.status), Some(127), "{name}: {}", o.show());
            assert!(
                o.comm
                    .starts_with(&format!("anyfork_exec: cannot execute {name:?}")),
                "{name}: {}",
                o.show()
            );
            assert!(o.comm.contains("No such file or directory"), "{}", o.show());
            assert!(o.comm.ends_with('\n'), "{}", o.show());
        }
    }

    // A file that is not executable.
    let src = common::root().join("tests/c/modes_probe.c");
    let o = exec_stdio(new(), b"", &[], &[src.as_os_str().as_bytes()], None);
    assert_eq!(exited(o.status), Some(127), "{}", o.show());
    assert!(o.comm.contains("Permission denied"), "{}", o.show());

    // No program at all: run the builtin without strings.
    let mut p = new();
    let exit = exit_rx(&mut p);
    let (cb, run) = run_cb();
    p.run("anyfork_exec", cb).unwrap();
    let (comm, _, st) = finish(run, exit, "no program");
    assert_eq!(exited(st), Some(127), "{comm}");
    assert!(comm.contains("no program given"), "{comm}");

    // The Rust API refuses an empty argv before sending anything.
    let e = match new().exec(&[], None, |_| {}) {
        Ok(()) => panic!("exec with an empty argv succeeded"),
        Err(e) => e,
    };
    assert_eq!(e.errno(), anyfork::Errno::EINVAL, "{e}");
}

// ---------------------------------------------------------------------
// Handing a template to another process

#[test]
fn a_template_handed_to_another_process_forks_and_runs_there() {
    let exe = build("modes_handoff", Kind::Program, &[]);
    let r = run_c(&exe, &[child_lib()]);
    assert_clean(&r);
    let out = &r.stdout;
    let tpid = {
        let l = out
            .lines()
            .find(|l| l.starts_with("send gave up fd "))
            .unwrap();
        let i = l.find("(template pid ").unwrap() + "(template pid ".len();
        l[i..].split(')').next().unwrap().parse::<i64>().unwrap()
    };
    assert!(out.contains("nonblocking=1"), "{}", r.describe());

    // s: forked by the sender before the hand-over.
    let (s, st) = report(out, "s");
    assert_eq!(
        without_pids(&s),
        lines(&[
            "comm blocking=1 cloexec=1",
            "child_args same=1",
            "n 3",
            "arg 0 str from-sender",
            "arg 1 fd",
            "arg 2 str sender-child",
        ]),
        "{}",
        r.describe()
    );
    // Its exit was either read before the hand-over, or is unknowable
    // since (ECHILD: the template's reports go to the new owner now).
    assert!(
        exited(st) == Some(0) || st == -libc::ECHILD,
        "s status {st}: {}",
        r.describe()
    );

    // The receiver adopted it: no pid known there, but forks work, with
    // everything the sender had sent, then the receiver's arguments.
    assert!(
        out.contains("recv adopted fd ") && out.contains("pid known: no"),
        "{}",
        r.describe()
    );
    let (r1, st) = report(out, "r1");
    assert_eq!(exited(st), Some(0), "{}", r.describe());
    assert_eq!(
        without_pids(&r1),
        lines(&[
            "comm blocking=1 cloexec=1",
            "child_args same=1",
            "n 4",
            "arg 0 str from-sender",
            "arg 1 fd",
            "arg 2 str receiver-to-template",
            "arg 3 str from-receiver",
        ]),
        "{}",
        r.describe()
    );
    let (r1pid, r1ppid) = pids(&r1);
    assert_eq!(
        r1ppid, tpid,
        "r1 was not forked by the handed-over template"
    );
    let (_, st) = report(out, "r2");
    assert_eq!(exited(st), Some(5), "{}", r.describe());
    assert_eq!(number_after(out, "recv pids r1 "), r1pid);

    assert!(out.contains("send receiver status 0\n"), "{}", r.describe());
    // Its last owner gone, the template went too.
    assert!(out.contains("send template gone 1\n"), "{}", r.describe());
    let (spid, _) = pids(&s);
    let mut want = vec![format!("arg 1 from {spid}"), format!("arg 1 from {r1pid}")];
    want.sort();
    assert_eq!(pipe_lines(out, "send"), want, "{}", r.describe());
}

#[test]
fn from_fd_refuses_what_is_not_a_template_socket() {
    let exe = build("modes_handoff", Kind::Program, &[]);
    let r = run_c(&exe, &["--errors"]);
    assert_clean(&r);
    let line = |p: &str| {
        r.stdout
            .lines()
            .find(|l| l.starts_with(p))
            .unwrap_or_else(|| panic!("no {p:?}: {}", r.describe()))
            .to_string()
    };
    let pipe = line("pipe: ");
    assert!(pipe.starts_with("pipe: NULL; fd still open 1;"), "{pipe}");
    assert!(
        pipe.contains("not a socket") && pipe.contains("ENOTSOCK"),
        "{pipe}"
    );
    let dgram = line("dgram: ");
    assert!(
        dgram.starts_with("dgram: NULL; fd still open 1;"),
        "{dgram}"
    );
    assert!(dgram.contains("not a stream socket"), "{dgram}");
    let closed = line("closed: ");
    assert!(closed.starts_with("closed: NULL;"), "{closed}");
    assert!(
        closed.contains("is not open") && closed.contains("EBADF"),
        "{closed}"
    );
    let neg = line("negative: ");
    assert!(
        neg.starts_with("negative: NULL;") && neg.contains("EBADF"),
        "{neg}"
    );
    let flags = line("flags: ");
    assert!(
        flags.starts_with("flags: NULL;") && flags.contains("unknown flags"),
        "{flags}"
    );
    let null = line("to_fd NULL: ");
    assert!(
        null.starts_with(&format!("to_fd NULL: -{};", libc::EINVAL)),
        "{null}"
    );
}

// ---------------------------------------------------------------------
// fork_reset_after_fork

fn reset_run() -> SessionRun {
    let exe = build("modes_reset", Kind::Program, &[]);
    run_c(&exe, &[child_lib()])
}

#[test]
fn reset_after_fork_gives_the_child_its_own_templates() {
    let r = reset_run();
    assert_clean(&r);
    let out = &r.stdout;
    let t1 = number_after(out, "parent template ");
    let t2 = number_after(out, "child template ");
    assert!(t1 > 0 && t2 > 0 && t1 != t2, "{}", r.describe());

    let (child, st) = report(out, "child");
    assert_eq!(exited(st), Some(0), "{}", r.describe());
    assert_eq!(
        without_pids(&child),
        lines(&[
            "comm blocking=1 cloexec=1",
            "child_args same=1",
            "n 1",
            "arg 0 str child-arg",
        ])
    );
    let (_, st) = report(out, "child exec");
    assert_eq!(exited(st), Some(3), "{}", r.describe());

    // The parent's default template still serves it after the fork.
    let (after, st) = report(out, "parent after");
    assert_eq!(exited(st), Some(0), "{}", r.describe());
    assert_eq!(pids(&after).1, t1, "{}", r.describe());
    assert!(out.contains("parent done\n"), "{}", r.describe());

    // The parent exited while the child lived on: T1 exited with the
    // parent (the child holds no copy of its socket), T2 is the child's.
    assert!(out.contains("child parent-exited\n"), "{}", r.describe());
    assert!(out.contains("child T1 gone 1\n"), "{}", r.describe());
    assert!(out.contains("child T2 alive 1\n"), "{}", r.describe());
    assert!(out.ends_with("child done\n"), "{}", r.describe());
    // And with the child, T2 went: nothing is left in the session.
    assert!(!common::alive(t1 as i32) && !common::alive(t2 as i32));
}

#[test]
fn reset_after_fork_refuses_inherited_handles() {
    let r = reset_run();
    assert!(r.status.success(), "{}", r.describe());
    let out = &r.stdout;
    // The header promises -EBADF for handles made before the reset.
    assert!(
        out.contains(&format!("child held send -{}\n", libc::EBADF)),
        "{}",
        r.describe()
    );
    // And nothing the child did with its copy reached the parent's process.
    let (held, st) = report(out, "parent held");
    assert_eq!(exited(st), Some(0), "{}", r.describe());
    assert_eq!(
        without_pids(&held),
        lines(&[
            "comm blocking=1 cloexec=1",
            "child_args same=1",
            "n 1",
            "arg 0 str parent-held",
        ]),
        "{}",
        r.describe()
    );
}

/// Direct children (fork_new_exec, fork_template) are reaped through
/// their pidfd by whichever thread dispatches; with several threads
/// dispatching at once, the one whose waitpid finds the child already
/// reaped by another may record ECHILD first.
#[test]
fn direct_children_exit_status_survives_concurrent_dispatchers() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let helpers: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    anyfork::wait(5).expect("anyfork::wait");
                }
            })
        })
        .collect();
    let mut rxs = Vec::new();
    for i in 0..40 {
        let mut p = Process::new_exec().expect("new_exec");
        p.send_arg(format!("{}", i % 50 + 1).as_bytes()).unwrap();
        let (tx, rx) = mpsc::channel();
        p.on_exit(move |pid, st| {
            let _ = tx.send((pid, st));
        });
        p.run("anyfork_exit", |_| {}).unwrap();
        rxs.push((i, rx));
    }
    let mut bad = Vec::new();
    for (i, rx) in rxs {
        let (pid, st) = rx.recv_timeout(LIMIT).expect("exit callback");
        match st {
            Ok(st) if exited(st) == Some(i % 50 + 1) => {}
            other => bad.push(format!("pid {pid}: {other:?}")),
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in helpers {
        h.join().unwrap();
    }
    assert!(
        bad.is_empty(),
        "{} of 40 exits misreported:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// fork, then free the template at once, then run the child: the template
/// reads the fork and then EOF, and must still report the fork before it
/// exits.
#[test]
fn a_child_forked_just_before_its_template_is_freed_still_runs() {
    let mut failures = Vec::new();
    for i in 0..20 {
        let t = Process::new_exec().expect("new_exec");
        let mut c = t.fork().expect("fork");
        drop(t);
        c.send_arg(b"3").unwrap();
        let exit = exit_rx(&mut c);
        let (cb, run) = run_cb();
        c.run("anyfork_exit", cb).unwrap();
        match pump(&run, "run") {
            Ok(sock) => {
                drop(sock);
                let (_, st) = pump(&exit, "exit");
                assert_eq!(exited(st.expect("exit status")), Some(3));
            }
            Err(e) => failures.push(format!("round {i}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 20 failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
