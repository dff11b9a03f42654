//! Part of the `sandgen` binary (`main.rs`), not of the library: the
//! passes of `run`, their items printed as JSON lines through
//! [`state::Out`], which keeps `--save-state`'s position with them.

use sandgen::Iterable;

use crate::json::json_line;
use crate::{Failure, RunArgs, progress, state, stdout_error, usage};

/// The passes of `run`, from pass `first`, their items into `out`, which
/// is flushed (and the position saved) on every way out: while a pass
/// that stops early (--take, an error) still lives, so that the position
/// is where it stopped, not at the next pass.
pub(crate) fn items(
    args: &RunArgs,
    iterable: &Iterable,
    first: u64,
    out: &mut state::Out<'_>,
) -> Result<(), Failure> {
    let mut left = args.take.unwrap_or(u64::MAX);
    let mut progress = progress::Progress::new();
    for _ in first..args.passes {
        if left == 0 {
            break;
        }
        let mut pass = match iterable.iter_raw() {
            Ok(pass) => pass,
            Err(error) => {
                flushed(out.flush())?;
                return Err(error.into());
            }
        };
        let read = read_pass(args, &mut pass, &mut left, &mut progress, out);
        if read.is_err() || left == 0 {
            let written = flushed(out.flush());
            drop(pass);
            progress.finish();
            return read.and(written);
        }
        progress.pass_done(pass.delivered());
    }
    progress.finish();
    flushed(out.flush())
}

/// The items of one pass into `out`, until it ends or `left` is 0.
fn read_pass(
    args: &RunArgs,
    pass: &mut sandgen::RawPass<'_>,
    left: &mut u64,
    progress: &mut progress::Progress,
    out: &mut state::Out<'_>,
) -> Result<(), Failure> {
    while let Some(item) = pass.next_item() {
        let line = match json_line(&args.generator, item?) {
            Ok(line) => line,
            Err(failure) => {
                // Not printed: not counted in the position either.
                pass.refuse_last();
                return Err(failure);
            }
        };
        match out.line(&line) {
            Ok(()) => {}
            Err(state::Output::Stdout(e)) => {
                // Stdout is gone: the run ends (quietly for `| head`).
                *left = 0;
                return stdout_error(e);
            }
            Err(state::Output::State(e)) => return Err(usage(e)),
        }
        *left -= 1;
        progress.item(pass.delivered());
        if *left == 0 {
            break;
        }
    }
    Ok(())
}

/// What writing the output met, as the run's result: a closed stdout
/// (`| head`) ends the run quietly.
fn flushed(result: Result<(), state::Output>) -> Result<(), Failure> {
    match result {
        Ok(()) => Ok(()),
        Err(state::Output::Stdout(e)) => stdout_error(e),
        Err(state::Output::State(e)) => Err(usage(e)),
    }
}
