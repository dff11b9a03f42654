//! Builds every guest used by the tests (fixtures and example plugins) from
//! source, for `wasm32-wasip2`, and writes their paths to `artifacts.rs`:
//! wasmtime's test-programs pattern. Nothing is committed as `.wasm`.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, constant) of each guest.
const GUESTS: &[(&str, &str)] = &[
    ("fixture-spdl", "FIXTURE_SPDL"),
    ("fixture-raw", "FIXTURE_RAW"),
    ("fixture-wrong-world", "FIXTURE_WRONG_WORLD"),
    ("fixture-hang-list", "FIXTURE_HANG_LIST"),
    ("example-jsonl", "EXAMPLE_JSONL"),
    ("example-tokenize", "EXAMPLE_TOKENIZE"),
];

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .parent()
        .expect("tests/ sits in the workspace root");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let target_dir = out.join("guests");

    for dir in ["tests/fixtures", "examples", "guest-sdk", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    for (package, _) in GUESTS {
        cmd.args(["-p", package]);
    }
    // The outer build's flags and wrappers (e.g. clippy's) are for the host.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("failed to run cargo to build the guests");
    assert!(
        status.success(),
        "building the guests for wasm32-wasip2 failed; is the target installed? (`rustup target add wasm32-wasip2`)"
    );

    let release = target_dir.join("wasm32-wasip2").join("release");
    let mut code = String::new();
    for (package, constant) in GUESTS {
        let path = release.join(format!("{}.wasm", package.replace('-', "_")));
        assert!(
            path.exists(),
            "the build did not produce {}",
            path.display()
        );
        writeln!(code, "/// The `{package}` guest, built from source.").unwrap();
        writeln!(
            code,
            "pub const {constant}: &str = {:?};",
            path.display().to_string()
        )
        .unwrap();
        rerun_on_sources(&target_dir, package);
    }
    std::fs::write(out.join("artifacts.rs"), code).expect("failed to write artifacts.rs");
}

/// Reruns when any source file of `package` named in its `.d` file changes.
fn rerun_on_sources(target_dir: &Path, package: &str) {
    let dep = target_dir
        .join("wasm32-wasip2/release")
        .join(format!("{}.d", package.replace('-', "_")));
    if let Ok(text) = std::fs::read_to_string(dep) {
        for file in text
            .split_once(':')
            .map_or("", |(_, files)| files)
            .split_whitespace()
        {
            println!("cargo:rerun-if-changed={file}");
        }
    }
}
