//! A loaded [`Plugin`]: what it exports, and the starting point of its
//! iterables.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::iterable::IterableBuilder;
use crate::loader::PluginCore;

/// How long listing a plugin's generators may take by default.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// A loaded plugin: a compiled component, ready to instantiate; cheap to
/// clone.
///
/// ```no_run
/// # fn main() -> Result<(), sandgen::Error> {
/// let engine = sandgen::Engine::new()?;
/// let plugin = engine.load("plugin.wasm")?;
/// assert_eq!(plugin.name(), "plugin");
/// for info in plugin.generators()? {
///     println!("{}\t{}", info.name, info.description);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Plugin {
    core: Arc<PluginCore>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.core.name())
            .finish_non_exhaustive()
    }
}

/// A generator that a plugin exports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratorInfo {
    /// The name to pass to [`Plugin::generator`].
    pub name: String,
    /// What it yields, and from which arguments.
    pub description: String,
}

impl Plugin {
    pub(crate) fn new(core: PluginCore) -> Plugin {
        Plugin {
            core: Arc::new(core),
        }
    }

    /// The plugin's name: its file name without extension, or the name given
    /// to [`Engine::load_bytes`](crate::Engine::load_bytes).
    pub fn name(&self) -> &str {
        self.core.name()
    }

    /// The time this process spent compiling the plugin: for its load, on
    /// a compile-cache miss, and for fuel metering, when an iterable with a
    /// fuel budget first needed it. Zero when everything came compiled from
    /// the cache (as it does after a machine's first load).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), sandgen::Error> {
    /// let plugin = sandgen::Engine::new()?.load("plugin.wasm")?;
    /// if !plugin.compile_time().is_zero() {
    ///     eprintln!("compiled {} in {:?}", plugin.name(), plugin.compile_time());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn compile_time(&self) -> Duration {
        self.core.compile_time()
    }

    /// Lists the generators the plugin exports (in a fresh, sandboxed
    /// instance, for at most 10 seconds).
    ///
    /// # Errors
    ///
    /// When the plugin cannot be instantiated, traps, or takes longer than
    /// 10 seconds ([`ErrorKind::Timeout`](crate::ErrorKind::Timeout)).
    pub fn generators(&self) -> Result<Vec<GeneratorInfo>, Error> {
        self.generators_with_timeout(LIST_TIMEOUT)
    }

    /// Like [`generators`](Self::generators), for at most `timeout`.
    ///
    /// # Errors
    ///
    /// As for [`generators`](Self::generators).
    pub fn generators_with_timeout(&self, timeout: Duration) -> Result<Vec<GeneratorInfo>, Error> {
        let listed = crate::guest::list::list_generators(self.core.linked(false)?, timeout)?;
        Ok(listed
            .into_iter()
            .map(|(name, description)| GeneratorInfo { name, description })
            .collect())
    }

    /// Starts building an iterable over generator `name`; see
    /// [`IterableBuilder`].
    pub fn generator(&self, name: &str) -> IterableBuilder {
        IterableBuilder::new(self.core.clone(), name)
    }
}
