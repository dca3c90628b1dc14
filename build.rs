//! Generates include/anyfork.h with cbindgen (rewritten only when its bytes
//! change, so a clean build leaves the tree untouched) and tells the
//! library where cargo puts `anyfork-serve`.

use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");

    // OUT_DIR is target/<profile>/build/anyfork-*/out.
    if let Some(dir) = out.ancestors().nth(3) {
        println!("cargo:rustc-env=ANYFORK_BUILD_DIR={}", dir.display());
        // Programs linked against the build tree's libanyfork.so look for
        // its SONAME; cargo makes only the unversioned file.
        let link = dir.join("libanyfork.so.0");
        if std::fs::read_link(&link).is_err() {
            let _ = std::fs::remove_file(&link);
            let _ = std::os::unix::fs::symlink("libanyfork.so", &link);
        }
    }

    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    let generated = out.join("anyfork.h");
    cbindgen::Builder::new()
        .with_crate(&root)
        .with_config(config)
        .generate()
        .expect("generating anyfork.h")
        .write_to_file(&generated);
    let new = std::fs::read(&generated).unwrap();
    let dest = root.join("include/anyfork.h");
    if std::fs::read(&dest).ok().as_deref() != Some(&new[..]) {
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::write(&dest, &new).unwrap();
    }

    // A versioned SONAME, so installed programs bind to the ABI major.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libanyfork.so.0");

    // The exec'd server exports the child-side calls to libraries it loads.
    let list = out.join("serve.dynlist");
    std::fs::write(&list, "{ fork_child_args; fork_set_dispatch; fork_set_fork_hook; fork_rpc_serve; fork_rpc_reply; fork_rpc_event; fork_pool_retire; };\n").unwrap();
    println!(
        "cargo:rustc-link-arg-bin=anyfork-serve=-Wl,--dynamic-list={}",
        list.display()
    );
}
