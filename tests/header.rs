//! The committed header matches the sources, and the shared library
//! exports nothing but the C API.

mod common;

use std::process::Command;

#[test]
fn committed_header_is_fresh() {
    // build.rs rewrites include/anyfork.h whenever the sources change it;
    // a difference from the committed file means it was not committed.
    let root = common::root();
    if !root.join(".git").exists() {
        eprintln!("not a git checkout: comparing with the generated header only");
    }
    let generated = std::fs::read(root.join("include/anyfork.h")).unwrap();
    assert!(
        generated.starts_with(b"/*\n * anyfork:"),
        "include/anyfork.h is not the generated header"
    );
    if root.join(".git").exists() {
        let out = Command::new("git")
            .args(["diff", "--exit-code", "HEAD", "--", "include/anyfork.h"])
            .current_dir(&root)
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "include/anyfork.h differs from the committed one: commit the regenerated header\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

fn dynamic_symbols(path: &std::path::Path) -> Vec<String> {
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(path)
        .output()
        .expect("nm");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect()
}

#[test]
fn shared_library_exports_only_the_c_api() {
    let syms = dynamic_symbols(&common::libanyfork());
    assert!(
        syms.iter().any(|s| s == "fork_new"),
        "fork_new is not exported: {syms:?}"
    );
    let foreign: Vec<_> = syms
        .iter()
        .filter(|s| !s.starts_with("fork_") && !s.starts_with("anyfork_"))
        .collect();
    assert!(
        foreign.is_empty(),
        "symbols outside fork_*/anyfork_*: {foreign:?}"
    );
    let header = std::fs::read_to_string(common::root().join("include/anyfork.h")).unwrap();
    for s in &syms {
        assert!(
            header.contains(&format!("{s}(")),
            "{s} is exported but not declared in the header"
        );
    }
}

#[test]
fn server_exports_child_side_calls() {
    let syms = dynamic_symbols(&common::serve_exe());
    for s in ["fork_child_args", "fork_set_dispatch", "fork_set_fork_hook"] {
        assert!(
            syms.iter().any(|x| x == s),
            "anyfork-serve does not export {s}: {syms:?}"
        );
    }
}

/// Every name the header defines is the library's own (`fork_`, `FORK_`,
/// `ANYFORK_`): a bare `MAX` or `Frame` would collide with the includer's.
#[test]
fn header_defines_only_prefixed_names() {
    let h = std::fs::read_to_string(common::root().join("include/anyfork.h")).unwrap();
    let own = |n: &str| {
        ["fork_", "FORK_", "ANYFORK_"]
            .iter()
            .any(|p| n.starts_with(p))
    };
    let mut bad = Vec::new();
    for line in h.lines() {
        let words: Vec<&str> = line
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        let defined = if line.starts_with("#define") {
            words.get(1).copied()
        } else if line.starts_with("typedef") {
            match line.find("(*") {
                Some(k) => line[k + 2..].split(')').next(),
                None if line.trim_end().ends_with(';') => words.last().copied(),
                None => words.get(2).copied(),
            }
        } else if line.starts_with("  ")
            && !line.starts_with("   ")
            && words.len() <= 2
            && line.trim_end().ends_with(',')
        {
            // An enumerator: `  NAME = 1,` or `  NAME,`.
            words.first().copied()
        } else {
            None
        };
        if let Some(n) = defined.filter(|n| !own(n)) {
            bad.push(format!("{n}: {line}"));
        }
    }
    assert!(bad.is_empty(), "unprefixed names in anyfork.h: {bad:#?}");
}

/// Every exported function goes through the C boundary: its body is one
/// `ffi!(its_name, …)` expression (panic caught, error recorded once with
/// its name, failure value by return type), and every function the shared
/// library exports is one of those in src/capi.
#[test]
fn every_exported_function_goes_through_the_boundary() {
    let dir = common::root().join("src/capi");
    let mut defined = Vec::new();
    let mut bad = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let src = std::fs::read_to_string(&p).unwrap();
            let mut rest = src.as_str();
            while let Some(at) = rest.find("extern \"C\" fn ") {
                let after = &rest[at + "extern \"C\" fn ".len()..];
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                // The body starts after the signature's closing `{`
                // (a signature has no braces).
                let open = after.find('{').expect("a body");
                let body = after[open + 1..].trim_start();
                let exported = rest[..at]
                    .rsplit('\n')
                    .take(3)
                    .any(|l| l.contains("no_mangle"));
                if exported {
                    defined.push(name.clone());
                    let want = format!("ffi!({name},");
                    if !body.starts_with(&want) {
                        bad.push(format!(
                            "{}: {name} does not start with {want}",
                            p.display()
                        ));
                    }
                }
                rest = after;
            }
        }
    }
    assert!(bad.is_empty(), "functions outside the boundary: {bad:#?}");
    let syms = dynamic_symbols(&common::libanyfork());
    for s in syms.iter().filter(|s| s.starts_with("fork_")) {
        assert!(
            defined.contains(s),
            "{s} is exported but not defined through ffi! in src/capi"
        );
    }
    assert!(defined.len() >= 25, "the scan found only {defined:?}");
}
