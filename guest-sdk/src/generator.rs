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

    /// Drops the next `count` items of a pass without producing them for
    /// the host (a resumed run skips the items it had delivered): `true`
    /// when all `count` were dropped, `false` when the pass ended first.
    ///
    /// The default is [`Iterator::nth`], which many iterators do without
    /// making the items they pass (`Range`, slices, `Vec`'s); override it
    /// where the generator has a cheaper way of its own. Skipped items are
    /// not looked at: an `Err` among them is dropped too (a resume never
    /// skips past an error, where the pass it resumes had ended).
    ///
    /// ```
    /// use sandgen_guest::{Error, Generator};
    ///
    /// struct Squares;
    ///
    /// impl Generator for Squares {
    ///     const NAME: &'static str = "squares";
    ///     const DESCRIPTION: &'static str = "yields the first million squares";
    ///     type Args = ();
    ///     type Item = u64;
    ///     type Iter = std::iter::Map<std::ops::Range<u64>, fn(u64) -> u64>;
    ///
    ///     fn create((): ()) -> Result<Self, Error> {
    ///         Ok(Squares)
    ///     }
    ///
    ///     fn iter(&mut self) -> Result<Self::Iter, Error> {
    ///         Ok((0..1_000_000).map(|i| i * i))
    ///     }
    /// }
    ///
    /// let mut pass = Squares.iter().unwrap();
    /// assert!(Squares::skip(&mut pass, 999_998));
    /// assert_eq!(pass.next(), Some(999_998 * 999_998));
    /// assert!(!Squares::skip(&mut pass, 2), "one item was left");
    /// ```
    fn skip(iter: &mut Self::Iter, count: u64) -> bool {
        let mut left = count;
        while left > 0 {
            let step = usize::try_from(left).unwrap_or(usize::MAX);
            if iter.nth(step - 1).is_none() {
                return false;
            }
            left -= step as u64;
        }
        true
    }

    /// Runs the next `count` passes without producing their items, where
    /// the generator can move to a pass at once (its order is a function of
    /// a pass counter): the generator is then where `count` passes read to
    /// their end would have left it, and the next [`iter`](Generator::iter)
    /// starts the pass after them. Returns `false`, having done nothing,
    /// when it cannot (the default): the host then starts each pass and
    /// runs it, dropping its items (an error in it still fails it), in
    /// steps it can watch.
    ///
    /// ```
    /// use sandgen_guest::{Error, Generator};
    ///
    /// /// Yields 0..n rotated by one more each pass.
    /// struct Rotating {
    ///     n: u64,
    ///     pass: u64,
    /// }
    ///
    /// impl Generator for Rotating {
    ///     const NAME: &'static str = "rotating";
    ///     const DESCRIPTION: &'static str = "yields 0..n rotated by one more each pass";
    ///     type Args = u64;
    ///     type Item = u64;
    ///     type Iter = Box<dyn Iterator<Item = u64>>;
    ///
    ///     fn create(n: u64) -> Result<Self, Error> {
    ///         Ok(Rotating { n, pass: 0 })
    ///     }
    ///
    ///     fn iter(&mut self) -> Result<Self::Iter, Error> {
    ///         let (n, pass) = (self.n, self.pass);
    ///         self.pass += 1;
    ///         Ok(Box::new((0..n).map(move |i| (i + pass) % n)))
    ///     }
    ///
    ///     fn skip_passes(&mut self, count: u64) -> Result<bool, Error> {
    ///         self.pass += count;
    ///         Ok(true)
    ///     }
    /// }
    ///
    /// let mut g = Rotating::create(3).unwrap();
    /// assert!(g.skip_passes(2).unwrap());
    /// assert_eq!(g.iter().unwrap().collect::<Vec<_>>(), [2, 0, 1]);
    /// ```
    ///
    /// # Errors
    ///
    /// As for a pass: the message reaches the caller as an iteration failure.
    fn skip_passes(&mut self, count: u64) -> Result<bool, Error> {
        let _ = count;
        Ok(false)
    }
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
