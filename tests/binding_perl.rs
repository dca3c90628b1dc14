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
//!
//! The suite runs twice: with AnyFork::XS built (bindings/perl/build-xs.pl,
//! the child's side in C: what an installed AnyFork uses), and with
//! `ANYFORK_PERL_XS=0`, through FFI::Platypus alone (what runs where no C
//! compiler was at hand).

mod common;

use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(600);
const GRACE: Duration = Duration::from_secs(10);

/// AnyFork::XS built into a directory of this build (once per test binary).
fn perl_xs_dir() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = common::root();
            let dir = common::lib_dir().join("perl-xs");
            let out = Command::new("perl")
                .arg(root.join("bindings/perl/build-xs.pl"))
                .arg(&dir)
                .output()
                .expect("running perl");
            assert!(
                out.status.success(),
                "building AnyFork::XS failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            dir
        })
        .clone()
}

/// The two runs take turns: together they would double the load on the
/// timing-sensitive checks (fds released after a wait, signals in slices).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_suite(xs: bool) {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    assert!(
        common::have("prove", &["--version"]),
        "perl's prove is missing: `make deps` installs perl"
    );
    assert!(
        common::have("perl", &["-MFFI::Platypus", "-e1"]),
        "FFI::Platypus is missing: `make deps` installs libffi-platypus-perl"
    );

    let root = common::root();
    let tmp = common::lib_dir().join(if xs { "perl-tmp-xs" } else { "perl-tmp" });
    std::fs::create_dir_all(&tmp).unwrap();
    let mut cmd = Command::new("prove");
    cmd.arg("-v");
    if xs {
        cmd.arg("-I").arg(perl_xs_dir());
    }
    cmd.arg("-I")
        .arg(root.join("bindings/perl/lib"))
        .arg(root.join("bindings/perl/t"))
        .current_dir(&root)
        .env("ANYFORK_LIB", common::libanyfork())
        .env("ANYFORK_SERVE", common::serve_exe())
        .env("ANYFORK_PERL_XS", if xs { "1" } else { "0" })
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

#[test]
fn perl_binding_tests_pass() {
    run_suite(true);
}

#[test]
fn perl_binding_tests_pass_through_ffi_alone() {
    run_suite(false);
}
