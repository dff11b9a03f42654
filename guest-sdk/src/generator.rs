use std::fmt::Display;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// One generator of a plugin: an iterable created from arguments, iterated
/// any number of times.
///
/// The host calls [`Generator::create`] once per iterable and
/// [`Generator::iter`] at the start of every pass. Whatever `iter` changes in
/// `self` is seen by the next pass, so a generator can, for example, reshuffle
/// its data each epoch.
///
/// ```
/// use sandgen_guest::{Error, Generator};
///
/// /// Yields the words of a text, rotated by one more word each pass.
/// struct Rotate {
///     words: Vec<String>,
///     pass: usize,
/// }
///
/// impl Generator for Rotate {
///     const NAME: &'static str = "rotate";
///     const DESCRIPTION: &'static str = "yields the words of a text, rotated by one per pass";
///     type Args = String;
///     type Item = String;
///     type Iter = std::vec::IntoIter<String>;
///
///     fn create(text: String) -> Result<Self, Error> {
///         let words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
///         if words.is_empty() {
///             return Err(Error::msg("the text has no words"));
///         }
///         Ok(Rotate { words, pass: 0 })
///     }
///
///     fn iter(&mut self) -> Result<Self::Iter, Error> {
///         let mut words = self.words.clone();
///         let n = words.len();
///         words.rotate_left(self.pass % n);
///         self.pass += 1;
///         Ok(words.into_iter())
///     }
/// }
///
/// let mut g = Rotate::create("a b c".into()).unwrap();
/// assert_eq!(g.iter().unwrap().collect::<Vec<_>>(), ["a", "b", "c"]);
/// assert_eq!(g.iter().unwrap().collect::<Vec<_>>(), ["b", "c", "a"]);
/// ```
pub trait Generator: Sized + 'static {
    /// The name that callers pass to select this generator.
    const NAME: &'static str;
    /// One line for people: what it yields, and from which arguments.
    const DESCRIPTION: &'static str;
    /// The arguments of [`Generator::create`].
    type Args: DeserializeOwned;
    /// The items of a pass.
    type Item: Serialize;
    /// One pass: yields `Item` or `Result<Item, E>` with `E: Display`.
    type Iter: Iterator<Item: IntoItem<Self::Item>> + 'static;

    /// Creates the iterable from the caller's arguments.
    ///
    /// # Errors
    ///
    /// The error's message reaches the caller as a create failure.
    fn create(args: Self::Args) -> Result<Self, Error>;

    /// Starts a new pass.
    ///
    /// # Errors
    ///
    /// The error's message reaches the caller as an iteration failure.
    fn iter(&mut self) -> Result<Self::Iter, Error>;
}

/// What a pass iterator may yield: an item, or a `Result` of one.
pub trait IntoItem<T> {
    /// The item, or the error that ends the pass.
    ///
    /// # Errors
    ///
    /// When the iterator yielded an `Err`.
    fn into_item(self) -> Result<T, Error>;
}

impl<T: Serialize> IntoItem<T> for T {
    fn into_item(self) -> Result<T, Error> {
        Ok(self)
    }
}

impl<T: Serialize, E: Display> IntoItem<T> for Result<T, E> {
    fn into_item(self) -> Result<T, Error> {
        self.map_err(Error::msg)
    }
}
