//! The Perl binding (bindings/perl): `prove -I bindings/perl/lib
//! bindings/perl/t` with ANYFORK_LIB pointing at the freshly built
//! libanyfork.
//!
//! The suite runs the AnyEvent::Fork manual's examples against the
//! `AnyFork` module (FFI::Platypus), Perl code in exec'd Perl servers and
//! in templates forked from the test program, hand-over with
//! to_fh/new_from_fh, 1,000 creations without an fd leak, and issue 19's
//! stress checklist (dying callbacks, SIGINT, Perl's fork, drops, exit
//! statuses), issue 11's exit paths and the AnyEvent::Fork drop-in
//! (bindings/perl/compat: the manual's examples, RPC- and pool-shaped
//! workers), and AnyFork::RPC / AnyFork::Pool (issue 13). It runs as
//! the leader of a session of its own, so templates and processes left
//! behind are found and reported.

mod common;

use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(600);
const GRACE: Duration = Duration::from_secs(10);

#[test]
fn perl_binding_tests_pass() {
    assert!(
        common::have("prove", &["--version"]),
        "perl's prove is missing: `make deps` installs perl"
    );
    assert!(
        common::have("perl", &["-MFFI::Platypus", "-e1"]),
        "FFI::Platypus is missing: `make deps` installs libffi-platypus-perl"
    );

    let root = common::root();
    let tmp = common::lib_dir().join("perl-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut cmd = Command::new("prove");
    cmd.arg("-v")
        .arg("-I")
        .arg(root.join("bindings/perl/lib"))
        .arg(root.join("bindings/perl/t"))
        .current_dir(&root)
        .env("ANYFORK_LIB", common::libanyfork())
        .env("ANYFORK_SERVE", common::serve_exe())
        .env("TMPDIR", &tmp)
        .env_remove("PERL5LIB")
        .env_remove("PERL5OPT")
        .env_remove("HARNESS_OPTIONS");
    let r = common::run_in_session(&mut cmd, LIMIT, GRACE);
    let all = r.describe();
    println!("{all}");
    assert!(r.status.success(), "the Perl tests failed: {all}");
    assert!(
        r.stdout.contains("All tests successful."),
        "prove did not report success: {all}"
    );
    assert!(
        !r.stdout.contains("skipped:"),
        "a Perl test was skipped (missing AnyEvent or cc?): {all}"
    );
    let skips: Vec<&str> = r.stdout.lines().filter(|l| l.contains("# skip")).collect();
    assert!(skips.is_empty(), "Perl tests were skipped: {skips:?}");
    assert!(r.leftovers.is_empty(), "processes left behind: {all}");
}
