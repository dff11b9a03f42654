//! The `sandgen` command: list, run and benchmark a plugin's generators.
//!
//! Exit status: 0 when every pass ended (or `--take` was reached); 1 when the
//! plugin failed; 2 for usage errors or a plugin that cannot be loaded. On 1
//! and 2, stderr carries one line `error: ...`.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

mod bench;
mod json;
mod passes;
mod progress;
mod state;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sandgen::{
    Encoding, Engine, ErrorKind, GuestStream, Isolation, Iterable, IterableBuilder, OnFailure,
    Plugin, Position, Sharding, escape_text,
};

#[derive(Parser)]
#[command(
    name = "sandgen",
    version,
    about = "Run generator plugins in WebAssembly sandboxes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Lists a plugin's generators: one line each, NAME<TAB>DESCRIPTION.
    List {
        /// The plugin component (.wasm).
        plugin: PathBuf,
        /// How long listing may take, in seconds.
        #[arg(
            long,
            default_value = "10",
            value_name = "SECONDS",
            allow_negative_numbers = true
        )]
        timeout: String,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Runs a generator and prints each item as one line of JSON.
    Run {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Iterates a generator, decoding every item as --decode says (as a
    /// consumer would) without printing it, and prints one JSON object of
    /// throughput figures.
    Bench {
        #[command(flatten)]
        run: RunArgs,
        /// What to do with each item: json (parse it; any generator), u64
        /// or bytes (bincode, decoded as that type), none (count it
        /// unread: the transport alone).
        #[arg(long, value_enum, default_value = "json", value_name = "KIND")]
        decode: bench::Decode,
    },
    /// Says how this kernel confines worker processes (Landlock, seccomp,
    /// no-new-privs, core dumps); exits 1 when a layer is missing.
    Confinement,
}

/// The bounds on compiling a plugin that is not in the compile cache.
#[derive(clap::Args)]
struct LoadArgs {
    /// How long compiling the plugin may take, in seconds.
    #[arg(
        long,
        default_value = "120",
        value_name = "SECONDS",
        allow_negative_numbers = true
    )]
    load_timeout: String,
    /// Memory (address space) that compiling the plugin may use, in MiB.
    #[arg(long, default_value_t = 4096, value_name = "MIB")]
    load_memory: u64,
    /// Refuse to start worker processes (--isolation process) on a kernel
    /// that cannot confine them fully, instead of warning.
    #[arg(long)]
    require_confinement: bool,
}

impl LoadArgs {
    /// An engine with these bounds (and the default cache; this program is
    /// its own worker and compiling program).
    fn engine(&self) -> Result<Engine, Failure> {
        let timeout = seconds("--load-timeout", &self.load_timeout)?;
        let memory = self
            .load_memory
            .checked_mul(1024 * 1024)
            .filter(|&m| m > 0)
            .with_context(|| {
                format!(
                    "invalid --load-memory {}: give a positive number of MiB",
                    self.load_memory
                )
            })
            .map_err(usage)?;
        Ok(Engine::builder()
            .load_timeout(timeout)
            .load_memory(memory)
            .require_confinement(self.require_confinement)
            .build()?)
    }
}

#[derive(clap::Args)]
struct RunArgs {
    /// The plugin component (.wasm).
    plugin: PathBuf,
    #[command(flatten)]
    load: LoadArgs,
    /// The generator to run.
    generator: String,
    /// Arguments for the generator, as JSON.
    #[arg(long, value_name = "JSON")]
    args: Option<String>,
    /// Config for the plugin's initializer, as JSON.
    #[arg(long, value_name = "JSON")]
    config: Option<String>,
    /// Where the worker runs: thread or process.
    #[arg(long, default_value_t = Isolation::default(), value_name = "MODE")]
    isolation: Isolation,
    /// Inactivity timeout in seconds (fractions allowed).
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    timeout: Option<String>,
    /// Cap on the guest's linear memory, in MiB.
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    memory_limit: u64,
    /// CPU budget per pass.
    #[arg(long, value_name = "N")]
    fuel: Option<u64>,
    /// The largest item the plugin may yield, encoded, in MiB (1 to 4095)
    /// [default: 1024].
    #[arg(long, value_name = "MIB")]
    max_item_mib: Option<u32>,
    /// Stop after N items (the pass is stopped, not drained).
    #[arg(long, value_name = "N")]
    take: Option<u64>,
    /// Iterate N passes over the same iterable.
    #[arg(long, default_value_t = 1, value_name = "N")]
    passes: u64,
    /// Items the worker may run ahead of the caller [default: 1024].
    #[arg(long, value_name = "N")]
    buffer_size: Option<usize>,
    /// Grant read-only access to a host directory, at GUEST (default: the
    /// same path); repeatable.
    #[arg(long, value_name = "HOST[::GUEST]")]
    dir: Vec<String>,
    /// An environment variable visible to the plugin; repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Run N workers of the generator, each a full sandboxed worker; items
    /// come round-robin by worker (one from each that has not finished)
    /// unless --unordered.
    #[arg(long, default_value_t = 1, value_name = "N")]
    workers: usize,
    /// With several workers, give items in the order they are produced.
    #[arg(long)]
    unordered: bool,
    /// Who splits the stream among the workers: plugin (each worker sees
    /// its index and yields its share) or items (every worker runs the
    /// whole stream and keeps every N-th item, so each comes once).
    #[arg(long, default_value_t = Sharding::default(), value_name = "MODE")]
    sharding: Sharding,
    /// Make the guest's random sources deterministic streams derived from
    /// this seed (0 to 2^64-1) and the worker's index.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    seed: Option<String>,
    /// What a pass does when a worker fails: stop (the error ends the run),
    /// restart (start the worker afresh where it stood) or skip (restart it
    /// past the item that failed). Each restart is one line on stderr.
    #[arg(long, default_value_t = OnFailure::default(), value_name = "MODE")]
    on_failure: OnFailure,
    /// The most restarts one pass may make before a failure ends it.
    #[arg(long, default_value_t = sandgen::DEFAULT_MAX_RESTARTS, value_name = "N")]
    max_restarts: u32,
}

/// Where `run` keeps its position, and where it starts.
#[derive(clap::Args)]
struct StateArgs {
    /// Keep the run's position in FILE, for --resume: written atomically
    /// whenever items reach stdout (it never counts an item that did not)
    /// and when the run ends, also after --take, a failure, SIGINT or
    /// SIGTERM (exit status 130).
    #[arg(long, value_name = "FILE")]
    save_state: Option<PathBuf>,
    /// Start where the position in FILE (saved by --save-state) left off:
    /// the items an uninterrupted run gives from there. The run's options
    /// must be those of the saved run; --passes counts its passes from
    /// the first (those before the position included), --take this run's
    /// items.
    #[arg(long, value_name = "FILE")]
    resume: Option<PathBuf>,
}

/// An error with the exit status it warrants.
struct Failure {
    status: u8,
    error: anyhow::Error,
}

impl From<sandgen::Error> for Failure {
    fn from(error: sandgen::Error) -> Self {
        let status = if is_plugin_failure(error.kind()) {
            1
        } else {
            2
        };
        Failure {
            status,
            error: error.into(),
        }
    }
}

/// Whether the plugin (rather than the caller or sandgen) failed: exit
/// status 1. Usage errors and plugins that cannot be loaded are 2.
fn is_plugin_failure(kind: ErrorKind) -> bool {
    !matches!(
        kind,
        ErrorKind::InvalidInput | ErrorKind::Load | ErrorKind::LoadLimit | ErrorKind::Incompatible
    )
}

fn usage(error: anyhow::Error) -> Failure {
    Failure { status: 2, error }
}

fn main() -> ExitCode {
    // `sandgen` is also the program that worker processes run.
    sandgen::run_worker_if_requested();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line, as every other error: clap's first line is already
            // `error: ...`; the usage is one `--help` away.
            let text = e.render().to_string();
            let line = text.lines().next().unwrap_or("error: invalid usage");
            let _ = writeln!(io::stderr().lock(), "{line} (see `sandgen --help`)");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::List {
            plugin,
            timeout,
            load,
        } => list(plugin, timeout, &load),
        Command::Run { run: args, state } => run(args, state),
        Command::Bench { run, decode } => bench::bench(run, decode),
        Command::Confinement => confinement(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // One line, then any further lines of the plugin's own message
            // (a Python traceback, a JS stack) indented beneath it.
            // The message may hold the plugin's words: shown escaped, so
            // that it cannot drive the terminal or forge lines of ours.
            let text = format!("{:#}", failure.error);
            let mut lines = text.lines().map(|line| escape_text(line.as_bytes()));
            let mut err = io::stderr().lock();
            let _ = writeln!(err, "error: {}", lines.next().unwrap_or_default());
            for line in lines {
                let _ = writeln!(err, "  {line}");
            }
            ExitCode::from(failure.status)
        }
    }
}

fn list(plugin: PathBuf, timeout: String, load: &LoadArgs) -> Result<(), Failure> {
    let timeout = seconds("--timeout", &timeout)?;
    let engine = load.engine()?;
    let plugin = engine.load(&plugin)?;
    let mut out = io::stdout().lock();
    for info in plugin.generators_with_timeout(timeout)? {
        // One line per generator, whatever the plugin put in its strings:
        // controls escaped, a tab (the separator) shown as a space.
        let clean = |s: &str| escape_text(s.as_bytes()).replace('\t', " ");
        if writeln!(out, "{}\t{}", clean(&info.name), clean(&info.description)).is_err() {
            break;
        }
    }
    Ok(())
}

/// Builds the iterable from the common options.
/// The engine, and the plugin (compiled, or from the compile cache).
fn load(args: &RunArgs) -> Result<Plugin, Failure> {
    Ok(args.load.engine()?.load(&args.plugin)?)
}

/// Builds the iterable: starts the worker and waits for initialization.
fn build(
    plugin: &Plugin,
    args: &RunArgs,
    encoding: Encoding,
    resume: Option<Position>,
) -> Result<Iterable, Failure> {
    let mut builder = plugin
        .generator(&args.generator)
        .encoding(encoding)
        .isolation(args.isolation)
        .on_output(print_guest_line);
    builder = with_payloads(builder, args, encoding)?;
    builder = builder
        .workers(args.workers)
        .in_order(!args.unordered)
        .sharding(args.sharding)
        .on_failure(args.on_failure)
        .max_restarts(args.max_restarts);
    if let Some(seed) = &args.seed {
        let seed = seed
            .parse::<u64>()
            .map_err(|_| {
                anyhow::anyhow!(
                    "invalid --seed `{}`: give an integer from 0 to {}",
                    echo(seed),
                    u64::MAX
                )
            })
            .map_err(usage)?;
        builder = builder.seed(seed);
    }
    if let Some(timeout) = &args.timeout {
        builder = builder.timeout(seconds("--timeout", timeout)?);
    }
    let memory = args
        .memory_limit
        .checked_mul(1024 * 1024)
        .filter(|&m| m > 0)
        .with_context(|| {
            format!(
                "invalid --memory-limit {}: give a positive number of MiB",
                args.memory_limit
            )
        })
        .map_err(usage)?;
    builder = builder.memory_limit(memory);
    if let Some(n) = args.buffer_size {
        builder = builder.buffer_size(n);
    }
    if let Some(units) = args.fuel {
        builder = builder.fuel(units);
    }
    if let Some(mib) = args.max_item_mib {
        let bytes = Some(mib)
            .filter(|mib| (1..4096).contains(mib))
            .with_context(|| format!("invalid --max-item-mib {mib}: give 1 to 4095 (MiB)"))
            .map_err(usage)?;
        builder = builder.max_item_bytes(bytes << 20);
    }
    for grant in &args.dir {
        let (host, guest) = grant.split_once("::").unwrap_or((grant, grant));
        if host.is_empty() || guest.is_empty() {
            return Err(usage(anyhow::anyhow!(
                "invalid --dir `{}`: expected HOST or HOST::GUEST",
                echo(grant)
            )));
        }
        builder = builder.dir(host, guest);
    }
    for pair in &args.env {
        let Some((key, value)) = pair.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return Err(usage(anyhow::anyhow!(
                "invalid --env `{}`: expected KEY=VALUE",
                echo(pair)
            )));
        };
        builder = builder.env(key, value);
    }
    if let Some(position) = resume {
        builder = builder.resume(position);
    }
    Ok(builder.build()?)
}

/// A line the guest printed, to stderr, prefixed and escaped: the guest
/// cannot drive the terminal or forge sandgen's own lines.
fn print_guest_line(line: &sandgen::OutputLine<'_>) {
    let stream = match line.stream {
        GuestStream::Stdout => "stdout",
        _ => "stderr",
    };
    progress::eprint_line(&format!(
        "[{}/{} {stream}] {}",
        escape_text(line.plugin.as_bytes()),
        escape_text(line.generator.as_bytes()),
        escape_text(line.bytes)
    ));
}

/// A positive number of seconds, from its text.
fn seconds(flag: &str, text: &str) -> Result<Duration, Failure> {
    text.trim()
        .parse::<f64>()
        .ok()
        .and_then(|value| Duration::try_from_secs_f64(value).ok())
        .filter(|t| !t.is_zero())
        .with_context(|| {
            format!(
                "invalid {flag} {}: give a positive number of seconds",
                echo(text)
            )
        })
        .map_err(usage)
}

/// A value the user gave, for an error line: whole when short, otherwise
/// its start and its length.
fn echo(text: &str) -> String {
    sandgen::cut_text(text, 64).into_owned()
}

/// `--args` and `--config`: JSON text as is for `run`; for `bench`, the JSON
/// value encoded with bincode.
fn with_payloads(
    mut builder: IterableBuilder,
    args: &RunArgs,
    encoding: Encoding,
) -> Result<IterableBuilder, Failure> {
    let encode = |flag: &str, text: &str| -> Result<Vec<u8>, Failure> {
        let value: serde_json::Value = serde_json::from_str(text)
            .with_context(|| format!("invalid {flag}: not JSON: {}", echo(text)))
            .map_err(usage)?;
        match encoding {
            Encoding::Json => Ok(text.as_bytes().to_vec()),
            _ => sandgen_wire::bincode_of_json(&value)
                .with_context(|| format!("invalid {flag}: cannot encode it with bincode"))
                .map_err(usage),
        }
    };
    if let Some(text) = &args.args {
        builder = builder.args_raw(encode("--args", text)?);
    }
    if let Some(text) = &args.config {
        builder = builder.config_raw(encode("--config", text)?);
    }
    Ok(builder)
}

fn run(args: RunArgs, state: StateArgs) -> Result<(), Failure> {
    let resume = state
        .resume
        .as_deref()
        .map(state::read)
        .transpose()
        .map_err(usage)?;
    let first = resume.as_ref().map_or(0, Position::pass);
    if first >= args.passes {
        // The run's passes are all behind the position: nothing to do.
        return Ok(());
    }
    let iterable = Arc::new(build(&load(&args)?, &args, Encoding::Json, resume)?);
    if let Some(path) = &state.save_state {
        // Saved before any item: a run killed before its first save still
        // leaves its start, and a path that cannot be written is said now.
        state::save(path, &iterable.position()).map_err(usage)?;
    }
    let interrupted = match &state.save_state {
        Some(_) => Some(state::close_on_interrupt(&iterable).map_err(usage)?),
        None => None,
    };
    let saving = state.save_state.as_deref().map(|path| (path, &*iterable));
    let result = passes::items(&args, &iterable, first, &mut state::Out::new(saving));
    // The failures the passes survived (and those before the one that
    // ended them), one escaped line each.
    for failure in iterable.failures() {
        progress::eprint_line(&format!("sandgen: {failure}"));
    }
    // A state file that could not be written is said first: the position
    // it holds is behind stdout.
    let unsaved = matches!(&result, Err(failure) if failure.status == 2);
    if !unsaved && interrupted.is_some_and(|flag| flag.load(Ordering::SeqCst)) {
        let path = state
            .save_state
            .as_deref()
            .unwrap_or(std::path::Path::new(""));
        return Err(Failure {
            status: 130,
            error: anyhow::anyhow!("interrupted; the position is saved in {}", path.display()),
        });
    }
    result
}

/// A closed stdout (`| head`) ends the run quietly; other write errors fail.
fn stdout_error(error: io::Error) -> Result<(), Failure> {
    if error.kind() == io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(usage(
            anyhow::Error::new(error).context("failed to write items to stdout"),
        ))
    }
}

/// `sandgen confinement`: what worker processes get on this kernel.
fn confinement() -> Result<(), Failure> {
    let confinement = sandgen::Confinement::of_this_kernel();
    let _ = write!(io::stdout().lock(), "{confinement}");
    if confinement.is_complete() {
        Ok(())
    } else {
        Err(Failure {
            status: 1,
            error: anyhow::anyhow!(
                "worker processes are only partly confined on this kernel (missing: {})",
                confinement.missing().join(", ")
            ),
        })
    }
}
