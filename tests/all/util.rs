//! Helpers for the end-to-end tests: a shared engine, plugins compiled once
//! per test binary, output capture and assertions.

use std::cell::Cell;
use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sandgen::{Encoding, Engine, Isolation, IterableBuilder, OutputLine, Plugin};
pub use sandgen_tests::artifacts;

/// The one list of isolation modes: defines a `#[test]` per mode, named
/// after it, that runs `$call` with that mode (which [`Fixture::generator`]
/// applies). A new isolation mode is one more entry here.
macro_rules! in_every_isolation {
    ($call:expr) => {
        #[test]
        fn thread() {
            $crate::util::with_isolation(sandgen::Isolation::Thread, module_path!(), || $call);
        }

        #[test]
        fn process() {
            $crate::util::with_isolation(sandgen::Isolation::Process, module_path!(), || $call);
        }
    };
}

/// Defines `$test::{thread,process}`: the test function `$test()` run in
/// every isolation mode.
macro_rules! both_isolations {
    ($test:ident) => {
        mod $test {
            in_every_isolation!(super::$test());
        }
    };
}

/// The one list of guest languages with an SDK helper: defines
/// `$test::{python,js}::{thread,process}`, the test function `$test(lang)`
/// run against each language's fixture in every isolation mode. A new
/// language is one more entry here and in [`Lang`].
macro_rules! every_language {
    ($test:ident) => {
        mod $test {
            mod python {
                in_every_isolation!(super::super::$test($crate::util::Lang::Python));
            }

            mod js {
                in_every_isolation!(super::super::$test($crate::util::Lang::Js));
            }
        }
    };
}

/// A language whose plugins are written with an SDK helper (Rust plugins,
/// written with the `sandgen-guest` crate, are what every other test uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// `guest-sdk/python/sandgen_guest.py` (componentize-py).
    Python,
    /// `guest-sdk/js/sandgen.js` (componentize-js).
    Js,
}

impl Lang {
    /// Every language, in the order of [`every_language!`].
    pub const ALL: [Lang; 2] = [Lang::Python, Lang::Js];
}

thread_local! {
    static ISOLATION: Cell<Isolation> = const { Cell::new(Isolation::Thread) };
}

/// Runs `test` with `isolation` for the fixtures it builds, under a
/// [`watchdog`].
pub fn with_isolation(isolation: Isolation, name: &str, test: fn()) {
    let _watch = watchdog(&format!("{name} ({isolation})"));
    set_isolation(isolation);
    test();
}

/// The factor that stretches every upper bound on time in these tests (the
/// deadlines of waits and the limits of "promptly"): `SANDGEN_TEST_TIME_FACTOR`,
/// a number of at least 1 (default 1), for a slow or loaded machine. Lower
/// bounds ("at least the timeout") are not stretched. A factor past 2 blurs
/// the tests that tell a prompt stop from a one-second fallback.
pub fn time_factor() -> f64 {
    static FACTOR: OnceLock<f64> = OnceLock::new();
    *FACTOR.get_or_init(|| match std::env::var("SANDGEN_TEST_TIME_FACTOR") {
        Err(_) => 1.0,
        Ok(text) => match text.parse::<f64>() {
            Ok(factor) if factor >= 1.0 && factor.is_finite() => factor,
            _ => panic!(
                "invalid SANDGEN_TEST_TIME_FACTOR `{text}`: give a number of at least 1 (such as 2.5)"
            ),
        },
    })
}

/// `duration` stretched by [`time_factor`]: an upper bound on how long
/// something may take.
pub fn limit(duration: Duration) -> Duration {
    duration.mul_f64(time_factor())
}

/// How long one test may run before its [`watchdog`] ends the test binary:
/// a guard against hangs inside the library (a pass that ends only if fuel,
/// the timeout or kill detection work), never a measure of speed.
pub const TEST_DEADLINE: Duration = Duration::from_secs(300);

/// Ends the whole test binary, saying which test hung, if it runs past
/// [`TEST_DEADLINE`]: a wait inside the library cannot be interrupted by the
/// test itself, and a failed test is better than a hung CI run. Dropping
/// the guard disarms it.
#[must_use = "the watchdog is disarmed when the guard is dropped"]
pub fn watchdog(what: &str) -> Watchdog {
    let (disarm, armed) = crossbeam_channel::bounded::<()>(0);
    let what = what.to_owned();
    std::thread::spawn(move || {
        let deadline = limit(TEST_DEADLINE);
        if let Err(crossbeam_channel::RecvTimeoutError::Timeout) = armed.recv_timeout(deadline) {
            // Straight to the process's stderr: `eprintln!` in a thread a
            // test started is captured with the test's output, which the
            // exit below would throw away.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr().lock(),
                "test watchdog: `{what}` did not finish within {deadline:?}; ending the test binary"
            );
            std::process::exit(101);
        }
    });
    Watchdog { _disarm: disarm }
}

/// Disarms its [`watchdog`] when dropped.
pub struct Watchdog {
    _disarm: crossbeam_channel::Sender<()>,
}

/// Sets the isolation mode for the fixtures the running test builds.
pub fn set_isolation(isolation: Isolation) {
    ISOLATION.set(isolation);
}

/// The isolation mode of the running test.
pub fn isolation() -> Isolation {
    ISOLATION.get()
}

/// One engine per test binary: its compile cache in the target directory,
/// and the `sandgen` binary as its worker program.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        Engine::builder()
            .cache_dir(cache_dir())
            .worker_program(env!("CARGO_BIN_EXE_sandgen"))
            .build()
            .expect("engine")
    })
}

/// The compile cache of the tests (also for the CLI they run).
pub fn cache_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sandgen-cache")
}

/// A plugin whose iterables use the running test's isolation mode.
#[derive(Clone, Debug)]
pub struct Fixture(Plugin);

impl Fixture {
    /// A builder for generator `name`, with the test's isolation mode.
    pub fn generator(&self, name: &str) -> IterableBuilder {
        self.0.generator(name).isolation(isolation())
    }

    /// The plugin's generators.
    pub fn generators(&self) -> Result<Vec<sandgen::GeneratorInfo>, sandgen::Error> {
        self.0.generators()
    }
}

/// The plugin at `path`, compiled once per test binary.
pub fn plugin(path: &str) -> Fixture {
    static PLUGINS: OnceLock<Mutex<HashMap<String, Plugin>>> = OnceLock::new();
    let plugins = PLUGINS.get_or_init(Default::default);
    let mut plugins = plugins.lock().unwrap();
    let plugin = plugins
        .entry(path.to_owned())
        .or_insert_with(|| {
            engine()
                .load(path)
                .unwrap_or_else(|e| panic!("loading {path}: {e}"))
        })
        .clone();
    Fixture(plugin)
}

/// The SDK fixture that mirrors SPDL's test cases.
pub fn spdl() -> Fixture {
    plugin(artifacts::FIXTURE_SPDL)
}

/// The fixture written against the WIT without the SDK.
pub fn raw() -> Fixture {
    plugin(artifacts::FIXTURE_RAW)
}

/// The fixture that probes the sandbox's edges and writes output in
/// awkward shapes, on request.
pub fn probe() -> Fixture {
    plugin(artifacts::FIXTURE_PROBE)
}

/// A generator of the probe fixture, with JSON items.
pub fn probing(generator: &str) -> sandgen::IterableBuilder {
    probe().generator(generator).encoding(Encoding::Json)
}

/// A fresh, empty directory for one test.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The error that the first pass over `iterable` starts with.
#[track_caller]
pub fn pass_error<T: serde::de::DeserializeOwned>(iterable: &sandgen::Iterable) -> sandgen::Error {
    match iterable.iter::<T>().expect("a pass starts").next() {
        Some(Err(error)) => error,
        Some(Ok(_)) => panic!("the pass yielded an item instead of an error"),
        None => panic!("the pass ended without an error"),
    }
}

/// Asserts an error's kind and that its message contains `words`.
#[track_caller]
pub fn assert_error(error: &sandgen::Error, kind: sandgen::ErrorKind, words: &str) {
    assert_eq!(error.kind(), kind, "{error}");
    assert!(
        error.to_string().contains(words),
        "`{words}` is not in: {error}"
    );
}

/// Collects the lines a guest prints, for assertions.
#[derive(Clone, Debug, Default)]
pub struct Captured {
    lines: Arc<Mutex<Vec<String>>>,
    tx: Arc<Mutex<Option<crossbeam_channel::Sender<String>>>>,
}

impl Captured {
    /// A capture that also sends each line to the returned receiver.
    pub fn with_channel() -> (Captured, crossbeam_channel::Receiver<String>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let captured = Captured::default();
        *captured.tx.lock().unwrap() = Some(tx);
        (captured, rx)
    }

    /// The handler to pass to `on_output`.
    pub fn handler(&self) -> impl Fn(&OutputLine<'_>) + Send + Sync + 'static {
        let me = self.clone();
        move |line| {
            me.lines.lock().unwrap().push(line.to_string());
            if let Some(tx) = &*me.tx.lock().unwrap() {
                let _ = tx.send(line.text.to_owned());
            }
        }
    }

    /// Every line so far, as `[plugin/generator stream] text`.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

/// A child process of a test, with a deadline on every wait: it runs in a
/// process group of its own with SIGINT and SIGTERM at their default
/// actions (a test run as a background job inherits them ignored, which
/// would turn a signal test into a hang), its stderr is collected as it
/// comes, and dropping it kills the whole group, so a failing test leaves
/// no process behind.
pub struct Running {
    pid: u32,
    status: crossbeam_channel::Receiver<std::process::ExitStatus>,
    stdout: Option<std::process::ChildStdout>,
    collected: Option<std::thread::JoinHandle<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_lines: crossbeam_channel::Receiver<String>,
    stderr_thread: Option<std::thread::JoinHandle<()>>,
    exited: Option<std::process::ExitStatus>,
}

/// What to do with a [`Running`] child's stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stdout {
    /// Collect it for [`Running::wait`].
    Collect,
    /// Leave it to the test ([`Running::take_stdout`]).
    Pipe,
}

impl Running {
    /// Starts `command` with an empty stdin.
    pub fn spawn(command: &Command, stdout: Stdout) -> Running {
        use std::io::{BufRead, Read};
        use std::os::unix::process::CommandExt;

        let mut wrapped = Command::new("env");
        wrapped
            .arg("--default-signal=INT,TERM")
            .arg(command.get_program())
            .args(command.get_args())
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            wrapped.current_dir(dir);
        }
        let mut child = wrapped
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let pid = child.id();
        let mut out = child.stdout.take();
        let collected = (stdout == Stdout::Collect).then(|| {
            let mut out = out.take().expect("piped");
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = out.read_to_end(&mut bytes);
                bytes
            })
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (line_tx, stderr_lines) = crossbeam_channel::unbounded();
        let err = child.stderr.take().expect("piped");
        let sink = stderr.clone();
        let stderr_thread = std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(err);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                sink.lock().unwrap().extend_from_slice(&line);
                let _ = line_tx.send(String::from_utf8_lossy(&line).trim_end().to_owned());
                line.clear();
            }
        });
        let (status_tx, status) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            if let Ok(exit) = child.wait() {
                let _ = status_tx.send(exit);
            }
        });
        Running {
            pid,
            status,
            stdout: out,
            collected,
            stderr,
            stderr_lines,
            stderr_thread: Some(stderr_thread),
            exited: None,
        }
    }

    /// The child's process id (also its process group's).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The child's stdout, with [`Stdout::Pipe`].
    pub fn take_stdout(&mut self) -> std::process::ChildStdout {
        self.stdout
            .take()
            .expect("stdout is piped and not taken yet")
    }

    /// What the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits until the child writes a stderr line containing `words`.
    #[track_caller]
    pub fn stderr_line(&self, words: &str, deadline: Duration) -> String {
        let deadline = limit(deadline);
        let until = std::time::Instant::now() + deadline;
        loop {
            match self.stderr_lines.recv_deadline(until) {
                Ok(line) if line.contains(words) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "no stderr line with `{words}` within {deadline:?}; stderr:\n{}",
                    self.stderr()
                ),
            }
        }
    }

    /// Waits for the child to exit, up to `deadline`; past it, kills the
    /// group and fails the test, saying what it waited for.
    #[track_caller]
    pub fn wait(&mut self, deadline: Duration, what: &str) -> std::process::Output {
        let deadline = limit(deadline);
        let status = match self.exited {
            Some(status) => status,
            None => match self.status.recv_timeout(deadline) {
                Ok(status) => status,
                Err(_) => {
                    self.kill_group();
                    panic!(
                        "{what}: the process did not exit within {deadline:?} and was killed; stderr:\n{}",
                        self.stderr()
                    )
                }
            },
        };
        self.exited = Some(status);
        // The pipes close when the process (and any child holding them)
        // ends; bounded all the same.
        let stdout = self
            .collected
            .take()
            .map(|reader| join_within(reader, deadline, what))
            .unwrap_or_default();
        if let Some(reader) = self.stderr_thread.take() {
            join_within(reader, deadline, what);
        }
        std::process::Output {
            status,
            stdout,
            stderr: self.stderr.lock().unwrap().clone(),
        }
    }

    /// Sends `signal` (`TERM`, `INT`, `KILL`, ...) to the child.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {} failed", self.pid);
    }

    fn kill_group(&self) {
        // Usually the group is gone already: nothing to report.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.pid)])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A test that failed midway leaves no process behind; the group
        // also holds a worker process the child started.
        self.kill_group();
    }
}

/// Joins a reader thread, up to `deadline`.
#[track_caller]
fn join_within<T: Send + 'static>(
    thread: std::thread::JoinHandle<T>,
    deadline: Duration,
    what: &str,
) -> T {
    // `deadline` is stretched already (by `Running::wait`).
    poll_until(
        deadline,
        &format!("{what}: the process's pipes to close after it exited"),
        || thread.is_finished(),
    );
    thread.join().expect("a reader thread does not panic")
}

/// Polls `done` until it holds, up to `deadline` (stretched by
/// [`time_factor`]); past it, fails the test with `what` and the time
/// waited. The one way the tests wait for something that has no event to
/// wait on (a process's state, a count of lines, CPU time spent).
#[track_caller]
pub fn wait_until(deadline: Duration, what: &str, done: impl FnMut() -> bool) {
    poll_until(limit(deadline), what, done);
}

/// [`wait_until`] with `deadline` as it is (already stretched).
#[track_caller]
fn poll_until(deadline: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + deadline;
    while !done() {
        assert!(
            std::time::Instant::now() < until,
            "{what}: not within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `command` to its end within `deadline` (see [`Running`]).
#[track_caller]
pub fn output_within(command: &Command, deadline: Duration, what: &str) -> std::process::Output {
    Running::spawn(command, Stdout::Collect).wait(deadline, what)
}

/// Runs the ignored test `test` of this binary alone in a process of its own
/// (with `env` set to the running test's isolation mode), for measurements
/// that no other test may disturb, and returns the two figures it printed
/// after `marker`.
#[track_caller]
pub fn run_probe(test: &str, env: &str, marker: &str) -> (u64, u64) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            test,
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(env, isolation().to_string());
    let output = output_within(&command, Duration::from_secs(240), test);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find_map(|line| line.split_once(marker).map(|(_, figures)| figures))
        .and_then(|figures| figures.split_once(' '))
        .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
        .unwrap_or_else(|| panic!("{test} printed no `{marker}` figures: {stdout}"))
}

/// A xorshift64 step: a test's seeded random choices (kill points, trap
/// values), the same in every run.
pub fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}
