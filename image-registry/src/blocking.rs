//! A blocking facade over the [asynchronous client](crate::Client), for
//! blocking callers and imagectl.
//!
//! Every method blocks the calling thread until the request is done. The
//! client owns a private multi-threaded tokio runtime (two workers), so it
//! must not be called from inside another runtime's asynchronous task
//! (use [`crate::Client`] there).

use image_core::{Descriptor, Digest, Document, Reference};

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
    /// [`RegistryError::Client`]; an I/O error starting the runtime is
    /// reported the same way.
    pub fn from_builder(builder: ClientBuilder) -> Result<Client, RegistryError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("image-registry")
            .enable_all()
            .build()
            .map_err(|e| RegistryError::InvalidAnswer {
                url: e.to_string(),
                what: "runtime",
            })?;
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
