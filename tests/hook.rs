//! The fork hook (`fork_set_fork_hook`): a server, and a template forked
//! from a program, make every process through the hook, and a hook that
//! fails is a failed fork for that creation alone.
//!
//! tests/c/hook_server.c is both: a custom server started with
//! `new_exec_argv`, and with `--template` a program that forks a template
//! of itself. Its hook counts its calls and does the work at-fork
//! handlers would (before, and after on each side); each process reports
//! what it saw.

mod common;

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::process::Command;
use std::time::Duration;

use anyfork::{Errno, Process};
use common::*;

const LIMIT: Duration = Duration::from_secs(60);

/// "key=value ..." of a hook_report line, as numbers.
fn fields(line: &str) -> HashMap<String, i64> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(i64::MIN)))
        .collect()
}

/// Runs hook_report in `p`: its report and (pid, exit status).
fn report(mut p: Process) -> (HashMap<String, i64>, (i32, anyfork::Result<i32>)) {
    let exit = exit_rx(&mut p);
    let text = run_text(p, "hook_report");
    let f = fields(&text);
    assert!(f.contains_key("calls"), "no report in {text:?}");
    (f, wait_exit(&exit))
}

fn server() -> Process {
    let exe = build("hook_server", Kind::Program, &[]);
    anyfork::new_exec_argv(&[exe.as_os_str().as_bytes()]).expect("new_exec_argv")
}

#[test]
fn a_server_forks_every_process_through_its_hook() {
    let t = server();
    let tpid = t.pid().expect("the server's pid");

    let (a, (apid, ast)) = report(t.fork().unwrap());
    assert_eq!(ast.unwrap(), 0);
    assert_eq!(a["made_by_hook"], 1, "a: {a:?}");
    assert_eq!(a["calls"], 1, "a: {a:?}");
    assert_eq!(a["prepared"], 1, "a: {a:?}");
    assert_eq!(a["pid"], i64::from(apid), "a: {a:?}");
    assert_eq!(a["ppid"], i64::from(tpid), "a: {a:?}");
    assert_eq!(a["ud"], 1, "a: {a:?}");
    // The server's signalfd is closed before user code, as ever.
    assert_eq!(a["signalfds"], 0, "a: {a:?}");
    // Its signal handlers are the template's, as its own fork leaves them.
    assert_eq!(a["usr1"], 1, "a: {a:?}");
    assert_eq!(a["term_dfl"], 1, "a: {a:?}");

    // The parent's side of the hook ran: it saw a's pid before forking b.
    let (b, (bpid, bst)) = report(t.fork().unwrap());
    assert_eq!(bst.unwrap(), 0);
    assert_eq!(b["made_by_hook"], 1, "b: {b:?}");
    assert_eq!(b["calls"], 2, "b: {b:?}");
    assert_eq!(b["parent_saw"], i64::from(apid), "b: {b:?}");
    assert_eq!(b["pid"], i64::from(bpid), "b: {b:?}");

    // Processes forked in a batch, each through the hook.
    let batch: Vec<_> = (0..20)
        .map(|_| {
            let mut p = t.fork().unwrap();
            let exit = exit_rx(&mut p);
            (run_async(p, "hook_report"), exit)
        })
        .collect();
    let mut pids = std::collections::BTreeSet::new();
    for (run, exit) in batch {
        let f = fields(&String::from_utf8(read_to_eof(wait_run(&run).unwrap())).unwrap());
        let (pid, st) = wait_exit(&exit);
        assert_eq!(st.unwrap(), 0);
        assert_eq!(f["made_by_hook"], 1, "{f:?}");
        assert_eq!(f["pid"], i64::from(pid), "{f:?}");
        pids.insert(f["calls"]);
    }
    assert_eq!(pids, (3..23).collect(), "each fork called the hook once");
}

#[test]
fn a_failing_hook_is_a_failed_fork_and_the_server_serves_on() {
    let mut t = server();
    for (errno, want) in [(libc::EAGAIN, Errno::EAGAIN), (0, Errno::EIO)] {
        t.eval("hook_fail", &[b"1", errno.to_string().as_bytes()])
            .unwrap();
        let mut c = t.fork().unwrap();
        let exit = exit_rx(&mut c);
        let got = c.pid().expect_err("a fork whose hook failed has no pid");
        assert_eq!(got.errno(), want, "{got}");
        drop(c);
        let (pid, st) = wait_exit(&exit);
        assert_eq!(pid, -1);
        assert_eq!(st.expect_err("no status").errno(), want);

        let (d, (_, dst)) = report(t.fork().unwrap());
        assert_eq!(dst.unwrap(), 0);
        assert_eq!(d["made_by_hook"], 1, "{d:?}");
    }
}

#[test]
fn warm_pool_children_are_forked_through_the_hook() {
    let mut t = server();
    t.eval("anyfork_warm", &[b"2"]).unwrap();
    for _ in 0..4 {
        let (f, (pid, st)) = report(t.fork().unwrap());
        assert_eq!(st.unwrap(), 0);
        assert_eq!(f["made_by_hook"], 1, "{f:?}");
        assert_eq!(f["pid"], i64::from(pid), "{f:?}");
    }
}

#[test]
fn a_template_forked_from_a_program_is_made_by_the_hook_and_so_are_its_processes() {
    let exe = build("hook_server", Kind::Program, &[]);
    let mut cmd = Command::new(&exe);
    cmd.arg("--template");
    let r = run_in_session(&mut cmd, LIMIT, Duration::from_secs(10));
    assert!(r.status.success(), "{}", r.describe());
    assert!(r.leftovers.is_empty(), "{}", r.describe());
    let out = &r.stdout;
    let line_after = |label: &str| {
        let mut lines = out.lines();
        lines.find(|l| *l == format!("{label} report:"));
        fields(
            lines
                .next()
                .unwrap_or_else(|| panic!("no {label} report in {out}")),
        )
    };
    let prog = fields(out.lines().find(|l| l.starts_with("program ")).unwrap());
    assert_eq!(
        prog["calls"], 1,
        "fork_template went through the hook: {out}"
    );
    let tmpl = line_after("template");
    assert_eq!(tmpl["made_by_hook"], 1, "{out}");
    assert_eq!(tmpl["ppid"], i64::from(r.pid), "{out}");
    for (label, calls) in [("child0", 2), ("child1", 3)] {
        let c = line_after(label);
        assert_eq!(c["made_by_hook"], 1, "{label}: {out}");
        assert_eq!(c["calls"], calls, "{label}: {out}");
        assert_eq!(c["ppid"], tmpl["pid"], "{label}: {out}");
    }
}
