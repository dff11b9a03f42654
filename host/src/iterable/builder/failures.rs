//! What the passes of an [`IterableBuilder`]'s iterable do when a worker
//! fails.

use crate::failure::OnFailure;
use crate::iterable::builder::IterableBuilder;

impl IterableBuilder {
    /// What a pass does when one of its workers fails: end with the error
    /// ([`OnFailure::Stop`], the default), or start the worker afresh and
    /// resume it where it stood ([`OnFailure::Restart`]) or past the item
    /// that failed ([`OnFailure::Skip`]). Every restart is recorded in
    /// [`Iterable::failures`](crate::Iterable::failures).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), sandgen::Error> {
    /// use sandgen::OnFailure;
    ///
    /// let plugin = sandgen::Engine::new()?.load("plugin.wasm")?;
    /// let iterable = plugin
    ///     .generator("images")
    ///     .on_failure(OnFailure::Skip)
    ///     .max_restarts(10)
    ///     .build()?;
    /// for image in iterable.iter_raw()? {
    ///     let _encoded: Vec<u8> = image?;
    /// }
    /// for failure in iterable.failures() {
    ///     eprintln!("left out: {failure}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn on_failure(mut self, on_failure: OnFailure) -> Self {
        self.on_failure = on_failure;
        self
    }

    /// How many times one pass may restart its workers (all of them
    /// together) before a failure ends it; default 3
    /// ([`DEFAULT_MAX_RESTARTS`](crate::DEFAULT_MAX_RESTARTS)). The error
    /// that ends it then says how many restarts it made.
    pub fn max_restarts(mut self, restarts: u32) -> Self {
        self.max_restarts = restarts;
        self
    }
}
