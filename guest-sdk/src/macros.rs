/// Exports a plugin: its generators and, optionally, its initializer.
///
/// `generators` lists types that implement [`Generator`](crate::Generator);
/// `initializer` names a function `fn(Config) -> Result<(), E>` (with
/// `Config: DeserializeOwned`, `E: Display`) that the host runs once per
/// instance, before any generator is created. Use it once per plugin crate.
///
/// ```
/// use sandgen_guest::{Error, Generator, export_plugin};
/// # struct Range;
/// # impl Generator for Range {
/// #     const NAME: &'static str = "range";
/// #     const DESCRIPTION: &'static str = "yields 0..n";
/// #     type Args = u64;
/// #     type Item = u64;
/// #     type Iter = std::ops::Range<u64>;
/// #     fn create(_: u64) -> Result<Self, Error> { Ok(Range) }
/// #     fn iter(&mut self) -> Result<Self::Iter, Error> { Ok(0..1) }
/// # }
///
/// #[derive(serde::Deserialize)]
/// struct Config {
///     verbose: bool,
/// }
///
/// fn setup(config: Option<Config>) -> Result<(), Error> {
///     if config.is_some_and(|c| c.verbose) {
///         eprintln!("plugin ready");
///     }
///     Ok(())
/// }
///
/// export_plugin!(generators: [Range], initializer: setup);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_plugin {
    (generators: [$($generator:ty),+ $(,)?] $(, initializer: $init:expr)? $(,)?) => {
        #[doc(hidden)]
        struct __SandgenPlugin;

        impl $crate::__private::Registry for __SandgenPlugin {
            const GENERATORS: &'static [$crate::__private::Entry] =
                &[$($crate::__private::Entry::of::<$generator>()),+];

            fn initialize(
                encoding: $crate::Encoding,
                config: &[u8],
            ) -> ::core::result::Result<(), $crate::Error> {
                $crate::__sandgen_initializer!(encoding, config $(, $init)?)
            }
        }

        $crate::bindings::__sandgen_export_bindings!(
            __SandgenPlugin with_types_in $crate::bindings
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __sandgen_initializer {
    ($encoding:ident, $config:ident) => {
        $crate::__private::no_initializer($encoding, $config)
    };
    ($encoding:ident, $config:ident, $init:expr) => {
        $crate::__private::run_initializer($encoding, $config, $init)
    };
}
