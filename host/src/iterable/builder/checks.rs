//! The checks of an [`IterableBuilder`]'s options, before any worker
//! starts.

use std::time::Duration;

use crate::error::{Error, ErrorKind};
use crate::iterable::builder::{
    IterableBuilder, MAX_GENERATOR_NAME, MAX_WORKERS, Payload, WORKER_ENV,
};
use crate::options::Sharding;
use crate::text::{ECHO, cut_text};

impl IterableBuilder {
    /// Checks every option before any worker starts.
    pub(super) fn validate(&self) -> Result<(), Error> {
        if self.generator.len() > MAX_GENERATOR_NAME {
            let name = cut_text(&self.generator, ECHO);
            let why = format!("a generator's name is at most {MAX_GENERATOR_NAME} bytes");
            let message = format!("no generator is named `{name}`: {why}");
            return Err(Error::new(ErrorKind::InvalidInput, message));
        }
        self.flow.validate()?;
        self.limits.validate()?;
        self.grants.validate()?;
        if self.timeout == Some(Duration::ZERO) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "timeout must be longer than zero",
            ));
        }
        let workers = self.workers;
        if workers == 0 || workers > MAX_WORKERS {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("the number of workers must be between 1 and {MAX_WORKERS}, not {workers}"),
            ));
        }
        for (key, _) in &self.grants.env {
            if WORKER_ENV.contains(&key.as_str()) {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "environment variable {key} is set by sandgen for each worker; choose another name"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// This iterable's shard and the number of shards, checked.
    pub(super) fn shard_numbers(&self) -> Result<(usize, usize), Error> {
        let (shard, shards) = self.shard.unwrap_or((0, 1));
        if shards == 0
            || shard >= shards
            || shards
                .checked_mul(self.workers)
                .is_none_or(|all| all > u32::MAX as usize)
        {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("invalid shard {shard} of {shards}: the index must be below the count"),
            ));
        }
        if self.sharding == Sharding::Items && shards > 1 && self.seed.is_none() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "sharding by items over {shards} shards needs a seed: every shard must produce \
                     the same stream; set `seed`, or shard by plugin"
                ),
            ));
        }
        Ok((shard, shards))
    }

    /// Each worker's encoded arguments: `args` for all, or `worker_args`
    /// one each.
    pub(super) fn args_per_worker(&mut self) -> Result<Vec<Vec<u8>>, Error> {
        let workers = self.workers;
        let args = std::mem::replace(&mut self.args, Payload::None);
        if self.sharding == Sharding::Items && self.worker_args.is_some() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "worker_args gives each worker its own arguments, but sharding by items runs \
                 every worker on the same stream; give args, or shard by plugin",
            ));
        }
        let Some(per_worker) = self.worker_args.take() else {
            return Ok(vec![args.into_bytes("args", self.encoding)?; workers]);
        };
        if !matches!(args, Payload::None) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "give either args (for every worker) or worker_args (one per worker), not both",
            ));
        }
        if per_worker.len() != workers {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "worker_args has {} values for {workers} worker(s); give exactly one per worker",
                    per_worker.len()
                ),
            ));
        }
        per_worker
            .into_iter()
            .enumerate()
            .map(|(i, payload)| payload.into_bytes(&format!("args of worker {i}"), self.encoding))
            .collect()
    }
}
