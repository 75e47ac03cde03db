//! A blocking facade over the [asynchronous client](crate::Client), for
//! blocking callers and imagectl.
//!
//! Every method blocks the calling thread until the request is done. The
//! client owns a private multi-threaded tokio runtime (two workers), so it
//! must not be called from inside another runtime's asynchronous task
//! (use [`crate::Client`] there).

use std::io::{self, Read};

use image_core::{Descriptor, DescriptorExt, Digest, Document, Reference, VerifyingReader};

use crate::client::BlobStream;

use crate::client::{Client as AsyncClient, ClientBuilder};
use crate::error::RegistryError;
use crate::pull::{PullError, PullOptions, PullReport, PullStore};
use crate::push::{PushError, PushOptions, PushReport};

/// A blocking registry client: [`crate::Client`] on a private runtime.
#[derive(Debug)]
pub struct Client {
    client: AsyncClient,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    /// Wraps an asynchronous client in a new private runtime.
    ///
    /// # Errors
    /// The runtime cannot start (no threads).
    pub fn new(client: AsyncClient) -> std::io::Result<Client> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("image-registry")
            .enable_all()
            .build()?;
        Ok(Client { client, runtime })
    }

    /// Builds the asynchronous client (inside the runtime, as reqwest
    /// needs) and wraps it.
    ///
    /// # Errors
    /// [`RegistryError::Client`]; [`RegistryError::Runtime`] when the
    /// runtime cannot start.
    pub fn from_builder(builder: ClientBuilder) -> Result<Client, RegistryError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("image-registry")
            .enable_all()
            .build()
            .map_err(|source| RegistryError::Runtime { source })?;
        let client = {
            let _guard = runtime.enter();
            builder.build()?
        };
        Ok(Client { client, runtime })
    }

    /// The asynchronous client inside.
    pub fn as_async(&self) -> &AsyncClient {
        &self.client
    }

    /// Blocks on [`crate::Client::ping`].
    ///
    /// # Errors
    /// As the asynchronous call.
    pub fn ping(&self, domain: &str) -> Result<(), RegistryError> {
        self.runtime.block_on(self.client.ping(domain))
    }

    /// Blocks on [`crate::Client::get_manifest`].
    ///
    /// # Errors
    /// As the asynchronous call.
    pub fn get_manifest(&self, reference: &Reference) -> Result<Document, RegistryError> {
        self.runtime.block_on(self.client.get_manifest(reference))
    }

    /// Blocks on [`crate::Client::head_manifest`].
    ///
    /// # Errors
    /// As the asynchronous call.
    pub fn head_manifest(
        &self,
        reference: &Reference,
    ) -> Result<Option<Descriptor>, RegistryError> {
        self.runtime.block_on(self.client.head_manifest(reference))
    }

    /// Blocks on [`crate::Client::blob_size`].
    ///
    /// # Errors
    /// As the asynchronous call.
    pub fn blob_size(
        &self,
        reference: &Reference,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        self.runtime
            .block_on(self.client.blob_size(reference, digest))
    }

    /// Blocks on [`crate::Client::tags`].
    ///
    /// # Errors
    /// As the asynchronous call.
    pub fn tags(&self, reference: &Reference) -> Result<Vec<String>, RegistryError> {
        self.runtime.block_on(self.client.tags(reference))
    }

    /// Blocks on [`crate::Client::catalog`].
    ///
    /// # Errors
    /// As the asynchronous call.
    pub fn catalog(&self, domain: &str) -> Result<Vec<String>, RegistryError> {
        self.runtime.block_on(self.client.catalog(domain))
    }

    /// Blocks on [`crate::Client::referrers`].
    ///
    /// # Errors
    /// As the asynchronous call.
    pub fn referrers(
        &self,
        reference: &Reference,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, RegistryError> {
        self.runtime
            .block_on(self.client.referrers(reference, digest, artifact_type))
    }

    /// Blocks on [`crate::Client::delete_manifest`].
    ///
    /// # Errors
    /// As the asynchronous call.
    pub fn delete_manifest(
        &self,
        reference: &Reference,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        self.runtime
            .block_on(self.client.delete_manifest(reference, digest))
    }

    /// Blocks on [`crate::Client::delete_blob`].
    ///
    /// # Errors
    /// As the asynchronous call.
    pub fn delete_blob(&self, reference: &Reference, digest: &Digest) -> Result<(), RegistryError> {
        self.runtime
            .block_on(self.client.delete_blob(reference, digest))
    }

    /// Opens the blob `descriptor` names in `reference`'s repository as a
    /// blocking stream of its bytes, verified: the read that reaches the
    /// end fails (an `InvalidData` I/O error wrapping an
    /// [`image_core::VerifyError`]) when the bytes are not the descriptor's
    /// digest and size, and no more than its size is ever read. Nothing is
    /// written anywhere; a cut connection is an I/O error (no resume).
    ///
    /// The reader owns a handle of this client's runtime, so it may be
    /// moved to another thread and outlive the borrow (not the client).
    /// For progress and a stop between reads, wrap it in
    /// [`Tracker::reader`](image_core::Tracker::reader) (a read waiting for
    /// the network is not interrupted).
    ///
    /// # Errors
    /// [`RegistryError::Document`] for a descriptor whose digest is
    /// invalid; the errors of [`crate::Client::get_blob`].
    pub fn blob_reader(
        &self,
        reference: &Reference,
        descriptor: &Descriptor,
    ) -> Result<BlobReader, RegistryError> {
        let digest = descriptor
            .checked_digest()
            .map_err(|source| RegistryError::Document {
                url: format!("{}/{}", reference.domain(), reference.repository()),
                source,
            })?;
        let body = self.blob_body(reference, descriptor)?;
        Ok(BlobReader {
            inner: Body::Verified(Box::new(VerifyingReader::new(
                body,
                digest,
                Some(descriptor.size()),
            ))),
        })
    }

    /// Opens the blob as [`blob_reader`](Client::blob_reader) does, without
    /// hashing it: for a caller that hashes what it reads and compares the
    /// digest and size itself (an unpack, the analysis), so the blob is
    /// hashed once, not twice. At most the descriptor's size is read.
    ///
    /// # Security
    /// The bytes are not known to be the blob until the caller's check
    /// passes: a caller that does not check must use `blob_reader`.
    ///
    /// # Errors
    /// The errors of [`crate::Client::get_blob`].
    pub fn blob_reader_unverified(
        &self,
        reference: &Reference,
        descriptor: &Descriptor,
    ) -> Result<BlobReader, RegistryError> {
        Ok(BlobReader {
            inner: Body::Plain(self.blob_body(reference, descriptor)?),
        })
    }

    fn blob_body(
        &self,
        reference: &Reference,
        descriptor: &Descriptor,
    ) -> Result<BlobBody, RegistryError> {
        let stream = self
            .runtime
            .block_on(self.client.get_blob(reference, descriptor, 0))?;
        Ok(BlobBody {
            runtime: self.runtime.handle().clone(),
            stream,
            chunk: bytes::Bytes::new(),
        })
    }

    /// Blocks on [`crate::pull()`].
    ///
    /// # Errors
    /// As the asynchronous call.
    pub fn pull<S: PullStore + ?Sized>(
        &self,
        reference: &Reference,
        store: &S,
        options: &PullOptions,
    ) -> Result<PullReport, PullError> {
        self.runtime
            .block_on(crate::pull::pull(&self.client, reference, store, options))
    }

    /// Blocks on [`crate::push()`].
    ///
    /// # Errors
    /// As the asynchronous call.
    pub fn push<S: image_store::Provider + Sync + ?Sized>(
        &self,
        store: &S,
        source: &Descriptor,
        dest: &Reference,
        options: &PushOptions,
    ) -> Result<PushReport, PushError> {
        self.runtime.block_on(crate::push::push(
            &self.client,
            store,
            source,
            dest,
            options,
        ))
    }

    /// Blocks on [`crate::copy()`].
    ///
    /// # Errors
    /// As the asynchronous call.
    pub fn copy<S, D>(
        &self,
        src: &crate::Location<'_, S>,
        dst: &crate::Location<'_, D>,
        options: &crate::CopyOptions,
    ) -> Result<crate::CopyReport, crate::CopyError>
    where
        S: image_store::Provider + image_store::TagStore + Sync,
        D: PullStore,
    {
        self.runtime
            .block_on(crate::copy::copy(&self.client, src, dst, options))
    }
}

/// A blob streamed from a registry, verified as it is read (see
/// [`Client::blob_reader`]) or not ([`Client::blob_reader_unverified`]).
#[derive(Debug)]
pub struct BlobReader {
    inner: Body,
}

#[derive(Debug)]
enum Body {
    Verified(Box<VerifyingReader<BlobBody>>),
    Plain(BlobBody),
}

impl BlobReader {
    /// Whether the whole blob was read and is the descriptor's (always
    /// false for an unverified reader).
    pub fn is_verified(&self) -> bool {
        match &self.inner {
            Body::Verified(v) => v.is_verified(),
            Body::Plain(_) => false,
        }
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Body::Verified(v) => v.read(buf),
            Body::Plain(p) => p.read(buf),
        }
    }
}

/// The body of a blob GET as a blocking reader, chunk by chunk.
#[derive(Debug)]
struct BlobBody {
    runtime: tokio::runtime::Handle,
    stream: BlobStream,
    chunk: bytes::Bytes,
}

impl Read for BlobBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.runtime.block_on(self.stream.chunk()) {
                Ok(Some(next)) => self.chunk = next,
                Ok(None) => return Ok(0),
                Err(e) => return Err(io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}
