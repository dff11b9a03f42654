//! Builds every guest used by the tests (fixtures and example plugins) from
//! source, for `wasm32-wasip2`, and writes their paths to `artifacts.rs`:
//! wasmtime's test-programs pattern. Nothing is committed as `.wasm`.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The folders that hold guests, and the prefix of their constants. Each
/// sub-folder is one guest, found by what it holds (see [`discover`]): a new
/// fixture is a new folder, and nothing else to list.
const GUEST_FOLDERS: &[(&str, &str)] = &[("tests/fixtures", "FIXTURE"), ("examples", "EXAMPLE")];

/// A guest to build, found in one of [`GUEST_FOLDERS`].
struct Guest {
    /// `FIXTURE_SPDL`, `EXAMPLE_PYTHON`, ...: the prefix and the folder's
    /// name.
    constant: String,
    kind: Kind,
}

enum Kind {
    /// A `cdylib` crate of the workspace: its package name.
    Rust(String),
    /// A Python (`app.py`) or JavaScript (`app.js`) plugin: its source,
    /// relative to the root.
    Foreign(Foreign),
}

/// Every guest: a folder with a `cdylib` Cargo.toml (a Rust plugin; other
/// crates, such as host programs, are not guests), an `app.py` (Python) or
/// an `app.js` (JavaScript). Sorted, so the build is reproducible.
fn discover(root: &Path) -> Vec<Guest> {
    let mut guests = Vec::new();
    for (folder, prefix) in GUEST_FOLDERS {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join(folder))
            .unwrap_or_else(|e| panic!("cannot read {folder}: {e}"))
            .map(|entry| entry.expect("a folder entry").path())
            .filter(|path| path.is_dir())
            .collect();
        dirs.sort();
        for dir in dirs {
            let name = dir.file_name().unwrap().to_string_lossy();
            let constant = format!("{prefix}_{}", name.to_uppercase().replace('-', "_"));
            let relative = |file: &str| format!("{folder}/{name}/{file}");
            let kind = if let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) {
                if !manifest.contains(r#"crate-type = ["cdylib"]"#) {
                    continue;
                }
                let package = manifest
                    .lines()
                    .find_map(|line| line.strip_prefix("name = "))
                    .map(|name| name.trim().trim_matches('"').to_owned())
                    .unwrap_or_else(|| panic!("{} has no package name", dir.display()));
                Kind::Rust(package)
            } else if dir.join("app.py").exists() {
                Kind::Foreign(Foreign {
                    language: "Python",
                    source: relative("app.py"),
                    world: RESUMABLE,
                })
            } else if dir.join("app.js").exists() {
                Kind::Foreign(Foreign {
                    language: "JavaScript",
                    source: relative("app.js"),
                    world: RESUMABLE,
                })
            } else {
                continue;
            };
            // The fixtures in other languages are built a second time for
            // the world `plugin` alone: without the fast path of resuming,
            // a resume replays them (`*_REPLAY`).
            if let Kind::Foreign(plugin) = &kind
                && *prefix == "FIXTURE"
            {
                let replay = Foreign {
                    world: "plugin",
                    ..plugin.clone()
                };
                guests.push(Guest {
                    constant: format!("{constant}_REPLAY"),
                    kind: Kind::Foreign(replay),
                });
            }
            guests.push(Guest { constant, kind });
        }
    }
    guests
}

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .parent()
        .expect("tests/ sits in the workspace root");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let target_dir = out.join("guests");

    for path in [
        "tests/fixtures",
        "examples",
        "guest-sdk/Cargo.toml",
        "guest-sdk/src",
        "guest-sdk/wire",
        "guest-sdk/python/sandgen_guest.py",
        "guest-sdk/python/requirements.txt",
        "guest-sdk/js/sandgen.js",
        "guest-sdk/js/package-lock.json",
        "guest-sdk/js/wit",
        "wit",
        // The guests' flags (wasm SIMD).
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }

    let guests = discover(root);
    let rust: Vec<(&str, &str)> = guests
        .iter()
        .filter_map(|guest| match &guest.kind {
            Kind::Rust(package) => Some((package.as_str(), guest.constant.as_str())),
            Kind::Foreign(_) => None,
        })
        .collect();
    let foreign: Vec<(&Foreign, &str)> = guests
        .iter()
        .filter_map(|guest| match &guest.kind {
            Kind::Foreign(plugin) => Some((plugin, guest.constant.as_str())),
            Kind::Rust(_) => None,
        })
        .collect();

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
    for (package, _) in &rust {
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
    for (package, constant) in &rust {
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
    // Each toolchain takes seconds per plugin, mostly on one core: build
    // them side by side.
    let built: Vec<PathBuf> = std::thread::scope(|scope| {
        let jobs: Vec<_> = foreign
            .iter()
            .map(|(plugin, constant)| scope.spawn(|| plugin.build(root, &target_dir, constant)))
            .collect();
        jobs.into_iter()
            .map(|job| job.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    for ((plugin, constant), path) in foreign.iter().zip(built) {
        writeln!(
            code,
            "/// The `{}` plugin ({}), built from source.",
            plugin.source, plugin.language
        )
        .unwrap();
        writeln!(
            code,
            "pub const {constant}: &str = {:?};",
            path.display().to_string()
        )
        .unwrap();
    }
    let constants: Vec<&str> = rust
        .iter()
        .map(|(_, constant)| *constant)
        .chain(foreign.iter().map(|(_, constant)| *constant))
        .collect();
    writeln!(
        code,
        "/// Every guest above, by the name of its constant.\npub const ALL: &[(&str, &str)] = &[{}];",
        constants
            .iter()
            .map(|c| format!("({c:?}, {c})"))
            .collect::<Vec<_>>()
            .join(", ")
    )
    .unwrap();
    std::fs::write(out.join("artifacts.rs"), code).expect("failed to write artifacts.rs");
}

/// A plugin in another language, built with that language's toolchain.
#[derive(Clone)]
struct Foreign {
    language: &'static str,
    /// The app module: a `.py` or `.js` file, relative to the root.
    source: String,
    /// The world it is built for.
    world: &'static str,
}

/// The world of plugins with the fast path of resuming (`wit/resume.wit`).
const RESUMABLE: &str = "resumable-plugin";

/// How to install the toolchains that build the Python and JS plugins.
const INSTALL: &str = "run `tests/install-plugin-tools.sh` (the README's test command does)";

impl Foreign {
    /// Builds the component into `dir` and returns its path.
    fn build(&self, root: &Path, dir: &Path, constant: &str) -> PathBuf {
        let source = root.join(&self.source);
        let folder = source.parent().expect("a source file has a folder");
        let output = dir.join(format!("{}.wasm", constant.to_lowercase()));
        let mut cmd = match self.language {
            "Python" => {
                let tool = root.join("guest-sdk/python/.venv/bin/componentize-py");
                assert!(
                    tool.exists(),
                    "componentize-py is not installed at {}: {INSTALL}",
                    tool.display()
                );
                let mut cmd = Command::new(tool);
                let module = source.file_stem().unwrap();
                cmd.arg("-d")
                    .arg(root.join("wit"))
                    .args(["-w", self.world, "componentize", "-p"])
                    .arg(root.join("guest-sdk/python"))
                    .arg("-p")
                    .arg(folder)
                    .arg(module)
                    .arg("-o")
                    .arg(&output)
                    // Keep the source folders free of __pycache__.
                    .env("PYTHONDONTWRITEBYTECODE", "1");
                cmd
            }
            _ => {
                let tool = root.join("guest-sdk/js/node_modules/.bin/componentize-js");
                assert!(
                    tool.exists(),
                    "componentize-js is not installed at {}: {INSTALL}",
                    tool.display()
                );
                let mut cmd = Command::new(tool);
                cmd.current_dir(root)
                    .arg(&self.source)
                    .arg("-w")
                    // sandgen's world plus the environment import of the
                    // helper's `workerInfo`.
                    .arg(root.join("guest-sdk/js/wit"))
                    .args(["-n", self.world, "-d", "http", "-d", "fetch-event", "-o"])
                    .arg(&output);
                cmd
            }
        };
        let result = cmd.output().unwrap_or_else(|e| {
            panic!("cannot run the {} toolchain: {e}; {INSTALL}", self.language)
        });
        assert!(
            result.status.success() && output.exists(),
            "building {} failed ({}):\n{}{}",
            self.source,
            result.status,
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        );
        output
    }
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
