//! What a run grants its guest (`--env`, repeated `--dir`, read-only) and
//! what the guest cannot reach: files outside its grants, the network, the
//! host's environment.

use std::path::Path;

use super::{CLI_DEADLINE, expect, run_command, sandgen};
use crate::util::artifacts::{EXAMPLE_JSONL, FIXTURE_SPDL};
use crate::util::output_within;

both_isolations!(env_and_dir_grants);
fn env_and_dir_grants() {
    let (out, _) = expect(
        &sandgen(&[
            "run",
            FIXTURE_SPDL,
            "environment",
            "--env",
            "A=1",
            "--env",
            "B=x=y",
        ]),
        0,
    );
    assert_eq!(
        out,
        "\"env A=1\"\n\"env B=x=y\"\n\"env SANDGEN_WORKER_ID=0\"\n\"env SANDGEN_NUM_WORKERS=1\"\n"
    );
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data");
    let grant = format!("{}::/data", data.display());
    let (out, _) = expect(
        &sandgen(&[
            "run",
            EXAMPLE_JSONL,
            "rows",
            "--dir",
            &grant,
            "--args",
            r#"{"path": "/data/reviews.jsonl", "fields": ["id"], "where_field": "stars", "where_value": 5}"#,
        ]),
        0,
    );
    assert_eq!(out, "{\"id\":1}\n{\"id\":5}\n");
}

both_isolations!(capabilities_through_the_cli);
fn capabilities_through_the_cli() {
    let dir = crate::util::temp_dir("sandgen-cli-ro");
    std::fs::write(dir.join("a.txt"), "hello").unwrap();
    let grant = format!("{}::/data", dir.display());
    let (out, _) = expect(
        &sandgen(&[
            "run",
            FIXTURE_SPDL,
            "fs_probe",
            "--dir",
            &grant,
            "--args",
            r#"{"read": "/data/a.txt", "write": "/data/a.txt"}"#,
        ]),
        0,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "\"read /data/a.txt: ok hello\"");
    assert!(
        lines[1].starts_with("\"write /data/a.txt: error "),
        "{lines:?}"
    );
    assert_eq!(std::fs::read_to_string(dir.join("a.txt")).unwrap(), "hello");
    // The same path as host and guest when no ::GUEST is given.
    let read = format!(r#"{{"read": "{}/a.txt"}}"#, dir.display());
    let (out, _) = expect(
        &sandgen(&[
            "run",
            FIXTURE_SPDL,
            "fs_probe",
            "--dir",
            &dir.display().to_string(),
            "--args",
            &read,
        ]),
        0,
    );
    assert!(out.contains("ok hello"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
    // Nothing outside a granted directory.
    let (out, _) = expect(
        &sandgen(&[
            "run",
            FIXTURE_SPDL,
            "fs_probe",
            "--args",
            r#"{"read": "/etc/passwd", "list": "/"}"#,
        ]),
        0,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("\"read /etc/passwd: error "),
        "{lines:?}"
    );
    assert!(lines[1].starts_with("\"list /: error "), "{lines:?}");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("\"{}\"", listener.local_addr().unwrap());
    let (out, _) = expect(
        &sandgen(&["run", FIXTURE_SPDL, "net_probe", "--args", &address]),
        0,
    );
    assert!(out.starts_with("\"connect: error "), "{out}");
    // The host's environment never leaks; granted variables do.
    let mut command = run_command(&[FIXTURE_SPDL, "environment", "--env", "ONLY=this"]);
    command.env("SECRET_TOKEN", "do-not-leak");
    let output = output_within(&command, CLI_DEADLINE, "sandgen run environment");
    let (out, _) = expect(&output, 0);
    assert_eq!(
        out,
        "\"env ONLY=this\"\n\"env SANDGEN_WORKER_ID=0\"\n\"env SANDGEN_NUM_WORKERS=1\"\n"
    );
}

both_isolations!(repeated_dirs_are_all_granted);
/// `--dir` repeats: each grant is visible at its own guest path, read-only.
fn repeated_dirs_are_all_granted() {
    let root = crate::util::temp_dir("cli-dirs");
    for name in ["a", "b"] {
        std::fs::create_dir(root.join(name)).unwrap();
        std::fs::write(root.join(name).join("file"), name).unwrap();
    }
    let a = format!("{}::/a", root.join("a").display());
    let b = format!("{}::/b", root.join("b").display());
    let (out, errors) = expect(
        &sandgen(&[
            "run",
            crate::util::artifacts::FIXTURE_PROBE,
            "fs",
            "--dir",
            &a,
            "--dir",
            &b,
            "--args",
            r#"["read /a/file", "read /b/file", "write /b/file"]"#,
        ]),
        0,
    );
    assert!(errors.is_empty());
    assert_eq!(
        out,
        "\"read /a/file: ok a\"\n\"read /b/file: ok b\"\n\"write /b/file: error PermissionDenied\"\n"
    );
}
