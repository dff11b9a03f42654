//! Resuming a run at a [`Position`]: what an iterable's position binds to,
//! the check that a position is this iterable's, and the replay of the
//! passes before it.

use crate::caller::Resume;
use crate::error::{Error, ErrorKind};
use crate::iterable::Iterable;
use crate::iterable::builder::IterableBuilder;
use crate::options::Sharding;
use crate::position::{Binding, Position, digest};
use crate::text::cut_text;

impl IterableBuilder {
    /// Takes the seed of `position` when the iterable has none of its own:
    /// the caller's seed of the run it was taken of.
    pub(super) fn adopt_seed(&mut self, position: &Position) {
        if self.seed.is_none() {
            self.seed = position.binding().seed;
        }
    }

    /// What this iterable's positions bind to (the plugin's id is filled
    /// in when a position is taken: it costs a pass over a plugin loaded
    /// from bytes). `drawn` is the iterable's own seed for items sharding.
    pub(super) fn binding(
        &self,
        args: &[Vec<u8>],
        config: &[u8],
        drawn: u64,
        shard: (usize, usize),
    ) -> Binding {
        Binding {
            plugin: String::new(),
            generator: self.generator.clone(),
            encoding: self.encoding.to_string(),
            args: digest(args.iter().map(Vec::as_slice)),
            config: digest([config]),
            seed: self.seed,
            drawn: (self.sharding == Sharding::Items && self.seed.is_none()).then_some(drawn),
            workers: self.workers,
            in_order: self.in_order,
            sharding: self.sharding.to_string(),
            shard,
        }
    }

    /// Checks that `position` was taken of an iterable bound as `binding`
    /// is, of this plugin.
    pub(super) fn check_position(
        &self,
        position: &Position,
        binding: &Binding,
    ) -> Result<(), Error> {
        let mut ours = binding.clone();
        ours.plugin = self.plugin.source().content_id();
        match position.binding().difference(&ours) {
            None => Ok(()),
            Some(why) => Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "cannot resume generator {}: {why}",
                    cut_text(&self.generator, 64)
                ),
            )),
        }
    }
}

/// Runs the passes before `position`'s in the workers of `iterable`
/// without sending their items, and sets where its next pass starts.
pub(super) fn replay(iterable: &Iterable, position: &Position) -> Result<(), Error> {
    for pass in 0..position.pass() {
        iterable.skip_pass().map_err(|error| {
            error.context(format!(
                "while running pass {pass} of the {} before the position",
                position.pass()
            ))
        })?;
    }
    let resume = Resume {
        delivered: position.delivered().to_vec(),
        next_worker: position.next_worker(),
    };
    iterable
        .caller()
        .progress()
        .resume_at(position.pass(), resume);
    Ok(())
}
