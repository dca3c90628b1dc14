//! Every fenced code block of README.md and bindings/*/README.md, compiled
//! or run as printed, so that none can rot.
//!
//! A block's first line says what it is:
//! - a comment naming a file (`/* prog.c: ... */`, `# example.py`,
//!   `// main.go ...`, `# CMakeLists.txt: ...`): saved under that name and
//!   built and run from a directory outside the repository;
//! - a comment starting `fragment:`: part of a program; checked as far as
//!   it can be (Perl: compiled with `perl -c` after a prelude);
//! - a comment starting `not run by tests/snippets.rs:` and the reason:
//!   only its shell syntax is checked;
//! - otherwise a `sh` block is a set of commands some test below runs
//!   exactly as printed; a block no test claims fails
//!   `every_block_is_run_or_visibly_marked`.
//!
//! The C quick start builds with pkg-config and with CMake against a
//! temporary `make install` prefix. Each binding is installed with its
//! own tool by its README's install commands, run in a copy of the
//! binding (so nothing is written into the repository): Python into a
//! virtualenv, Ruby into a GEM_HOME, Perl into an INSTALL_BASE, Go as a
//! module required by a fresh one. Its README examples then run from a
//! directory outside the repository, against the installed copy. The
//! prefix is not the default one, and nothing but PKG_CONFIG_PATH (as for
//! C and Go) tells the install where it is: Python, Ruby and Perl record
//! pkg-config's libdir at install and run with no ANYFORK_LIB.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(300);
const GRACE: Duration = Duration::from_secs(10);
const NOT_RUN: &str = "not run by tests/snippets.rs:";

/// One fenced block.
#[derive(Clone, Debug)]
struct Block {
    readme: String, // relative to the root
    line: usize,    // of the opening fence, 1-based
    lang: String,
    text: String,
}

impl Block {
    fn at(&self) -> String {
        format!("{}:{}", self.readme, self.line)
    }

    fn first_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }

    /// The first line's comment text, without the comment markers.
    fn first_comment(&self) -> Option<&str> {
        let l = self.first_line().trim();
        let body = l
            .strip_prefix("//")
            .or_else(|| l.strip_prefix('#'))
            .or_else(|| l.strip_prefix("/*"))?;
        Some(body.trim().trim_end_matches("*/").trim())
    }

    fn kind(&self) -> Kind {
        let Some(c) = self.first_comment() else {
            return Kind::Commands;
        };
        if let Some(why) = c.strip_prefix(NOT_RUN) {
            return Kind::NotRun(why.trim().to_string());
        }
        if c.starts_with("fragment:") {
            return Kind::Fragment;
        }
        let word = c.split_whitespace().next().unwrap_or("");
        let word = word.trim_end_matches([':', ',']);
        let is_file = word.contains('.')
            && !word.starts_with('.')
            && word
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '.' || ch == '_' || ch == '-');
        if is_file {
            Kind::File(word.to_string())
        } else {
            Kind::Commands
        }
    }
}

#[derive(Debug, PartialEq)]
enum Kind {
    File(String),
    Fragment,
    NotRun(String),
    Commands,
}

fn readmes() -> Vec<String> {
    let mut v = vec!["README.md".to_string()];
    for lang in ["go", "perl", "python", "ruby"] {
        v.push(format!("bindings/{lang}/README.md"));
    }
    v
}

/// Every fenced block with a language (a block without one is text).
fn blocks() -> Vec<Block> {
    let mut out = Vec::new();
    for readme in readmes() {
        let text = std::fs::read_to_string(common::root().join(&readme)).unwrap();
        let mut open: Option<(usize, String, String)> = None;
        for (i, line) in text.lines().enumerate() {
            match open.take() {
                None => {
                    if let Some(info) = line.strip_prefix("```") {
                        open = Some((i + 1, info.trim().to_string(), String::new()));
                    }
                }
                Some((at, lang, mut body)) => {
                    if line.trim_end() == "```" {
                        if !lang.is_empty() {
                            out.push(Block {
                                readme: readme.clone(),
                                line: at,
                                lang,
                                text: body,
                            });
                        }
                    } else {
                        body.push_str(line);
                        body.push('\n');
                        open = Some((at, lang, body));
                    }
                }
            }
        }
        assert!(open.is_none(), "{readme}: a fenced block is not closed");
    }
    out
}

/// The blocks of `readme` saved as `file`.
fn files(readme: Option<&str>, file: &str) -> Vec<Block> {
    blocks()
        .into_iter()
        .filter(|b| readme.is_none_or(|r| b.readme == r))
        .filter(|b| b.kind() == Kind::File(file.to_string()))
        .collect()
}

/// The one command block of `readme` that contains `needle`.
fn commands(readme: &str, needle: &str) -> Block {
    let found: Vec<Block> = blocks()
        .into_iter()
        .filter(|b| b.readme == readme && b.kind() == Kind::Commands && b.text.contains(needle))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{readme}: expected one command block with {needle:?}, found {found:?}"
    );
    found.into_iter().next().unwrap()
}

/// Which test runs a command block: (readme, text it contains).
const CLAIMED: &[(&str, &str)] = &[
    ("README.md", "pkg-config --cflags --libs anyfork"),
    ("bindings/python/README.md", "pip install ./bindings/python"),
    ("bindings/ruby/README.md", "gem build anyfork.gemspec"),
    ("bindings/perl/README.md", "perl Makefile.PL"),
    ("bindings/go/README.md", "go mod edit -require anyfork"),
];

#[test]
fn every_block_is_run_or_visibly_marked() {
    let all = blocks();
    assert!(all.len() >= 15, "too few blocks found: {all:?}");
    let runnable = ["c", "go", "python", "perl", "ruby", "cmake"];
    for b in &all {
        match b.kind() {
            Kind::File(name) => {
                assert!(
                    runnable.contains(&b.lang.as_str()),
                    "{}: a {} block named {name}: no test runs {} files",
                    b.at(),
                    b.lang,
                    b.lang
                );
                let known = [
                    "worker.c",
                    "prog.c",
                    "CMakeLists.txt",
                    "main.go",
                    "example.py",
                    "example_mp.py",
                    "example.pl",
                    "example.rb",
                ];
                // Files the tests run from the tree: the block must be the
                // file as it is there.
                let in_tree = [("rpc_worker.py", "tests/c/rpc_worker.py")];
                if let Some((_, path)) = in_tree.iter().find(|(n, _)| *n == name) {
                    let file = std::fs::read_to_string(common::root().join(path)).unwrap();
                    assert_eq!(
                        b.text.trim(),
                        file.trim(),
                        "{}: the block is not {path} as tests/rpc.rs runs it",
                        b.at()
                    );
                    continue;
                }
                assert!(
                    known.contains(&name.as_str()),
                    "{}: no test runs a file named {name}",
                    b.at()
                );
            }
            Kind::Fragment if b.lang == "c" => {
                // A C fragment is a whole translation unit that is not a
                // program: it must compile, warnings as errors.
                let dir = common::own_dir().join("snippets");
                std::fs::create_dir_all(&dir).unwrap();
                let src = dir.join(format!("fragment-{}.c", b.line));
                std::fs::write(&src, &b.text).unwrap();
                let out = Command::new("cc")
                    .args(["-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-I"])
                    .arg(common::root().join("include"))
                    .arg(&src)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}: the C fragment does not compile:\n{}",
                    b.at(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Kind::Fragment => assert_eq!(
                b.lang,
                "perl",
                "{}: fragments are checked for C and Perl only",
                b.at()
            ),
            Kind::NotRun(why) => {
                assert!(!why.is_empty(), "{}: say why it is not run", b.at());
                assert_eq!(b.lang, "sh", "{}: only shell blocks may go unrun", b.at());
                let st = Command::new("sh")
                    .args(["-n", "-c", &b.text])
                    .status()
                    .unwrap();
                assert!(st.success(), "{}: not valid shell:\n{}", b.at(), b.text);
            }
            Kind::Commands => {
                let claims = CLAIMED
                    .iter()
                    .filter(|(r, needle)| *r == b.readme && b.text.contains(needle))
                    .count();
                assert_eq!(
                    claims,
                    1,
                    "{}: a {} block that no test runs; name its file or mark it \
                     (`fragment:` or `{NOT_RUN} why`) on its first line:\n{}",
                    b.at(),
                    b.lang,
                    b.text
                );
            }
        }
    }
}

// --- the environment -------------------------------------------------------

/// `make install` into a prefix of this test binary's own, once.
fn prefix() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let prefix = common::own_dir().join("prefix");
        let _ = std::fs::remove_dir_all(&prefix);
        let out = Command::new("make")
            .args(["-s", "install", "PROFILE=debug"])
            .arg(format!("PREFIX={}", prefix.display()))
            .current_dir(common::root())
            .output()
            .expect("running make");
        assert!(
            out.status.success(),
            "make install failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        prefix
    })
}

/// A fresh directory under this binary's own.
fn fresh(name: &str) -> PathBuf {
    let d = common::own_dir().join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A copy of bindings/<lang> as `<dir>/bindings/<lang>` (a stand-in for
/// the repository root), without build products.
fn copy_binding(lang: &str, dir: &Path) -> PathBuf {
    let from = common::root().join("bindings").join(lang);
    let to = dir.join("bindings").join(lang);
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap().flatten() {
            let name = e.file_name();
            let n = name.to_string_lossy();
            if matches!(
                n.as_ref(),
                "__pycache__" | "blib" | "Makefile" | "pm_to_blib"
            ) || n.ends_with(".gem")
                || n.starts_with("MYMETA")
            {
                continue;
            }
            let t = e.file_type().unwrap();
            if t.is_dir() {
                copy(&e.path(), &to.join(&name));
            } else if t.is_file() {
                std::fs::copy(e.path(), to.join(&name)).unwrap();
            }
        }
    }
    copy(&from, &to);
    dir.to_path_buf()
}

/// A command with none of the variables that could point a binding
/// elsewhere than the test means.
fn clean(program: &str) -> Command {
    let mut c = Command::new(program);
    for v in [
        "ANYFORK_LIB",
        "ANYFORK_SERVE",
        "LD_LIBRARY_PATH",
        "PYTHONPATH",
        "PERL5LIB",
        "PERL5OPT",
        "PERL_MM_OPT",
        "GEM_HOME",
        "GEM_PATH",
        "RUBYOPT",
        "RUBYLIB",
        "PKG_CONFIG_PATH",
        "CGO_CFLAGS",
        "CGO_LDFLAGS",
        "GOFLAGS",
        "VIRTUAL_ENV",
        "HARNESS_OPTIONS",
        "MAKEFLAGS",
        "MFLAGS",
        "MAKELEVEL",
    ] {
        c.env_remove(v);
    }
    c.env("PYTHONDONTWRITEBYTECODE", "1");
    c
}

/// Runs `cmd` in a session of its own and requires success and no
/// process left behind; returns stdout.
fn ok(what: &str, cmd: &mut Command) -> String {
    let r = common::run_in_session(cmd, LIMIT, GRACE);
    let all = r.describe();
    assert!(r.status.success(), "{what} failed: {all}");
    assert!(
        r.leftovers.is_empty(),
        "{what} left processes behind: {all}"
    );
    r.stdout
}

/// A block's commands, exactly as printed, under `sh -e`.
fn sh(b: &Block, cwd: &Path) -> Command {
    let mut c = clean("sh");
    c.args(["-e", "-c", &b.text]).current_dir(cwd);
    c
}

fn write(dir: &Path, b: &Block, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, &b.text).unwrap();
    p
}

fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

// --- C ---------------------------------------------------------------------

#[test]
fn the_c_quick_start_builds_with_pkg_config_and_cmake_and_runs() {
    let prefix = prefix();
    let pc = prefix.join("lib/pkgconfig");
    let dir = fresh("quickstart");
    let [worker] = &files(Some("README.md"), "worker.c")[..] else {
        panic!("README.md must have one worker.c block")
    };
    let [prog] = &files(Some("README.md"), "prog.c")[..] else {
        panic!("README.md must have one prog.c block")
    };
    let [cmake] = &files(Some("README.md"), "CMakeLists.txt")[..] else {
        panic!("README.md must have one CMakeLists.txt block")
    };
    write(&dir, worker, "worker.c");
    write(&dir, prog, "prog.c");
    write(&dir, cmake, "CMakeLists.txt");

    // The build commands as printed; no LD_LIBRARY_PATH: the rpath that
    // anyfork.pc carries outside /usr is what finds the library.
    let build = commands("README.md", "pkg-config --cflags --libs anyfork");
    let out = ok(
        "the quick start's commands",
        sh(&build, &dir).env("PKG_CONFIG_PATH", &pc),
    );
    assert!(
        out.contains("hello, world\n"),
        "the quick start did not print the worker's greeting: {out:?}"
    );
    assert!(
        out.contains("exited with status 0"),
        "the quick start did not print the exit status: {out:?}"
    );

    // Both files are clean under -Werror too.
    for (src, extra) in [("prog.c", ""), ("worker.c", "-shared -fPIC")] {
        let cmd = format!(
            "cc -Wall -Wextra -Werror {extra} -o /dev/null {src} $(pkg-config --cflags --libs anyfork)"
        );
        ok(
            &format!("{src} with -Werror"),
            clean("sh")
                .args(["-e", "-c", &cmd])
                .current_dir(&dir)
                .env("PKG_CONFIG_PATH", &pc),
        );
    }

    // A missing worker library: the process says why on its stderr, and
    // prog exits non-zero with the process's status (127).
    let r = common::run_in_session(
        clean("./prog").arg("./no-such-worker.so").current_dir(&dir),
        LIMIT,
        GRACE,
    );
    let all = r.describe();
    assert_eq!(
        r.status.code(),
        Some(127),
        "prog with a missing library: {all}"
    );
    assert!(
        r.stderr.contains("no-such-worker.so"),
        "the reason does not name the library: {all}"
    );
    assert!(
        r.stdout.contains("exited with status 127"),
        "prog did not report status 127: {all}"
    );
    assert!(r.leftovers.is_empty(), "left behind: {all}");

    // CMake, with the package config from the prefix.
    assert!(
        common::have("cmake", &["--version"]),
        "cmake is missing: `make deps` installs it"
    );
    let b = dir.join("build");
    ok(
        "cmake configure",
        clean("cmake")
            .arg("-S")
            .arg(&dir)
            .arg("-B")
            .arg(&b)
            .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display())),
    );
    ok("cmake --build", clean("cmake").arg("--build").arg(&b));
    let out = ok(
        "prog built by CMake",
        clean(&b.join("prog").display().to_string())
            .arg(dir.join("libworker.so"))
            .current_dir(&dir),
    );
    assert!(
        out.contains("hello, world\n") && out.contains("exited with status 0"),
        "prog built by CMake: {out:?}"
    );
}

// --- Python ----------------------------------------------------------------

#[test]
fn python_installs_with_pip_into_a_virtualenv_and_runs_the_readme_examples() {
    let prefix = prefix();
    let lib = prefix.join("lib");
    let dir = fresh("python");
    let venv = dir.join("venv");
    ok(
        "python3 -m venv",
        clean("python3").arg("-m").arg("venv").arg(&venv),
    );
    let clone = copy_binding("python", &dir.join("clone"));
    let bin = venv.join("bin");
    let venv_env = |c: &mut Command| {
        c.env("PATH", path_with(&bin))
            .env("VIRTUAL_ENV", &venv)
            .env("PIP_NO_INDEX", "1")
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1");
    };
    let install = commands("bindings/python/README.md", "pip install ./bindings/python");
    let mut c = sh(&install, &clone);
    venv_env(&mut c);
    c.env("PKG_CONFIG_PATH", lib.join("pkgconfig"));
    let out = ok("pip install ./bindings/python", &mut c);
    assert!(
        out.contains(&lib.join("libanyfork.so.0").display().to_string()),
        "the installed module did not load the prefix's library (recorded from pkg-config, no ANYFORK_LIB): {out:?}"
    );
    let site: Vec<_> = glob_files(&venv, "anyfork.py");
    assert!(
        site.iter()
            .any(|p| p.to_string_lossy().contains("site-packages")),
        "anyfork.py is not in the virtualenv's site-packages: {site:?}"
    );

    let run = fresh("python-run");
    let examples = files(None, "example.py");
    assert!(examples.len() >= 2, "example.py blocks: {examples:?}");
    for b in &examples {
        let f = write(&run, b, "example.py");
        let mut c = clean("python3");
        c.arg(&f).current_dir(&run);
        venv_env(&mut c);
        let out = ok(&format!("{} (example.py)", b.at()), &mut c);
        assert!(
            out.contains("got (b'x',") && out.contains("b'hi\\n'"),
            "{}: unexpected output {out:?}",
            b.at()
        );
    }
    // The multiprocessing context, from the installed copy (so the wheel
    // must hold _anyfork_mp.py too).
    let examples = files(Some("bindings/python/README.md"), "example_mp.py");
    assert!(!examples.is_empty(), "no example_mp.py block");
    for b in &examples {
        let f = write(&run, b, "example_mp.py");
        let mut c = clean("python3");
        c.arg(&f).current_dir(&run);
        venv_env(&mut c);
        let out = ok(&format!("{} (example_mp.py)", b.at()), &mut c);
        assert_eq!(
            out,
            "[0, 1, 4, 9, 16]\nhi\n0\n",
            "{}: unexpected output",
            b.at()
        );
    }
    let mut c = clean("python3");
    c.args(["-c", "import anyfork"]).current_dir(&run);
    venv_env(&mut c);
    anyfork_lib_still_wins("the installed module", c, &fresh("python-empty"), &lib);
}

/// An installed binding given ANYFORK_LIB (an empty directory) tries
/// only that, not the libdir it recorded at install: loading fails, naming
/// the paths tried under `empty` and not the prefix's library.
fn anyfork_lib_still_wins(what: &str, mut cmd: Command, empty: &Path, lib: &Path) {
    let o = cmd.env("ANYFORK_LIB", empty).output().unwrap();
    let t = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !o.status.success()
            && t.contains(&empty.join("libanyfork.so.0").display().to_string())
            && !t.contains(&lib.display().to_string()),
        "{what} with ANYFORK_LIB at an empty directory: {t}"
    );
}

fn glob_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            } else if e.file_name() == name {
                out.push(p);
            }
        }
    }
    out
}

// --- Ruby ------------------------------------------------------------------

#[test]
fn ruby_installs_as_a_gem_and_runs_the_readme_examples() {
    let prefix = prefix();
    let lib = prefix.join("lib");
    let dir = fresh("ruby");
    let gems = dir.join("gems");
    let clone = copy_binding("ruby", &dir.join("clone"));
    let install = commands("bindings/ruby/README.md", "gem build anyfork.gemspec");
    let out = ok(
        "gem build + gem install",
        sh(&install, &clone)
            .env("GEM_HOME", &gems)
            .env("PKG_CONFIG_PATH", lib.join("pkgconfig")),
    );
    assert!(
        out.contains(&lib.join("libanyfork.so.0").display().to_string()),
        "the installed gem did not load the prefix's library (recorded from pkg-config, no ANYFORK_LIB): {out:?}"
    );
    assert!(
        !glob_files(&gems, "anyfork.rb").is_empty(),
        "anyfork.rb is not under GEM_HOME"
    );
    let run = fresh("ruby-run");
    let examples = files(None, "example.rb");
    assert!(examples.len() >= 2, "example.rb blocks: {examples:?}");
    for b in &examples {
        let f = write(&run, b, "example.rb");
        let out = ok(
            &format!("{} (example.rb)", b.at()),
            clean("ruby")
                .arg(&f)
                .current_dir(&run)
                .env("GEM_HOME", &gems),
        );
        assert!(
            out.contains("hello ann from ") && out.contains("hi\n"),
            "{}: unexpected output {out:?}",
            b.at()
        );
    }
    let mut c = clean("ruby");
    c.args(["-e", "require 'anyfork'"])
        .current_dir(&run)
        .env("GEM_HOME", &gems);
    anyfork_lib_still_wins("the installed gem", c, &fresh("ruby-empty"), &lib);
}

// --- Perl ------------------------------------------------------------------

#[test]
fn perl_installs_as_a_cpan_distribution_and_runs_the_readme_examples() {
    let prefix = prefix();
    let lib = prefix.join("lib");
    let dir = fresh("perl");
    let base = dir.join("perl5");
    let clone = copy_binding("perl", &dir.join("clone"));
    // Only what MANIFEST lists goes into the distribution's copy, so a
    // file missing from MANIFEST fails here.
    let dist = dir.join("dist");
    let manifest = std::fs::read_to_string(clone.join("bindings/perl/MANIFEST"))
        .expect("bindings/perl/MANIFEST");
    for f in manifest.lines().filter(|l| !l.trim().is_empty()) {
        let f = f.split_whitespace().next().unwrap();
        let to = dist.join("bindings/perl").join(f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(clone.join("bindings/perl").join(f), &to)
            .unwrap_or_else(|e| panic!("MANIFEST lists {f}: {e}"));
    }
    let install = commands("bindings/perl/README.md", "perl Makefile.PL");
    let perl5lib = base.join("lib/perl5");
    let out = ok(
        "perl Makefile.PL && make && make test && make install",
        sh(&install, &dist)
            .env("PERL_MM_OPT", format!("INSTALL_BASE={}", base.display()))
            .env("PERL5LIB", &perl5lib)
            .env("PKG_CONFIG_PATH", lib.join("pkgconfig")),
    );
    assert!(
        out.contains("All tests successful"),
        "make test did not pass: {out}"
    );
    assert!(
        out.contains(&lib.join("libanyfork.so.0").display().to_string()),
        "the installed module did not load the prefix's library (recorded from pkg-config, no ANYFORK_LIB): {out}"
    );
    // With AnyFork::XS built, MakeMaker installs the whole distribution
    // under the architecture's directory (lib/perl5/<archname>), which
    // perl adds to @INC for each PERL5LIB entry by itself.
    assert!(
        !glob_files(&perl5lib, "AnyFork.pm").is_empty()
            && !glob_files(&perl5lib, "Lib.pm").is_empty(),
        "AnyFork is not installed under {}",
        perl5lib.display()
    );
    assert!(
        !glob_files(&perl5lib, "XS.so").is_empty(),
        "AnyFork::XS was not built and installed under {} (anyfork.h not found beside ANYFORK_LIB?)",
        perl5lib.display()
    );

    let run = fresh("perl-run");
    let examples = files(None, "example.pl");
    assert!(examples.len() >= 2, "example.pl blocks: {examples:?}");
    for b in &examples {
        let f = write(&run, b, "example.pl");
        let out = ok(
            &format!("{} (example.pl)", b.at()),
            clean("perl")
                .arg(&f)
                .current_dir(&run)
                .env("PERL5LIB", &perl5lib),
        );
        assert!(
            out.starts_with("hello ann from "),
            "{}: unexpected output {out:?}",
            b.at()
        );
    }
    let mut c = clean("perl");
    c.args(["-e", "use AnyFork"])
        .current_dir(&run)
        .env("PERL5LIB", &perl5lib);
    anyfork_lib_still_wins("the installed module", c, &fresh("perl-empty"), &lib);
    // Fragments compile after a prelude that declares what they assume.
    for b in blocks()
        .iter()
        .filter(|b| b.lang == "perl" && b.kind() == Kind::Fragment)
    {
        let code = format!(
            "use strict; use warnings; use AnyFork; my $socket = \\*STDIN;\n{}",
            b.text
        );
        ok(
            &format!("{} (fragment, perl -c)", b.at()),
            clean("perl")
                .args(["-c", "-e", &code])
                .current_dir(&run)
                .env("PERL5LIB", &perl5lib),
        );
    }
}

// --- Go --------------------------------------------------------------------

#[test]
fn go_builds_with_pkg_config_alone_and_runs_the_readme_examples() {
    let prefix = prefix();
    let dir = fresh("go");
    // The README says "with the clone at ~/anyfork": HOME is ours.
    let home = dir.join("home");
    copy_binding("go", &home.join("anyfork"));
    let install = commands("bindings/go/README.md", "go mod edit -require anyfork");
    let examples = files(None, "main.go");
    assert!(examples.len() >= 2, "main.go blocks: {examples:?}");
    for (i, b) in examples.iter().enumerate() {
        let m = dir.join(format!("mod{i}"));
        std::fs::create_dir_all(&m).unwrap();
        write(&m, b, "main.go");
        let go = |c: &mut Command| {
            c.env("HOME", &home)
                .env("GOCACHE", dir.join("cache"))
                .env("GOPATH", dir.join("path"))
                .env("GOPROXY", "off")
                .env("GOENV", "off")
                .env("GOTOOLCHAIN", "local")
                .env("GO111MODULE", "on")
                .env("CGO_ENABLED", "1")
                .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"));
        };
        let mut c = clean("go");
        c.args(["mod", "init", "hello"]).current_dir(&m);
        go(&mut c);
        ok("go mod init", &mut c);
        // No CGO flags and no LD_LIBRARY_PATH: pkg-config gives both.
        let mut c = sh(&install, &m);
        go(&mut c);
        let out = ok(
            &format!("{} built and run by {}", b.at(), install.at()),
            &mut c,
        );
        assert_eq!(
            out.to_lowercase(),
            "hi\n",
            "{}: unexpected output {out:?}",
            b.at()
        );
    }
}

// --- one library search for Python, Ruby and Perl -------------------------

/// ANYFORK_LIB as a file, as a directory, and unset (the loader's path),
/// the same in the three bindings that load the library at run time; a
/// wrong value fails naming what was tried.
#[test]
fn anyfork_lib_means_the_same_in_python_ruby_and_perl() {
    let prefix = prefix();
    let lib = prefix.join("lib");
    let root = common::root();
    let so = lib.join("libanyfork.so.0");
    let probes: [(&str, Vec<String>); 3] = [
        (
            "python3",
            vec![
                "-c".into(),
                format!(
                    "import sys; sys.path.insert(0, {:?}); import anyfork; print(anyfork.library_path)",
                    root.join("bindings/python").display().to_string()
                ),
            ],
        ),
        (
            "ruby",
            vec![
                "-I".into(),
                root.join("bindings/ruby/lib").display().to_string(),
                "-e".into(),
                "require 'anyfork'; puts AnyFork::Lib::PATH".into(),
            ],
        ),
        (
            "perl",
            vec![
                "-I".into(),
                root.join("bindings/perl/lib").display().to_string(),
                "-e".into(),
                "use AnyFork; print \"$AnyFork::Lib::PATH\\n\"".into(),
            ],
        ),
    ];
    let tmp = fresh("search");
    for (prog, args) in &probes {
        let run = |lib_env: Option<&Path>, ld: Option<&Path>| {
            let mut c = clean(prog);
            c.args(args).current_dir(&tmp);
            if let Some(v) = lib_env {
                c.env("ANYFORK_LIB", v);
            }
            if let Some(v) = ld {
                c.env("LD_LIBRARY_PATH", v);
            }
            c.output().unwrap()
        };
        let text = |o: &std::process::Output| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        };
        // A file, and a directory holding libanyfork.so.0.
        for (v, want) in [(&so, &so), (&lib, &so)] {
            let o = run(Some(v), None);
            assert!(
                o.status.success() && text(&o).trim() == want.display().to_string(),
                "{prog} with ANYFORK_LIB={}: {}",
                v.display(),
                text(&o)
            );
        }
        // Unset: libanyfork.so.0 through the dynamic loader.
        let o = run(None, Some(&lib));
        assert!(
            o.status.success() && text(&o).trim() == "libanyfork.so.0",
            "{prog} with LD_LIBRARY_PATH and no ANYFORK_LIB: {}",
            text(&o)
        );
        // A directory without the library: fails, naming what it tried.
        let o = run(Some(&tmp), None);
        let t = text(&o);
        assert!(
            !o.status.success()
                && t.contains(&tmp.join("libanyfork.so.0").display().to_string())
                && t.contains(&tmp.join("libanyfork.so").display().to_string())
                && t.contains("ANYFORK_LIB="),
            "{prog} with ANYFORK_LIB at an empty directory: {t}"
        );
    }
}
