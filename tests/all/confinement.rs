//! The OS confinement of worker processes: seen from outside
//! (`/proc`), and from inside, through the debug build's probe of what an
//! escaped guest would try.

use std::time::Duration;

use crate::util::{output_within, plugin};
use sandgen::{Confinement, Isolation};

/// The fields of `/proc/PID/FILE` that start with `name`.
fn proc_line(pid: u32, file: &str, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/{file}: {e}"))
        .lines()
        .find(|line| line.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/{file}"))
        .split_whitespace()
        .skip(name.split_whitespace().count())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn this_kernel_confines_workers_fully() {
    let _watch = crate::util::watchdog("confinement::this_kernel_confines_workers_fully");
    // The machines this project runs on have Landlock ABI 7 and seccomp: a
    // missing layer here is a regression to see, not to skip.
    let confinement = Confinement::of_this_kernel();
    assert!(confinement.is_complete(), "{confinement}");
    let text = confinement.to_string();
    assert!(text.contains("no TCP bind or connect"), "{text}");
    assert!(text.contains("kills the worker (SIGSYS)"), "{text}");
}

#[test]
fn a_worker_process_in_a_pass_is_confined() {
    let _watch = crate::util::watchdog("confinement::a_worker_process_in_a_pass_is_confined");
    // A Rust plugin after its first item, and a Python plugin (whose
    // worker process is the same binary; its plugin is an interpreter)
    // spinning in its first pass.
    let rust = plugin(crate::util::artifacts::FIXTURE_SPDL)
        .generator("spin")
        .args(&1u64);
    let python = plugin(crate::util::artifacts::FIXTURE_PYTHON)
        .generator("spin")
        .encoding(sandgen::Encoding::Json);
    // A file of this test's left open across `exec`, as a careless caller
    // leaves a secret: no worker holds it.
    let secret_path = crate::util::temp_dir("confined-secret").join("secret.txt");
    std::fs::write(&secret_path, "secret").unwrap();
    let secret = std::fs::File::open(&secret_path).unwrap();
    // SAFETY: fcntl on a descriptor this test owns.
    unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&secret), libc::F_SETFD, 0) };
    let secret_path = secret_path.canonicalize().unwrap();
    // Whether this test may empty a bounding set (CAP_SETPCAP, as root).
    let privileged = u64::from_str_radix(&proc_line(std::process::id(), "status", "CapEff:"), 16)
        .unwrap()
        & (1 << 8)
        != 0;
    for (builder, first_item) in [(rust, true), (python, false)] {
        let iterable = builder
            .isolation(Isolation::Process)
            .timeout(Duration::from_secs(60))
            .on_output(|_| {})
            .build()
            .unwrap();
        let pid = iterable.worker_pid().unwrap();
        let mut pass = iterable.iter_raw().unwrap();
        if first_item {
            assert!(pass.next().unwrap().is_ok(), "the first item");
        }
        assert_eq!(proc_line(pid, "status", "NoNewPrivs:"), "1");
        assert_eq!(proc_line(pid, "status", "Seccomp:"), "2");
        assert_eq!(proc_line(pid, "limits", "Max core file size"), "0 0 bytes");
        assert_eq!(proc_line(pid, "limits", "Max open files"), "256 256 files");
        for set in ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"] {
            assert_eq!(proc_line(pid, "status", set), "0000000000000000", "{set}");
        }
        if privileged {
            assert_eq!(proc_line(pid, "status", "CapBnd:"), "0000000000000000");
        }
        let held: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .collect();
        assert!(
            !held.contains(&secret_path),
            "the worker holds its caller's file: {held:?}"
        );
        drop(pass);
    }
}

/// `sandgen run --isolation process` of `range` with the worker's probe
/// set (debug builds only).
fn probe(what: &str, extra: &[&str]) -> std::process::Output {
    probe_with(what, extra, &[])
}

/// [`probe`] with more environment variables for the worker.
fn probe_with(what: &str, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sandgen"));
    command
        .envs(env.iter().copied())
        .env("SANDGEN_CACHE_DIR", crate::util::cache_dir())
        .env("SANDGEN_CONFINEMENT_PROBE", what)
        .args([
            "run",
            "--isolation",
            "process",
            crate::util::artifacts::FIXTURE_SPDL,
            "range",
        ])
        .args(["--args", "2"])
        .args(extra);
    output_within(&command, Duration::from_secs(120), &format!("probe {what}"))
}

#[test]
fn an_escaped_guest_reads_only_granted_directories() {
    let _watch =
        crate::util::watchdog("confinement::an_escaped_guest_reads_only_granted_directories");
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data");
    let data = data.canonicalize().unwrap();
    let grant = format!("{}::/data", data.display());
    let inside = data.join("reviews.jsonl");
    for (path, words) in [
        ("/etc/passwd".to_owned(), "refused: Permission denied"),
        (
            env!("CARGO_MANIFEST_DIR").to_owned() + "/Cargo.toml",
            "refused: Permission denied",
        ),
        (inside.display().to_string(), "opened"),
    ] {
        let output = probe(&format!("open:{path}"), &["--dir", &grant]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{path}: {stderr}");
        assert!(
            stderr.contains(&format!("probe open:{path}: {words}")),
            "{path}: {stderr}"
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout), "0\n1\n");
    }
}

/// An escaped guest cannot reach past its own process with the calls it is
/// allowed: `prlimit64` on another process and `prctl` with an option beyond
/// thread names (making itself dumpable again) fail with EPERM.
#[test]
fn an_escaped_guest_cannot_change_other_processes_or_its_own_confinement() {
    let _watch = crate::util::watchdog(
        "confinement::an_escaped_guest_cannot_change_other_processes_or_its_own_confinement",
    );
    for what in ["prlimit-other", "prctl-dumpable"] {
        let output = probe(what, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{what}: {stderr}");
        assert!(
            stderr.contains(&format!("probe {what}: refused: Operation not permitted")),
            "{what}: {stderr}"
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout), "0\n1\n");
    }
}

/// A process this test starts and kills when dropped.
struct Sleeper(std::process::Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// With the seccomp filter left off (a debug build's switch), Landlock by
/// itself (ABI 6 or later, as `this_kernel_confines_workers_fully` requires
/// of this project's machines) refuses each thing an escaped guest would try that it rules:
/// reading outside the granted directories, TCP connect and bind, an
/// abstract Unix socket and a signal to a process outside the worker's
/// domain. The same things done by this test itself succeed, so each
/// refusal is the worker's confinement.
#[test]
fn landlock_alone_holds_each_rule() {
    let _watch = crate::util::watchdog("confinement::landlock_alone_holds_each_rule");
    use std::os::linux::net::SocketAddrExt as _;
    use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let name = format!("sandgen-landlock-test-{}", std::process::id());
    let address = SocketAddr::from_abstract_name(&name).unwrap();
    let _unix = UnixListener::bind_addr(&address).unwrap();
    let sleeper = Sleeper(
        std::process::Command::new("sleep")
            .arg("120")
            .spawn()
            .unwrap(),
    );
    let pid = sleeper.0.id();
    // Each target is reachable from outside the worker.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    drop(std::net::TcpListener::bind(("127.0.0.1", free_port)).unwrap());
    assert!(UnixStream::connect_addr(&address).is_ok());
    // SAFETY: kill with values only, to this test's own child.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGCONT) }, 0);
    // Landlock's own errors: EACCES for files and TCP, EPERM for scopes
    // (a port taken meanwhile would give EADDRINUSE, not EACCES: Landlock
    // decides before the bind is tried).
    const EACCES: &str = "refused: Permission denied (os error 13)";
    const EPERM: &str = "refused: Operation not permitted (os error 1)";
    for (what, refusal) in [
        ("open:/etc/passwd".to_owned(), EACCES),
        (format!("connect:{port}"), EACCES),
        (format!("bind:{free_port}"), EACCES),
        (format!("abstract:{name}"), EPERM),
        (format!("signal:{pid}"), EPERM),
    ] {
        let output = probe_with(&what, &[], &[("SANDGEN_CONFINEMENT_WITHOUT", "seccomp")]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{what}: {stderr}");
        assert!(stderr.contains("seccomp left off"), "{what}: {stderr}");
        assert!(
            stderr.contains(&format!("probe {what}: {refusal}")),
            "{what}: {stderr}"
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout), "0\n1\n");
    }
    drop(sleeper);
}

#[test]
fn an_escaped_guest_that_makes_a_socket_or_runs_a_program_is_killed() {
    let _watch = crate::util::watchdog(
        "confinement::an_escaped_guest_that_makes_a_socket_or_runs_a_program_is_killed",
    );
    for what in ["socket", "exec"] {
        let output = probe(what, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{what}: {stderr}");
        assert!(
            !stderr.contains(&format!("probe {what}:")),
            "it went on: {stderr}"
        );
        assert!(
            stderr.contains("killed by signal 31 (SIGSYS: likely the seccomp filter"),
            "{what}: {stderr}"
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout), "");
    }
}

#[test]
fn sandgen_confinement_reports_the_layers() {
    let _watch = crate::util::watchdog("confinement::sandgen_confinement_reports_the_layers");
    let command = {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sandgen"));
        command.arg("confinement");
        command
    };
    let output = output_within(&command, Duration::from_secs(30), "sandgen confinement");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    for words in [
        "no-new-privs: yes",
        "core dumps: off",
        "landlock: ABI ",
        "seccomp: an allow-list",
    ] {
        assert!(stdout.contains(words), "{stdout}");
    }
}

#[test]
fn a_stopped_and_continued_worker_process_goes_on() {
    let _watch =
        crate::util::watchdog("confinement::a_stopped_and_continued_worker_process_goes_on");
    // Its sleeping threads resume through `restart_syscall`, which the
    // filter must allow (Ctrl-Z and `fg` in a shell).
    let iterable = plugin(crate::util::artifacts::FIXTURE_SPDL)
        .generator("sleep")
        .args(&serde_json::json!({ "ms": 30, "n": 20 }))
        .isolation(Isolation::Process)
        .build()
        .unwrap();
    let pid = rustix::process::Pid::from_raw(iterable.worker_pid().unwrap() as i32).unwrap();
    let mut pass = iterable.iter::<u64>().unwrap();
    assert_eq!(pass.next().unwrap().unwrap(), 0);
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    let rest: Vec<u64> = pass.collect::<Result<_, _>>().unwrap();
    assert_eq!(rest, (1..20).collect::<Vec<_>>());
}
