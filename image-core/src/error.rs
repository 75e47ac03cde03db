//! The error classification shared by every crate of the family.
//!
//! Each operation has its own error enum carrying its context (a path, a
//! digest, a reference, a line and column). All of them also report one
//! [`ErrorKind`] through [`Classify`], so a caller can branch on the class of
//! a failure (retry when [`ErrorKind::is_retryable`], create on `NotFound`,
//! report on `InvalidInput`) without matching on every crate's variants.
//!
//! # Classes across crates
//!
//! An error of a higher crate wraps the one below as its `source()`, with
//! its message naming only its own context (the chain printer shows each
//! link once). A caller holding only `&dyn Error` (an `anyhow::Error`, a
//! `Box<dyn Error>`) finds the class with [`classify`]: it walks the chain,
//! outermost first, and asks a *registry* which of the family's types each
//! link is. Each crate keeps its registry next to its errors, made by
//! [`classify_registry!`](crate::classify_registry), and chains to the one of
//! the crate below, so the highest crate a caller uses recognises the whole
//! family beneath it:
//!
//! ```
//! use image_core::error::{classify, ErrorKind};
//! use image_core::kind_of;
//!
//! let e: Box<dyn std::error::Error> = "md5:abc".parse::<image_core::Digest>().unwrap_err().into();
//! assert_eq!(classify(&*e, kind_of), Some(ErrorKind::Unsupported));
//! ```

use std::error::Error;
use std::fmt;

/// The class of a failure, common to every public error of the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The thing asked for (blob, tag, image, file, user) does not exist.
    NotFound,
    /// The thing to create exists already and may not be replaced.
    AlreadyExists,
    /// The input is malformed: bad syntax, bad JSON, a value out of range.
    InvalidInput,
    /// Content hashed to another digest than the one expected.
    DigestMismatch,
    /// Content had another size than the one expected.
    SizeMismatch,
    /// The input is valid but names something this library does not do
    /// (an algorithm, a media type, a schema version).
    Unsupported,
    /// The operating system refused the operation for lack of privilege.
    PermissionDenied,
    /// The operation cannot run in the current state (a lock is held, a
    /// container is not running, a limit was reached).
    FailedPrecondition,
    /// Input is hostile or would escape its confinement (path traversal,
    /// decompression bomb); it was rejected or contained.
    Unsafe,
    /// Any other input/output failure.
    Io,
    /// The peer (a registry) wants credentials, or refused the ones given.
    Unauthenticated,
    /// The peer or a resource is unavailable for now (refused or reset
    /// connection, timeout, rate limit, a 5xx answer); the same call may
    /// succeed later ([`ErrorKind::is_retryable`]).
    Unavailable,
    /// The caller cancelled the operation (its cancellation flag was set);
    /// nothing it wrote is visible.
    Cancelled,
}

impl ErrorKind {
    /// Every class, in declaration order.
    pub const ALL: [ErrorKind; 13] = [
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::InvalidInput,
        ErrorKind::DigestMismatch,
        ErrorKind::SizeMismatch,
        ErrorKind::Unsupported,
        ErrorKind::PermissionDenied,
        ErrorKind::FailedPrecondition,
        ErrorKind::Unsafe,
        ErrorKind::Io,
        ErrorKind::Unauthenticated,
        ErrorKind::Unavailable,
        ErrorKind::Cancelled,
    ];

    /// The class whose [`as_str`](Self::as_str) name is `name`, if any
    /// (for a class carried as text, e.g. across a process boundary).
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// A short lower-case name for the class, as printed by the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::DigestMismatch => "digest mismatch",
            ErrorKind::SizeMismatch => "size mismatch",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::FailedPrecondition => "failed precondition",
            ErrorKind::Unsafe => "unsafe input",
            ErrorKind::Io => "i/o error",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Cancelled => "cancelled",
        }
    }

    /// Whether the same call may succeed if made again later, unchanged:
    /// true only for [`ErrorKind::Unavailable`]. Every other class needs a
    /// change first (other input, credentials, a free lock, space).
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Unavailable)
    }

    /// Classifies an operating-system error.
    pub fn from_io(err: &std::io::Error) -> ErrorKind {
        use std::io::ErrorKind as K;
        match err.kind() {
            K::NotFound => ErrorKind::NotFound,
            K::AlreadyExists => ErrorKind::AlreadyExists,
            K::PermissionDenied => ErrorKind::PermissionDenied,
            K::InvalidInput | K::InvalidData | K::UnexpectedEof => ErrorKind::InvalidInput,
            K::Unsupported => ErrorKind::Unsupported,
            K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::TimedOut
            | K::HostUnreachable
            | K::NetworkUnreachable => ErrorKind::Unavailable,
            _ => ErrorKind::Io,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Implemented by every public error type of the family.
pub trait Classify {
    /// The class of this failure.
    fn kind(&self) -> ErrorKind;
}

impl<T: Classify + ?Sized> Classify for Box<T> {
    fn kind(&self) -> ErrorKind {
        (**self).kind()
    }
}

/// The class of a failure held as `&dyn Error`: the kind of the outermost
/// link of `err`'s chain (`err`, then each `source()`) that `registry`
/// recognises, or `None` when no link is an error of the family. The
/// catch-all [`ErrorKind::Io`] gives way to a more specific class found
/// deeper: a crate that wraps an `io::Error` carrying an error of a crate
/// it does not know (a registry's, under a store's `ContentError`) reports
/// `Io`, and the registry given here knows better.
///
/// `registry` is the `kind_of` of the highest crate of the family the caller
/// uses (`image_runtime::kind_of` recognises every crate below it).
/// An `io::Error` carrying an error of the family (its `source()` skips
/// what it carries) is classified by what it carries.
pub fn classify(err: &(dyn Error + 'static), registry: Registry) -> Option<ErrorKind> {
    let mut found = None;
    let mut link = Some(err);
    while let Some(e) = link {
        let carried = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| registry(inner));
        match carried.or_else(|| registry(e)) {
            Some(ErrorKind::Io) => {
                found.get_or_insert(ErrorKind::Io);
            }
            Some(k) => return Some(k),
            None => {}
        }
        link = e.source();
    }
    found
}

/// Displays an error and each of its sources, outermost first, joined by
/// `": "` (what `anyhow` prints for `{:#}`): the whole message of a failure
/// whose links each name only their own context.
///
/// ```
/// use image_core::error::Chain;
///
/// let e = "x@sha256:abc".parse::<image_core::Reference>().unwrap_err();
/// let text = Chain(&e).to_string();
/// assert!(text.starts_with("invalid digest \"sha256:abc\" in reference: "), "{text}");
/// ```
#[derive(Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut link = self.0.source();
        while let Some(e) = link {
            write!(f, ": {e}")?;
            link = e.source();
        }
        Ok(())
    }
}

impl fmt::Debug for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `" (value)"`, or nothing when the chain of `source` names `value`
/// already: for a message whose context is a value (a digest, a name, a
/// tag) its cause may also give, so that the printed chain names it once.
///
/// The cause names `value` only whole: where neither neighbour could
/// continue a name (`[A-Za-z0-9._:/@-]`; a `:` or `.` that ends a word, as
/// the chain's `: ` does, ends it). A value with a `:` (a digest, a
/// reference) is also named after `/`, `@` or `=`, as a blob's URL or
/// `name@digest` name it. So a tag `1` is not named by `app:10`, nor
/// `latest` by `app:latest-old`.
///
/// ```
/// use image_core::error::unless_named;
///
/// let cause = std::io::Error::other("blob sha256:abc not found");
/// assert_eq!(unless_named(&"sha256:abc", &cause), "");
/// assert_eq!(unless_named(&"sha256:def", &cause), " (sha256:def)");
/// assert_eq!(unless_named(&"a", &cause), " (a)");
/// ```
pub fn unless_named(value: &dyn fmt::Display, source: &(dyn Error + 'static)) -> String {
    let value = value.to_string();
    if value.is_empty() || names_whole(&Chain(source).to_string(), &value) {
        String::new()
    } else {
        format!(" ({value})")
    }
}

/// Whether `text` holds `value` with neither neighbour continuing it (see
/// [`unless_named`]). Each occurrence is tried, overlapping ones too.
fn names_whole(text: &str, value: &str) -> bool {
    fn in_name(c: char) -> bool {
        c.is_ascii_alphanumeric() || "._:/@-".contains(c)
    }
    let qualified = value.contains(':');
    let mut from = 0;
    while let Some(at) = text[from..].find(value) {
        let start = from + at;
        let end = start + value.len();
        let before = text[..start].chars().next_back();
        let mut after = text[end..].chars();
        let left = match before {
            None => true,
            Some(c) => !in_name(c) || (qualified && "/@=".contains(c)),
        };
        let right = match after.next() {
            None => true,
            Some(':' | '.') => !after.next().is_some_and(in_name),
            Some(c) => !in_name(c),
        };
        if left && right {
            return true;
        }
        // The next character boundary: occurrences may overlap.
        from = start + text[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// A crate's registry of its error types: the class of `err` when `err`
/// itself (not its sources) is one of them or of the crates below, as made
/// by [`classify_registry!`](crate::classify_registry).
pub type Registry = fn(&(dyn Error + 'static)) -> Option<ErrorKind>;

/// Makes a crate's error registry: a documented `pub fn kind_of` (a
/// [`Registry`]) that recognises the listed types by downcasting and asks
/// `below` (the registry of the crate beneath) for any other, and a
/// `pub const CLASSIFIED` naming the listed types, which a test compares
/// with the crate's `impl Classify for` items so that none is forgotten.
/// Types that exist only under a cargo feature follow the others after a
/// `;` and one `#[cfg(...)]`, so the list is written once:
/// `classify_registry!(below: b; A, B; #[cfg(feature = "x")] C)`.
///
/// ```
/// mod error {
///     #[derive(Debug, thiserror::Error)]
///     #[error("my failure")]
///     pub struct MyError;
///     impl image_core::Classify for MyError {
///         fn kind(&self) -> image_core::ErrorKind {
///             image_core::ErrorKind::NotFound
///         }
///     }
///     image_core::classify_registry!(below: image_core::kind_of; MyError);
/// }
/// let e: Box<dyn std::error::Error> = Box::new(error::MyError);
/// let kind = image_core::error::classify(&*e, error::kind_of);
/// assert_eq!(kind, Some(image_core::ErrorKind::NotFound));
/// assert_eq!(error::CLASSIFIED, ["MyError"]);
/// ```
#[macro_export]
macro_rules! classify_registry {
    (below: $below:expr; $($t:ty),+ $(,)?) => {
        $crate::classify_registry!(below: $below; $($t),+; #[cfg(all())]);
    };
    (below: $below:expr; $($t:ty),+ $(,)?; #[cfg($c:meta)] $($ct:ty),* $(,)?) => {
        /// The class of `err` when it is one of this crate's public errors
        /// or one of the crates below (a registry for
        /// `image_core::error::classify`).
        pub fn kind_of(
            err: &(dyn ::std::error::Error + 'static),
        ) -> ::core::option::Option<$crate::ErrorKind> {
            $(
                if let ::core::option::Option::Some(e) = err.downcast_ref::<$t>() {
                    return ::core::option::Option::Some($crate::Classify::kind(e));
                }
            )+
            #[cfg($c)]
            {
                $(
                    if let ::core::option::Option::Some(e) = err.downcast_ref::<$ct>() {
                        return ::core::option::Option::Some($crate::Classify::kind(e));
                    }
                )*
            }
            let below: $crate::error::Registry = $below;
            below(err)
        }

        /// The names of the error types this crate's `kind_of` recognises.
        #[cfg($c)]
        pub const CLASSIFIED: &[&str] =
            &[$(::core::stringify!($t),)+ $(::core::stringify!($ct)),*];
        /// The names of the error types this crate's `kind_of` recognises.
        #[cfg(not($c))]
        pub const CLASSIFIED: &[&str] = &[$(::core::stringify!($t)),+];
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::DigestError;
    use crate::kind_of;

    /// An error of no family type that wraps one that is.
    #[derive(Debug)]
    struct Outer(Box<dyn Error + 'static>);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer context")
        }
    }
    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn unless_named_omits_a_name_its_cause_names_whole_only() {
        let cause = |text: &str| std::io::Error::other(text.to_owned());
        // A short name inside other words is not named.
        assert_eq!(
            unless_named(&"a", &cause("cannot tag: store locked")),
            " (a)"
        );
        assert_eq!(unless_named(&"1", &cause("tag app:10 exists")), " (1)");
        assert_eq!(unless_named(&"v1", &cause("invalid tag \"v1.2\"")), " (v1)");
        // A name inside a longer one is not named.
        assert_eq!(
            unless_named(&"latest", &cause("tag app:latest-old exists")),
            " (latest)"
        );
        assert_eq!(
            unless_named(&"app:latest", &cause("tag my-app:latest exists")),
            " (app:latest)"
        );
        // A name the cause names whole is said once: between spaces,
        // quotes, at either end, before the chain's `: ` or a full stop.
        assert_eq!(unless_named(&"a", &cause("invalid tag \"a\"")), "");
        assert_eq!(unless_named(&"v1", &cause("v1: exists")), "");
        assert_eq!(unless_named(&"app:1", &cause("no image app:1.")), "");
        assert_eq!(unless_named(&"app:1", &cause("tag app:1")), "");
        // A digest (or a reference) at the end of a URL's path or after
        // `@` is named, as in a blob's URL.
        let d = format!("sha256:{}", "ab".repeat(32));
        let url = format!("GET http://r/v2/a/blobs/{d}: 404");
        assert_eq!(unless_named(&d, &cause(&url)), "");
        assert_eq!(unless_named(&d, &cause(&format!("x@{d} gone"))), "");
        // A short name at a URL's end is not: it may be any segment.
        assert_eq!(unless_named(&"a", &cause("GET http://r/v2/a")), " (a)");
        // Every occurrence is tried, not the first only.
        assert_eq!(unless_named(&"a", &cause("tag ab: \"a\" taken")), "");
    }

    fn digest_error() -> DigestError {
        "md5:abc".parse::<crate::Digest>().unwrap_err()
    }

    #[test]
    fn only_unavailable_is_retryable() {
        let all = ErrorKind::ALL;
        let retryable: Vec<_> = all.iter().filter(|k| k.is_retryable()).collect();
        assert_eq!(retryable, [&ErrorKind::Unavailable]);
        let names: std::collections::HashSet<_> = all.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), all.len(), "each class has its own name");
    }

    #[test]
    fn network_failures_are_unavailable() {
        for k in [
            std::io::ErrorKind::ConnectionRefused,
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::TimedOut,
        ] {
            let e = std::io::Error::from(k);
            assert_eq!(Classify::kind(&e), ErrorKind::Unavailable, "{k:?}");
        }
    }

    #[test]
    fn classify_finds_the_outermost_family_error() {
        let e = Outer(Box::new(digest_error()));
        assert_eq!(classify(&e, kind_of), Some(ErrorKind::Unsupported));
        let plain = Outer(Box::new(std::fmt::Error));
        assert_eq!(classify(&plain, kind_of), None);
    }

    #[test]
    fn classify_looks_inside_an_io_error() {
        // io::Error::source() skips what it carries: classify looks at it.
        let io = std::io::Error::other(digest_error());
        let e = Outer(Box::new(io));
        assert_eq!(classify(&e, kind_of), Some(ErrorKind::Unsupported));
    }

    #[test]
    fn classify_lets_the_catch_all_io_give_way_to_a_deeper_class() {
        // As a store's read error (class Io: it does not know what its io
        // error carries) over a registry's "not found": here `Outer` is the
        // store's error and a plain `fmt::Error` the registry's.
        fn registry(e: &(dyn Error + 'static)) -> Option<ErrorKind> {
            if e.is::<Outer>() {
                Some(ErrorKind::Io)
            } else if e.is::<std::fmt::Error>() {
                Some(ErrorKind::NotFound)
            } else {
                None
            }
        }
        let e = Outer(Box::new(std::fmt::Error));
        assert_eq!(classify(&e, registry), Some(ErrorKind::NotFound));
        // Io stays when nothing deeper says more.
        let plain = std::io::Error::other("disk");
        assert_eq!(classify(&plain, kind_of), Some(ErrorKind::Io));
    }

    #[test]
    fn chain_prints_each_link_once() {
        let e = Outer(Box::new(digest_error()));
        let text = Chain(&e).to_string();
        assert_eq!(text, format!("outer context: {}", digest_error()));
    }
}
