//! The error classification shared by every crate of the family.
//!
//! Each operation has its own error enum carrying its context (a path, a
//! digest, a reference, a line and column). All of them also report one
//! [`ErrorKind`] through [`Classify`], so a caller can branch on the class of
//! a failure (retry on `Io`, create on `NotFound`, report on `InvalidInput`)
//! without matching on every crate's variants.

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
    /// The operation was stopped by its caller (its interrupt flag was
    /// set); it left nothing half-written.
    Cancelled,
}

impl ErrorKind {
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
            ErrorKind::Cancelled => "cancelled",
        }
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

impl Classify for std::io::Error {
    fn kind(&self) -> ErrorKind {
        // Errors of this family travelling inside an io::Error keep their class.
        if let Some(inner) = self.get_ref() {
            if let Some(d) = inner.downcast_ref::<crate::digest::DigestError>() {
                return d.kind();
            }
            if let Some(v) = inner.downcast_ref::<crate::digest::VerifyError>() {
                return v.kind();
            }
            if let Some(c) = inner.downcast_ref::<crate::progress::Cancelled>() {
                return c.kind();
            }
        }
        ErrorKind::from_io(self)
    }
}

impl<T: Classify + ?Sized> Classify for Box<T> {
    fn kind(&self) -> ErrorKind {
        (**self).kind()
    }
}
