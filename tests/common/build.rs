//! Compiling C for the tests: the crate's paths, the freshly built
//! libanyfork, and C sources built once per test binary into a directory
//! of its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The crate's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where cargo put libanyfork.so and anyfork-serve for this build.
///
/// `cargo test` builds the cdylib under `deps/` but copies it up beside
/// the binaries only in `cargo build`; the first call here brings the copy
/// up to date, so C tests never link a stale (or missing) library, and
/// makes the `libanyfork.so.0` (SONAME) link that C programs linked
/// against it load through their rpath.
pub fn lib_dir() -> PathBuf {
    static FRESH: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_anyfork-serve"))
        .parent()
        .unwrap()
        .to_path_buf();
    FRESH.get_or_init(|| {
        let built = dir.join("deps/libanyfork.so");
        let used = dir.join("libanyfork.so");
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        if let Some(b) = mtime(&built) {
            if mtime(&used).is_none_or(|u| u < b) {
                let tmp = dir.join(format!(".libanyfork.so.{}", std::process::id()));
                std::fs::copy(&built, &tmp).expect("copying the fresh libanyfork.so");
                std::fs::rename(&tmp, &used).expect("replacing libanyfork.so");
            }
        }
        let soname = dir.join("libanyfork.so.0");
        if std::fs::read_link(&soname).is_err() {
            let _ = std::os::unix::fs::symlink("libanyfork.so", &soname);
        }
    });
    dir
}

/// libanyfork.so of this build.
pub fn libanyfork() -> PathBuf {
    lib_dir().join("libanyfork.so")
}

/// anyfork-serve of this build.
pub fn serve_exe() -> PathBuf {
    lib_dir().join("anyfork-serve")
}

/// Where compiled C test artefacts go.
pub fn out_dir() -> PathBuf {
    let d = lib_dir().join("ctest");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A directory of this test binary's own, so that no other test binary
/// (run by cargo one after another, or by another session at the same
/// time) rewrites a file this one has loaded.
pub fn own_dir() -> PathBuf {
    let d = out_dir().join(env!("CARGO_CRATE_NAME"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

static CC: Mutex<()> = Mutex::new(());

/// Runs `compiler` with the strict warning flags: `args` (sources and
/// flags, in order), `-o out`, then, when `link_anyfork`, `-L`/`-rpath`
/// for `lib_dir()` and `-lanyfork`. Compiles into a temporary name and
/// renames it into place, so a process that has the old file mapped keeps
/// the old inode.
pub fn compile_with(compiler: &str, out: &Path, args: &[String], link_anyfork: bool) -> PathBuf {
    let _g = CC.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let mut cmd = Command::new(compiler);
    cmd.args(["-Wall", "-Wextra", "-Werror", "-g", "-O1"])
        .arg(format!("-I{}", root().join("include").display()))
        .args(args)
        .arg("-o")
        .arg(&tmp);
    if link_anyfork {
        let lib = lib_dir();
        cmd.arg(format!("-L{}", lib.display()))
            .arg(format!("-Wl,-rpath,{}", lib.display()))
            .arg("-lanyfork");
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running the compiler {compiler}: {e}"));
    assert!(status.success(), "compiling {args:?} failed");
    std::fs::rename(&tmp, out).unwrap();
    out.to_path_buf()
}

/// [`compile_with`] the C compiler ($CC, else cc).
pub fn compile(out: &Path, args: &[String], link_anyfork: bool) -> PathBuf {
    compile_with(
        &std::env::var("CC").unwrap_or_else(|_| "cc".into()),
        out,
        args,
        link_anyfork,
    )
}

/// What to make of a C source.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An executable linked with libanyfork.
    Program,
    /// An executable that does not use anyfork.
    Plain,
    /// A library to load with fork_require (`lib<name>.so`), built
    /// without libanyfork as the Makefile builds them: it is loaded into
    /// `anyfork-serve` or a program, which export the child-side calls.
    Library,
}

/// Compiles `src` (relative to the crate root) with `extra` flags after
/// it into `dir`, once per test binary (so that no test rewrites a file
/// another one is running); returns its path: `dir/<stem>`, or for a
/// library `dir/lib<stem>.so`.
pub fn build_c(dir: &Path, src: &str, kind: Kind, extra: &[&str]) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<PathBuf, PathBuf>>> = Mutex::new(None);
    let src = root().join(src);
    let stem = src.file_stem().unwrap().to_string_lossy().into_owned();
    let out = match kind {
        Kind::Library => dir.join(format!("lib{stem}.so")),
        Kind::Program | Kind::Plain => dir.join(&stem),
    };
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(p) = built.get(&out) {
        return p.clone();
    }
    let mut args = Vec::new();
    if kind == Kind::Library {
        args.extend(["-shared".to_string(), "-fPIC".to_string()]);
    }
    args.push(src.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    let p = compile(&out, &args, kind == Kind::Program);
    built.insert(out, p.clone());
    p
}

/// Builds tests/c/<name>.c into [`own_dir`], once per test binary.
pub fn build(name: &str, kind: Kind, extra: &[&str]) -> PathBuf {
    build_c(&own_dir(), &format!("tests/c/{name}.c"), kind, extra)
}

/// Where the C examples are built for this binary: a directory of their
/// own, so an example finds `lib<name>_worker.so` beside itself as it
/// does after `make examples`.
pub fn examples_dir() -> PathBuf {
    let d = own_dir().join("examples");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Builds c-examples/<name>.c as the Makefile does, once per test binary:
/// `*_worker` into a shared library `lib<name>.so`, the others into
/// programs (with an rpath to [`examples_dir`], -lev or -luv for the
/// libev and libuv examples, -rdynamic for template and early, which run
/// the program's own functions).
pub fn example(name: &str) -> PathBuf {
    let dir = examples_dir();
    let src = format!("c-examples/{name}.c");
    if name.ends_with("_worker") {
        return build_c(&dir, &src, Kind::Library, &[]);
    }
    let rpath = format!("-Wl,-rpath,{}", dir.display());
    let mut extra = vec![rpath.as_str()];
    match name {
        "libev" => extra.push("-lev"),
        "libuv" | "rpc_pool" => extra.push("-luv"),
        "template" | "early" => extra.push("-rdynamic"),
        _ => {}
    }
    build_c(&dir, &src, Kind::Program, &extra)
}

/// True when `program args` runs and succeeds (a tool is installed).
pub fn have(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}
