//! The test fixtures shared by the crates of the image family, in one place
//! instead of a copy in each crate's `tests/`: finding a tool and skipping
//! loudly without it (failing under `CI=true`), bounded child processes,
//! a tar writer that writes whatever it is told, a seccomp filter that
//! refuses one system call, the check that an error's
//! chain says nothing twice ([`chain`]), compression of test
//! inputs, busybox-static root filesystems, and, behind features, a store
//! in a temporary directory, the family's conformance suites and a
//! registry with a fault-injecting proxy.
//!
//! A dev-dependency only (`publish = false`): no library of the family
//! depends on it for its build, which the dependency-direction test checks.
//!
//! ```
//! use image_testsupport::tar::TarBuf;
//!
//! let layer = TarBuf::new().dir("etc").file("etc/hostname", b"box\n").end();
//! assert_eq!(layer.len() % 512, 0);
//! ```
//!
//! # Features
//! - `store`: [`store`] (an `OciDir` in a temporary directory, deterministic
//!   data, the content store conformance suite of `image_store::testsuite`).
//! - `overlay`: [`overlay`] (the snapshotter conformance suite of
//!   `image_overlay::testsuite`).
//! - `runtime`: [`runtime`] (the backend conformance suite of
//!   `image_runtime::testsuite`).
//! - `registry`: [`registry`] (the distribution server without auth, with
//!   Basic auth, token auth or TLS, and a fault-injecting proxy).
// Unsafe code only where a test needs a system call rustix does not
// offer (`seccomp`), each with a SAFETY comment.
#![deny(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // fixtures panic on failure

pub mod chain;
pub mod codec;
pub mod process;
pub mod rng;
pub mod rootfs;
pub mod scratch;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub mod seccomp;
pub mod tar;
pub mod tools;

#[cfg(feature = "registry")]
pub mod registry;
#[cfg(feature = "store")]
pub mod store;

/// The numbers of a generated test: xorshift64 from a fixed, non-zero
/// `seed`, so a failing round replays from its seed.
///
/// ```
/// let mut next = image_testsupport::xorshift(0x2545_f491_4f6c_dd1d);
/// assert_ne!(next(), next());
/// ```
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// The backend conformance suite, re-exported from `image_runtime`.
#[cfg(feature = "runtime")]
pub mod runtime {
    pub use image_runtime::testsuite::*;
}

/// The snapshotter conformance suite, re-exported from `image_overlay`.
#[cfg(feature = "overlay")]
pub mod overlay {
    pub use image_overlay::testsuite::*;
}
