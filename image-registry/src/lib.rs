//! # image-registry
//!
//! An OCI distribution client: talk to registries (CNCF distribution,
//! Harbor, GHCR, ECR...) and pull images into an image-store.
//!
//! - [`Client`]: the asynchronous client (tokio, reqwest, rustls with the
//!   system's roots through rustls-native-certs plus the CAs given in the
//!   [`RegistryConfig`]): ping, manifests by tag or digest with Accept
//!   negotiation (schema 1 refused), HEAD, blobs with redirects followed
//!   without credentials to other hosts, tags and catalog with pagination,
//!   referrers (with the tag-schema fallback), delete.
//! - [`blocking::Client`]: the same calls, each **blocking** its caller on
//!   a private runtime.
//! - [`pull()`](pull::pull): an image into a store, verified, resumable,
//!   parallel, under a lease.
//! - [`push()`](push::push): an image from a store to a registry, blobs
//!   skipped when present, mounted from another repository when asked,
//!   uploaded whole or in resumable chunks, in parallel, tag last.
//! - [`copy()`](copy::copy): an image between registries, stores and
//!   OCI layouts, every platform or one, with its referrers on request.
//! - [`RegistryConfig`]: mirrors and insecure hosts (registries.conf's
//!   shape), loopback over plain HTTP only when asked.
//! - [`DockerConfig`] and [`Credentials`]: Docker's and containers' auth
//!   files and credential helpers; [`Secret`] keeps secrets out of Debug,
//!   Display and errors.
//!
//! References resolve as Docker resolves them: `busybox` is
//! `docker.io/library/busybox`, reached at `registry-1.docker.io`.
//!
//! # Blocking, progress and privilege
//!
//! [`Client`], [`pull()`](pull::pull), [`push()`](push::push) and
//! [`copy()`](copy::copy) are async (tokio): a pull's store writes and
//! commits, and a push's store reads, run on tokio's blocking pool, not on
//! the executor; a copy that goes through an OCI archive or between two
//! stores does its file work inline, so await it on a multi-threaded
//! runtime. [`blocking::Client`] blocks its caller on a private runtime
//! and must not be called from inside another runtime's task. Pull, push
//! and copy take a [`Tracker`](image_core::Tracker) in their options
//! (progress per blob; the interrupt stops them between chunks with an
//! error of class `Cancelled`, a pull's partial ingest kept for the next
//! to resume); dropping their future stops them too. Nothing needs root.
//! Every error reports its [`ErrorKind`](image_core::ErrorKind)
//! (`Unauthenticated`, `NotFound`, `Unavailable` for what a retry may
//! cure, `Cancelled`...): with [`kind_of`] and
//! [`image_core::error::classify`] behind a `&dyn Error`.
//!
//! ```no_run
//! use image_core::Reference;
//! use image_registry::{blocking, Client, PullOptions, RegistryConfig};
//! use image_store::{OciDir, TagStore};
//!
//! let store = OciDir::open_or_create("/var/lib/images")?;
//! // A local registry over plain HTTP.
//! let config = RegistryConfig::new().with_loopback_http(true);
//! let client = blocking::Client::from_builder(Client::builder().config(config))?;
//! let reference = Reference::parse_name("127.0.0.1:5000/app:1")?;
//! let report = client.pull(&reference, &store, &PullOptions::default())?;
//! assert_eq!(report.tag.as_deref(), Some("127.0.0.1:5000/app:1"));
//! store.resolve_tag("127.0.0.1:5000/app:1")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod auth;
mod blob_writer;
pub mod blocking;
pub mod client;
pub mod config;
pub mod copy;
pub mod error;
pub mod pull;
pub mod push;
pub mod referrers;
pub mod secret;
pub mod sink;

/// The `bytes` crate, whose `Bytes` a [`BlobStream`] yields chunk by chunk:
/// re-exported so that a caller names the same version without a
/// dependency of its own (as image-core re-exports `oci_spec`).
pub use bytes;

pub use auth::{Challenge, CredentialError, Credentials, DockerConfig};
pub use client::{BlobStream, Client, ClientBuilder, RetryPolicy};
pub use config::{ConfigError, Endpoint, HostConfig, Mirror, RegistryConfig};
pub use copy::{copy, CopyError, CopyOptions, CopyReport, Location};
pub use error::RegistryError;
pub use pull::{pull, PullError, PullOptions, PullReport, PullStore};
pub use push::{push, PushError, PushOptions, PushReport};
pub use secret::Secret;
pub use sink::{LayerFeed, LayerSink};

image_core::classify_registry!(
    below: image_store::kind_of;
    crate::auth::CredentialError,
    crate::config::ConfigError,
    crate::copy::CopyError,
    crate::error::RegistryError,
    crate::pull::PullError,
    crate::push::PushError,
);
