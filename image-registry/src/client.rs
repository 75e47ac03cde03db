//! The asynchronous distribution-spec client.
//!
//! One [`Client`] holds the HTTP connections (rustls; the system's roots
//! through rustls-native-certs plus the CAs of the [`RegistryConfig`]), the
//! credentials, and the auth state of each registry host (its challenge and
//! the bearer tokens it gave, reused until they expire). Every call is
//! `async`; [`blocking::Client`](crate::blocking::Client) wraps them for
//! blocking callers.
//!
//! # Requests
//! Each request goes through one path: the endpoint's scheme (HTTPS, or for
//! an insecure endpoint HTTPS without verification and then plain HTTP),
//! the `Authorization` header for the host and scope, redirects followed by
//! this client itself (the header is sent only to the origin the request
//! was made to, HTTPS never downgrades to HTTP, at most
//! [`MAX_REDIRECTS`] hops), a 401 of the registry's own origin answered
//! once with a new token (a redirect target's challenge is never taken
//! for the registry's), and
//! retries with exponential backoff and full jitter on connection failures,
//! 408, 429 (its `Retry-After`, seconds or an HTTP date, honoured, capped) and 5xx answers
//! ([`RetryPolicy`]). Reads go to the registry's mirrors first, then to the
//! registry.
//!
//! # Security
//! Documents are read up to [`MAX_DOCUMENT_SIZE`], JSON lists up to
//! [`MAX_LIST_PAGE`] a page and [`MAX_LIST_ENTRIES`] in all over at most
//! [`MAX_LIST_PAGES`] pages, pagination links only on the same origin, and
//! blobs never past their descriptor's size. Secrets are [`Secret`]s and
//! URLs in errors lose their query.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use image_core::{Classify, Descriptor, Digest, Document, Interrupt, MediaType, Reference};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, LOCATION, RANGE};
use reqwest::{Method, StatusCode, Url};

use crate::auth::{Challenge, Credentials, DockerConfig};
use crate::config::{Endpoint, RegistryConfig};
use crate::error::RegistryError;
use crate::secret::Secret;

pub use image_store::refs::MAX_DOCUMENT_SIZE;

/// The most bytes of manifests and indexes one image (an index and
/// everything under it) holds as pull, push and copy walk it: each is
/// up to [`MAX_DOCUMENT_SIZE`], and an index may list a thousand.
pub const MAX_IMAGE_DOCUMENTS: u64 = 64 * 1024 * 1024;

/// The longest redirect chain followed.
pub const MAX_REDIRECTS: usize = 10;
/// The largest page of a tags list or catalog read.
pub const MAX_LIST_PAGE: u64 = 4 * 1024 * 1024;
/// The most pages of one list followed.
pub const MAX_LIST_PAGES: u64 = 1000;
/// The most entries of one list kept.
pub const MAX_LIST_ENTRIES: u64 = 1_000_000;
/// The largest token server answer read.
const MAX_TOKEN_ANSWER: u64 = 1024 * 1024;
/// The largest error body read to find its distribution error code.
const MAX_ERROR_BODY: u64 = 64 * 1024;
/// A token is not reused this close to its expiry.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);
/// The lifetime of a token whose answer gives none or less (the spec's
/// default and least: "a token should never be returned with less than
/// 60 seconds to live"; Docker's client raises a shorter one to it too).
const MIN_TOKEN_LIFETIME: i64 = 60;
/// The longest a token is kept, whatever its answer says.
const MAX_TOKEN_LIFETIME: i64 = 24 * 3600;

/// The manifest media types asked for, in order of preference.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// How failed requests are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// The first backoff ceiling; each retry doubles it.
    pub base_delay: Duration,
    /// The largest wait, for backoff and for `Retry-After` alike.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0 for the first): uniformly
    /// random up to `base * 2^retry` (full jitter), capped, or what the
    /// server asked for (capped too).
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(d) = retry_after {
            return d.min(self.max_delay);
        }
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << retry.min(20))
            .min(self.max_delay);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

/// What a client is made with: its hosts configuration, credentials and
/// retry policy.
#[derive(Debug, Default)]
pub struct ClientBuilder {
    config: RegistryConfig,
    docker_config: DockerConfig,
    credentials: HashMap<String, Credentials>,
    retry: RetryPolicy,
    user_agent: Option<String>,
}

impl ClientBuilder {
    /// The hosts configuration (mirrors, insecure hosts, loopback, CAs).
    pub fn config(mut self, config: RegistryConfig) -> ClientBuilder {
        self.config = config;
        self
    }

    /// Auth files to find credentials in (none by default; see
    /// [`DockerConfig::load_default`]).
    pub fn docker_config(mut self, docker_config: DockerConfig) -> ClientBuilder {
        self.docker_config = docker_config;
        self
    }

    /// Credentials for registry `domain`, before any auth file.
    pub fn credentials(
        mut self,
        domain: impl Into<String>,
        credentials: Credentials,
    ) -> ClientBuilder {
        self.credentials.insert(domain.into(), credentials);
        self
    }

    /// The retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> ClientBuilder {
        self.retry = retry;
        self
    }

    /// The `User-Agent` header.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> ClientBuilder {
        self.user_agent = Some(user_agent.into());
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    /// [`RegistryError::Client`] for a CA certificate that is not PEM.
    pub fn build(self) -> Result<Client, RegistryError> {
        let agent = self
            .user_agent
            .unwrap_or_else(|| concat!("image-registry/", env!("CARGO_PKG_VERSION")).to_owned());
        let base = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(agent.clone())
                .connect_timeout(Duration::from_secs(30))
                .read_timeout(Duration::from_secs(120))
                .no_proxy()
        };
        let mut verifying = base().tls_built_in_native_certs(true);
        for pem in self.config.ca_certificates() {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|source| RegistryError::Client { source })?;
            verifying = verifying.add_root_certificate(cert);
        }
        let verifying = verifying
            .build()
            .map_err(|source| RegistryError::Client { source })?;
        let unverified = base()
            .danger_accept_invalid_certs(true)
            .build()
            .map_err(|source| RegistryError::Client { source })?;
        Ok(Client {
            inner: Arc::new(Inner {
                config: self.config,
                docker_config: self.docker_config,
                credentials: self.credentials,
                looked_up: Mutex::new(HashMap::new()),
                retry: self.retry,
                verifying,
                unverified,
                hosts: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// What is known of one registry host: its scheme and auth challenge, and
/// the tokens it gave, by scope.
#[derive(Default)]
struct HostState {
    scheme: Option<&'static str>,
    challenge: Option<Challenge>,
    tokens: HashMap<String, Token>,
}

#[derive(Clone)]
struct Token {
    value: Secret,
    expires: Instant,
}

/// How long a client keeps the credentials its Docker config gave for a
/// registry and repository before it looks them up again. A credential
/// helper (`docker-credential-*`) is a process run for each lookup, and a
/// registry asking for Basic authentication needs the credentials on
/// every request: a push of a few layers ran the helper a dozen times.
/// Docker's CLI looks them up once per command; a client may live much
/// longer, so what it keeps expires (a helper's short-lived password is
/// looked up again), and a 401 from the registry or its token server has
/// them looked up again for the next try (a Basic registry that refuses
/// them gets one more round, with what the lookup gives then).
pub const CREDENTIALS_KEPT_FOR: Duration = Duration::from_secs(300);

/// The most lookups a client keeps (registry and repository pairs); when
/// full, the expired ones go, and if none has, all of them.
const MAX_KEPT_CREDENTIALS: usize = 1024;

struct Inner {
    config: RegistryConfig,
    docker_config: DockerConfig,
    credentials: HashMap<String, Credentials>,
    /// What `docker_config` gave, by registry and repository, and when.
    looked_up: Mutex<HashMap<(String, String), (Credentials, Instant)>>,
    retry: RetryPolicy,
    verifying: reqwest::Client,
    unverified: reqwest::Client,
    hosts: Mutex<HashMap<String, HostState>>,
}

/// An asynchronous registry client; cheap to clone (the clones share
/// connections and tokens).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.config)
            .field("credentials", &self.inner.credentials)
            .field("retry", &self.inner.retry)
            .finish_non_exhaustive()
    }
}

/// A request's target: an endpoint, the path after `/v2/`, and the token
/// scope it needs.
pub(crate) struct Target<'a> {
    pub(crate) endpoint: &'a Endpoint,
    /// The registry domain (for credentials).
    pub(crate) domain: &'a str,
    /// The repository on the registry (for credentials).
    pub(crate) repository: &'a str,
    /// The path after `/v2/`, with its query.
    pub(crate) path: String,
    /// The token scope (several separated by spaces).
    pub(crate) scope: Option<String>,
}

/// A blob being downloaded: its bytes from [`offset`](BlobStream::offset).
pub struct BlobStream {
    response: reqwest::Response,
    offset: u64,
    remaining: u64,
    url: String,
}

impl std::fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStream")
            .field("url", &self.url)
            .field("offset", &self.offset)
            .field("remaining", &self.remaining)
            .finish()
    }
}

impl BlobStream {
    /// Where the bytes start: the offset asked for when the registry
    /// honoured the Range request, 0 when it sent the whole blob.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next chunk, `None` at the end (a [`bytes::Bytes`], whose crate
    /// is re-exported as `image_registry::bytes`). Never yields bytes past
    /// the descriptor's size: a longer body is an error.
    ///
    /// # Errors
    /// [`RegistryError::Transport`] when the body is cut;
    /// [`RegistryError::TooLarge`] past the descriptor's size.
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, RegistryError> {
        let next = self
            .response
            .chunk()
            .await
            .map_err(|source| RegistryError::transport("GET", self.url.clone(), source))?;
        let Some(chunk) = next else {
            return Ok(None);
        };
        if chunk.len() as u64 > self.remaining {
            return Err(RegistryError::TooLarge {
                what: "blob",
                url: self.url.clone(),
                limit: self.offset + self.remaining,
            });
        }
        self.remaining -= chunk.len() as u64;
        Ok(Some(chunk))
    }
}

impl Client {
    /// A builder.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client with `config` and the default auth files
    /// ([`DockerConfig::load_default`]).
    ///
    /// # Errors
    /// An auth file that cannot be read; a bad CA certificate.
    pub fn new(config: RegistryConfig) -> Result<Client, RegistryError> {
        let docker_config =
            DockerConfig::load_default().map_err(|source| RegistryError::Credentials {
                domain: "(auth files)".into(),
                source,
            })?;
        Client::builder()
            .config(config)
            .docker_config(docker_config)
            .build()
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.inner.retry
    }

    /// The hosts configuration.
    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
    }

    fn hosts(&self) -> std::sync::MutexGuard<'_, HashMap<String, HostState>> {
        self.inner
            .hosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks that registry `domain` speaks the distribution API (`GET
    /// /v2/`), authenticating as it asks.
    ///
    /// # Errors
    /// [`RegistryError`].
    pub async fn ping(&self, domain: &str) -> Result<(), RegistryError> {
        let endpoint = self.inner.config.origin(domain);
        let target = Target {
            endpoint: &endpoint,
            domain,
            repository: "",
            path: String::new(),
            scope: None,
        };
        let resp = self.send(&target, Method::GET, HeaderMap::new()).await?;
        check_status(Method::GET, resp).await.map(drop)
    }

    /// Fetches the manifest or index `reference` names (by its digest when
    /// it has one, else its tag, else `latest`), checking a digest asked for
    /// and that the document is of the kind (manifest or index) its
    /// `Content-Type` names, and of one kind only (no index with a
    /// manifest's `config` or `layers`).
    ///
    /// # Errors
    /// [`RegistryError::Document`] for schema 1 (`Unsupported`), a document
    /// of another kind than its `Content-Type` (`InvalidInput`) and other
    /// unusable documents; `DigestMismatch`; `TooLarge` past
    /// [`MAX_DOCUMENT_SIZE`]; any request error.
    pub async fn get_manifest(&self, reference: &Reference) -> Result<Document, RegistryError> {
        self.get_document(reference, None).await
    }

    /// [`get_manifest`](Client::get_manifest) of a document a descriptor
    /// of media type `described` names: its kind must agree with that
    /// type too.
    pub(crate) async fn get_document(
        &self,
        reference: &Reference,
        described: Option<&MediaType>,
    ) -> Result<Document, RegistryError> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        let what = manifest_ref(reference);
        let (url, resp) = self
            .read(
                reference,
                &format!("manifests/{what}"),
                Method::GET,
                headers,
            )
            .await?;
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| MediaType::from(v.split(';').next().unwrap_or(v).trim()));
        let body = read_bounded(resp, MAX_DOCUMENT_SIZE, "manifest", &url).await?;
        if let Some(expected) = reference.digest() {
            let found = Digest::of_bytes(expected.algorithm(), &body);
            if &found != expected {
                return Err(RegistryError::DigestMismatch {
                    url,
                    expected: expected.clone(),
                    found,
                });
            }
        }
        if content_type.as_ref().is_some_and(MediaType::is_schema1) {
            return Err(RegistryError::Document {
                url,
                source: image_core::ParseError::Schema1,
            });
        }
        let hint = content_type.filter(|m| m.is_index() || m.is_manifest());
        let doc = Document::from_bytes(body, hint.as_ref())
            .and_then(|doc| {
                unambiguous(&doc)?;
                for expected in hint.iter().chain(described) {
                    kind_agrees(&doc, expected)?;
                }
                Ok(doc)
            })
            .map_err(|source| RegistryError::Document { url, source })?;
        // Keyed by the digest it was fetched by (verified above), of
        // whatever algorithm, so that it is stored and pushed under it.
        Ok(match reference.digest() {
            Some(expected) => doc.with_algorithm(expected.algorithm()),
            None => doc,
        })
    }

    /// Asks whether the manifest `reference` names exists (`HEAD`), and
    /// for its descriptor (digest, media type and size from the headers).
    ///
    /// # Errors
    /// A request error other than 404; headers that do not describe it.
    pub async fn head_manifest(
        &self,
        reference: &Reference,
    ) -> Result<Option<Descriptor>, RegistryError> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        let what = manifest_ref(reference);
        let (url, resp) = match self
            .read(
                reference,
                &format!("manifests/{what}"),
                Method::HEAD,
                headers,
            )
            .await
        {
            Err(e) if e.kind() == image_core::ErrorKind::NotFound => return Ok(None),
            other => other?,
        };
        let invalid = |what| RegistryError::InvalidAnswer {
            url: url.clone(),
            what,
        };
        let h = resp.headers();
        let digest = match h.get("docker-content-digest").and_then(|v| v.to_str().ok()) {
            Some(d) => d
                .parse::<Digest>()
                .map_err(|_| invalid("Docker-Content-Digest header"))?,
            None => reference
                .digest()
                .cloned()
                .ok_or_else(|| invalid("answer without Docker-Content-Digest"))?,
        };
        let size = resp
            .content_length()
            .ok_or_else(|| invalid("answer without Content-Length"))?;
        let media_type = h
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| MediaType::from(v.split(';').next().unwrap_or(v).trim()))
            .ok_or_else(|| invalid("answer without Content-Type"))?;
        Ok(Some(image_core::manifest::descriptor(
            &media_type,
            &digest,
            size,
        )))
    }

    /// The size of blob `digest` in `reference`'s repository, or `None`
    /// when it is not there (`HEAD`).
    ///
    /// # Errors
    /// A request error other than 404.
    pub async fn blob_size(
        &self,
        reference: &Reference,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        match self
            .read(
                reference,
                &format!("blobs/{digest}"),
                Method::HEAD,
                HeaderMap::new(),
            )
            .await
        {
            Err(e) if e.kind() == image_core::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
            Ok((url, resp)) => {
                resp.content_length()
                    .map(Some)
                    .ok_or(RegistryError::InvalidAnswer {
                        url,
                        what: "answer without Content-Length",
                    })
            }
        }
    }

    /// Starts downloading the blob `descriptor` names from `offset` (a
    /// Range request when not 0), following redirects to blob storage
    /// without the registry's credentials. The stream yields at most the
    /// descriptor's size in all.
    ///
    /// # Errors
    /// A request error; `InvalidAnswer` for a partial answer that does not
    /// start at `offset`.
    pub async fn get_blob(
        &self,
        reference: &Reference,
        descriptor: &Descriptor,
        offset: u64,
    ) -> Result<BlobStream, RegistryError> {
        let size = descriptor.size();
        let mut headers = HeaderMap::new();
        if offset > 0 && offset < size {
            let range = HeaderValue::from_str(&format!("bytes={offset}-")).map_err(|_| {
                RegistryError::InvalidAnswer {
                    url: String::new(),
                    what: "range",
                }
            })?;
            headers.insert(RANGE, range);
        }
        let digest = descriptor.digest();
        let (url, resp) = self
            .read(reference, &format!("blobs/{digest}"), Method::GET, headers)
            .await?;
        let start = if resp.status() == StatusCode::PARTIAL_CONTENT {
            let start = resp
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.parse::<u64>().ok());
            if start != Some(offset) {
                return Err(RegistryError::InvalidAnswer {
                    url,
                    what: "Content-Range for the range asked for",
                });
            }
            offset
        } else {
            0
        };
        Ok(BlobStream {
            response: resp,
            offset: start,
            remaining: size.saturating_sub(start),
            url,
        })
    }

    /// The tags of `reference`'s repository, every page followed (Link
    /// headers on the same origin only).
    ///
    /// # Errors
    /// A request error; `TooMany`, `TooLarge`, `ForeignLink`;
    /// `InvalidAnswer` for an entry that is not a tag (`[\w][\w.-]{0,127}`).
    pub async fn tags(&self, reference: &Reference) -> Result<Vec<String>, RegistryError> {
        self.list(
            reference.domain(),
            reference.repository(),
            "tags/list?n=1000",
            ("tags list", "tags"),
        )
        .await
    }

    /// The repositories of registry `domain` (`/v2/_catalog`), every page
    /// followed.
    ///
    /// # Errors
    /// As [`tags`](Client::tags), an entry that is not a repository name
    /// refused.
    pub async fn catalog(&self, domain: &str) -> Result<Vec<String>, RegistryError> {
        self.list(domain, "", "_catalog?n=1000", ("catalog", "repositories"))
            .await
    }

    /// The manifests that refer to `digest` (signatures, SBOMs), through
    /// the referrers API, or the tag schema (`sha256-<hex>`) where the
    /// registry has no such API; only those of `artifact_type` when given.
    ///
    /// # Errors
    /// A request error other than 404; an unusable index.
    pub async fn referrers(
        &self,
        reference: &Reference,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, RegistryError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/vnd.oci.image.index.v1+json"),
        );
        let index = match self
            .read(
                reference,
                &format!("referrers/{digest}"),
                Method::GET,
                headers,
            )
            .await
        {
            Ok((url, resp)) => {
                let body = read_bounded(resp, MAX_DOCUMENT_SIZE, "referrers index", &url).await?;
                image_core::Index::from_bytes(body)
                    .map_err(|source| RegistryError::Document { url, source })?
            }
            Err(e) if e.kind() == image_core::ErrorKind::NotFound => {
                let tag = crate::referrers::tag_schema_tag(digest);
                let Ok(tagged) = reference.without_digest().with_tag(&tag) else {
                    return Ok(Vec::new());
                };
                match self.get_manifest(&tagged).await {
                    Ok(Document::Index(i)) => *i,
                    Ok(Document::Manifest(_)) => return Ok(Vec::new()),
                    Err(e) if e.kind() == image_core::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        Ok(index
            .manifests()
            .iter()
            .filter(|d| {
                artifact_type.is_none_or(|t| {
                    d.artifact_type()
                        .as_ref()
                        .is_some_and(|a| a.to_string() == t)
                })
            })
            .cloned()
            .collect())
    }

    /// Deletes the manifest `digest` from `reference`'s repository (on the
    /// registry itself, never a mirror).
    ///
    /// # Errors
    /// A request error (405 when the registry does not allow deletes).
    pub async fn delete_manifest(
        &self,
        reference: &Reference,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        self.delete(reference, &format!("manifests/{digest}")).await
    }

    /// Deletes the blob `digest` from `reference`'s repository.
    ///
    /// # Errors
    /// As [`delete_manifest`](Client::delete_manifest).
    pub async fn delete_blob(
        &self,
        reference: &Reference,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        self.delete(reference, &format!("blobs/{digest}")).await
    }

    async fn delete(&self, reference: &Reference, suffix: &str) -> Result<(), RegistryError> {
        let endpoint = self.inner.config.origin(reference.domain());
        let repository = endpoint.repository_path(reference.repository());
        let target = Target {
            endpoint: &endpoint,
            domain: reference.domain(),
            repository: reference.repository(),
            path: format!("{repository}/{suffix}"),
            scope: Some(format!("repository:{repository}:delete")),
        };
        let resp = self.send(&target, Method::DELETE, HeaderMap::new()).await?;
        check_status(Method::DELETE, resp).await.map(drop)
    }

    /// Every entry of a paginated list: the strings of field `field.1` of
    /// each page (a `field.0`, as messages name it), each a tag (or, for
    /// the catalog, a repository name): a registry's list is printed, and
    /// anything else (a terminal's escape sequence) is no name.
    async fn list(
        &self,
        domain: &str,
        repository: &str,
        first: &str,
        field: (&'static str, &'static str),
    ) -> Result<Vec<String>, RegistryError> {
        let endpoint = self.inner.config.origin(domain);
        let (path, scope) = if repository.is_empty() {
            (first.to_owned(), "registry:catalog:*".to_owned())
        } else {
            let repository = endpoint.repository_path(repository);
            (
                format!("{repository}/{first}"),
                format!("repository:{repository}:pull"),
            )
        };
        let mut target = Target {
            endpoint: &endpoint,
            domain,
            repository,
            path,
            scope: Some(scope),
        };
        let mut out = Vec::new();
        let mut pages = 0u64;
        loop {
            let resp = self.send(&target, Method::GET, HeaderMap::new()).await?;
            let resp = check_status(Method::GET, resp).await?;
            let url = resp.url().clone();
            let shown = show_url(&url);
            let next = next_link(&resp, &url)?;
            let body = read_bounded(resp, MAX_LIST_PAGE, "list page", &shown).await?;
            let json_err = |source| RegistryError::Json {
                url: shown.clone(),
                what: field.0,
                source,
            };
            let mut page: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&body).map_err(json_err)?;
            let entries: Option<Vec<String>> =
                serde_json::from_value(page.remove(field.1).unwrap_or_default())
                    .map_err(json_err)?;
            let entries = entries.unwrap_or_default();
            let (valid, what): (fn(&str) -> bool, _) = match repository.is_empty() {
                true => (is_repository_name, "catalog entry (not a repository name)"),
                false => (is_tag, "tags list entry (not a tag)"),
            };
            if !entries.iter().all(|e| valid(e)) {
                return Err(RegistryError::InvalidAnswer {
                    url: shown.clone(),
                    what,
                });
            }
            out.extend(entries);
            pages += 1;
            let too_many = |limit| RegistryError::TooMany {
                what: field.0,
                url: shown.clone(),
                limit,
            };
            if out.len() as u64 > MAX_LIST_ENTRIES {
                return Err(too_many(MAX_LIST_ENTRIES));
            }
            let Some(next) = next else {
                return Ok(out);
            };
            if pages >= MAX_LIST_PAGES {
                return Err(too_many(MAX_LIST_PAGES));
            }
            let path =
                next.path()
                    .strip_prefix("/v2/")
                    .ok_or_else(|| RegistryError::InvalidAnswer {
                        url: shown.clone(),
                        what: "pagination link outside /v2/",
                    })?;
            target.path = match next.query() {
                Some(q) => format!("{path}?{q}"),
                None => path.to_owned(),
            };
        }
    }

    /// A read: tries the mirrors, then the registry; returns the URL (for
    /// messages) and a successful answer.
    async fn read(
        &self,
        reference: &Reference,
        suffix: &str,
        method: Method,
        headers: HeaderMap,
    ) -> Result<(String, reqwest::Response), RegistryError> {
        let endpoints = self.inner.config.endpoints(reference.domain());
        let mut last = None;
        for (i, endpoint) in endpoints.iter().enumerate() {
            let repository = endpoint.repository_path(reference.repository());
            let target = Target {
                endpoint,
                domain: reference.domain(),
                repository: reference.repository(),
                path: format!("{repository}/{suffix}"),
                scope: Some(format!("repository:{repository}:pull")),
            };
            let result = match self.send(&target, method.clone(), headers.clone()).await {
                Ok(resp) => {
                    let url = show_url(resp.url());
                    check_status(method.clone(), resp).await.map(|r| (url, r))
                }
                Err(e) => Err(e),
            };
            match result {
                // A mirror that fails or lacks the content: the next one.
                Err(e) if i + 1 < endpoints.len() => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or(RegistryError::InvalidAnswer {
            url: reference.domain().to_owned(),
            what: "configuration without endpoints",
        }))
    }

    /// Sends one request with auth, redirects and retries; returns the
    /// final answer whatever its status (after retries are spent).
    async fn send(
        &self,
        target: &Target<'_>,
        method: Method,
        headers: HeaderMap,
    ) -> Result<reqwest::Response, RegistryError> {
        self.send_body(target, method, headers, None).await
    }

    /// [`send`](Client::send) with a request body (sent again on a retry,
    /// so held in memory: a document or one upload chunk).
    pub(crate) async fn send_body(
        &self,
        target: &Target<'_>,
        method: Method,
        headers: HeaderMap,
        body: Option<bytes::Bytes>,
    ) -> Result<reqwest::Response, RegistryError> {
        let url = self.url_of(target).await?;
        let retry = self.inner.retry;
        let mut attempt = 0u32;
        let mut reauthenticated = false;
        loop {
            attempt += 1;
            let auth = self.authorization(target).await?;
            let outcome = self
                .follow(
                    target.endpoint,
                    &method,
                    &url,
                    &headers,
                    (auth.as_ref(), body.as_ref()),
                )
                .await;
            if let Ok(resp) = &outcome {
                if resp.status() == StatusCode::UNAUTHORIZED && resp.url().origin() == url.origin()
                {
                    // Refused by the registry (even after the challenge
                    // round, or with no credentials): the next request
                    // looks the credentials up again.
                    self.forget_credentials(target.domain);
                }
            }
            let retry_after = match outcome {
                // A challenge is learned from the registry's own origin
                // only: one from a redirect's target (blob storage) would
                // have the registry's credentials sent to a token server
                // of its choosing. Its 401 is the answer.
                Ok(resp)
                    if resp.status() == StatusCode::UNAUTHORIZED
                        && !reauthenticated
                        && resp.url().origin() == url.origin() =>
                {
                    reauthenticated = true;
                    self.learn_challenge(target, &resp, auth.is_some())?;
                    // The challenge round is not a failed attempt.
                    attempt -= 1;
                    continue;
                }
                Ok(resp)
                    if is_retryable_status(resp.status()) && attempt < retry.attempts.max(1) =>
                {
                    retry_after(&resp)
                }
                Ok(resp) => return Ok(resp),
                Err(e) if e.kind().is_retryable() && attempt < retry.attempts.max(1) => None,
                Err(e) => return Err(e),
            };
            tokio::time::sleep(retry.delay(attempt - 1, retry_after)).await;
        }
    }

    /// Sends `body`, a stream that can be read only once, in one attempt:
    /// no retry and no redirect followed (the caller goes on from what the
    /// registry acknowledged: an upload asks where it stands). A `401`
    /// answer teaches the client the challenge for the next attempt.
    pub(crate) async fn send_stream(
        &self,
        target: &Target<'_>,
        method: Method,
        headers: HeaderMap,
        body: reqwest::Body,
    ) -> Result<reqwest::Response, RegistryError> {
        let url = self.url_of(target).await?;
        let auth = self.authorization(target).await?;
        let http = if target.endpoint.insecure {
            &self.inner.unverified
        } else {
            &self.inner.verifying
        };
        let mut request = http.request(method.clone(), url.clone()).headers(headers);
        if let Some(auth) = &auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let resp = sent(request.body(body), &method, &url).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            // As `send` does: the next request looks the credentials up
            // again (no redirect is followed here: the 401 is the origin's).
            self.forget_credentials(target.domain);
            self.learn_challenge(target, &resp, auth.is_some())?;
        }
        Ok(resp)
    }

    /// The URL of `target` (its endpoint's scheme learned first).
    async fn url_of(&self, target: &Target<'_>) -> Result<Url, RegistryError> {
        let scheme = self.scheme(target.endpoint).await;
        let url = format!("{scheme}://{}/v2/{}", target.endpoint.host, target.path);
        Url::parse(&url).map_err(|_| RegistryError::InvalidAnswer {
            url: target.endpoint.host.clone(),
            what: "URL for the request",
        })
    }

    /// Follows redirects; `Authorization` only to the first URL's origin,
    /// the body (when any) only with the first method (a 303 turns it
    /// into a GET without one).
    async fn follow(
        &self,
        endpoint: &Endpoint,
        method: &Method,
        first: &Url,
        headers: &HeaderMap,
        (auth, body): (Option<&HeaderValue>, Option<&bytes::Bytes>),
    ) -> Result<reqwest::Response, RegistryError> {
        let mut body = body;
        let origin = first.origin();
        let mut url = first.clone();
        let mut method = method.clone();
        for _ in 0..=MAX_REDIRECTS {
            let same_origin = url.origin() == origin;
            let http = if endpoint.insecure && same_origin {
                &self.inner.unverified
            } else {
                &self.inner.verifying
            };
            let mut request = http
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let (true, Some(auth)) = (same_origin, auth) {
                request = request.header(AUTHORIZATION, auth.clone());
            }
            if let Some(body) = body {
                request = request.body(body.clone());
            }
            let resp = sent(request, &method, &url).await?;
            if !resp.status().is_redirection() || resp.status() == StatusCode::NOT_MODIFIED {
                return Ok(resp);
            }
            let refused = |reason| RegistryError::Redirect {
                from: show_url(&url),
                reason,
            };
            let location = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| refused("no Location header"))?;
            let next = url
                .join(location)
                .map_err(|_| refused("Location is not a URL"))?;
            match (url.scheme(), next.scheme()) {
                ("https", "https") | ("http", "https") | ("http", "http") => {}
                ("https", "http") => return Err(refused("HTTPS to plain HTTP")),
                _ => return Err(refused("not an HTTP URL")),
            }
            if resp.status() == StatusCode::SEE_OTHER {
                method = Method::GET;
                body = None;
            }
            url = next;
        }
        Err(RegistryError::Redirect {
            from: show_url(first),
            reason: "too many redirects",
        })
    }

    /// The scheme of an endpoint: HTTPS, or for an insecure one whatever
    /// answers first (HTTPS without verification, then HTTP), learned once.
    async fn scheme(&self, endpoint: &Endpoint) -> &'static str {
        if !endpoint.insecure {
            return "https";
        }
        if let Some(s) = self.hosts().get(&endpoint.host).and_then(|h| h.scheme) {
            return s;
        }
        let probe = format!("https://{}/v2/", endpoint.host);
        let https = self
            .inner
            .unverified
            .get(probe)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .is_ok();
        let scheme = if https { "https" } else { "http" };
        self.hosts()
            .entry(endpoint.host.clone())
            .or_default()
            .scheme = Some(scheme);
        scheme
    }

    fn looked_up(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, String), (Credentials, Instant)>> {
        self.inner
            .looked_up
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The credentials for `target`: given to the builder, else from the
    /// Docker config, looked up at most once per [`CREDENTIALS_KEPT_FOR`].
    fn credentials_for(&self, target: &Target<'_>) -> Result<Credentials, RegistryError> {
        if let Some(c) = self.inner.credentials.get(target.domain) {
            return Ok(c.clone());
        }
        let key = (target.domain.to_owned(), target.repository.to_owned());
        if let Some((c, at)) = self.looked_up().get(&key) {
            if at.elapsed() < CREDENTIALS_KEPT_FOR {
                return Ok(c.clone());
            }
        }
        // Not under the lock: a helper may take a while.
        let found = self
            .inner
            .docker_config
            .credentials(target.domain, target.repository)
            .map_err(|source| RegistryError::Credentials {
                domain: target.domain.to_owned(),
                source,
            })?;
        let mut kept = self.looked_up();
        if kept.len() >= MAX_KEPT_CREDENTIALS {
            kept.retain(|_, (_, at)| at.elapsed() < CREDENTIALS_KEPT_FOR);
            if kept.len() >= MAX_KEPT_CREDENTIALS {
                kept.clear();
            }
        }
        kept.insert(key, (found.clone(), Instant::now()));
        Ok(found)
    }

    /// Forgets the credentials looked up for `domain`: it refused what
    /// was sent, so the next request looks them up again.
    fn forget_credentials(&self, domain: &str) {
        self.looked_up().retain(|(d, _), _| d != domain);
    }

    /// The `Authorization` header for a request, from what the host asked
    /// for before: Basic, or a bearer token for the scope (fetched when
    /// missing or about to expire).
    async fn authorization(
        &self,
        target: &Target<'_>,
    ) -> Result<Option<HeaderValue>, RegistryError> {
        let host = &target.endpoint.host;
        let scope = target.scope.clone().unwrap_or_default();
        let challenge = {
            let hosts = self.hosts();
            let Some(state) = hosts.get(host) else {
                return Ok(None);
            };
            let Some(challenge) = state.challenge.clone() else {
                return Ok(None);
            };
            if challenge.scheme == "bearer" {
                if let Some(t) = state.tokens.get(&scope) {
                    if t.expires > Instant::now() + TOKEN_MARGIN {
                        return Ok(Some(bearer(&t.value)));
                    }
                }
            }
            challenge
        };
        let credentials = self.credentials_for(target)?;
        match challenge.scheme.as_str() {
            "basic" => Ok(credentials
                .basic_header()
                .and_then(|h| HeaderValue::from_str(&h).ok())
                .map(sensitive)),
            "bearer" => {
                let token = match self.fetch_token(&challenge, &scope, &credentials).await {
                    Ok(token) => token,
                    Err(e) => {
                        // The token server refused them (or failed): the
                        // next try looks the credentials up again.
                        if matches!(e, RegistryError::Unauthenticated { .. }) {
                            self.forget_credentials(target.domain);
                        }
                        return Err(e);
                    }
                };
                let header = bearer(&token.value);
                self.hosts()
                    .entry(host.clone())
                    .or_default()
                    .tokens
                    .insert(scope, token);
                Ok(Some(header))
            }
            _ => Ok(None),
        }
    }

    /// Keeps a 401's challenge for the host; a 401 after credentials were
    /// sent drops the host's tokens so the next try fetches new ones (the
    /// caller has forgotten the credentials it kept for the registry).
    fn learn_challenge(
        &self,
        target: &Target<'_>,
        resp: &reqwest::Response,
        had_auth: bool,
    ) -> Result<(), RegistryError> {
        let url = show_url(resp.url());
        let challenges: Vec<Challenge> = resp
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(Challenge::parse_all)
            .collect();
        let chosen = challenges
            .iter()
            .find(|c| c.scheme == "bearer")
            .or_else(|| challenges.iter().find(|c| c.scheme == "basic"))
            .cloned()
            .ok_or(RegistryError::Unauthenticated {
                url: url.clone(),
                reason: "401 without a Basic or Bearer challenge",
            })?;
        let mut hosts = self.hosts();
        let state = hosts.entry(target.endpoint.host.clone()).or_default();
        let same = state.challenge.as_ref() == Some(&chosen);
        // Credentials given to the builder and refused are refused; those
        // of the Docker config get one more round, looked up anew (the
        // caller forgot what it kept).
        let given = self.inner.credentials.contains_key(target.domain);
        if had_auth && same && chosen.scheme == "basic" && given {
            return Err(RegistryError::Unauthenticated {
                url,
                reason: "credentials rejected",
            });
        }
        state.tokens.clear();
        state.challenge = Some(chosen);
        Ok(())
    }

    /// Asks the challenge's realm for a token for `scope` (plus the scope
    /// the challenge names), with the credentials when there are any.
    async fn fetch_token(
        &self,
        challenge: &Challenge,
        scope: &str,
        credentials: &Credentials,
    ) -> Result<Token, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Answer {
            #[serde(default)]
            token: Option<Secret>,
            #[serde(default)]
            access_token: Option<Secret>,
            #[serde(default)]
            expires_in: Option<i64>,
        }
        let realm = challenge.param("realm").unwrap_or_default();
        let mut url = Url::parse(realm).map_err(|_| RegistryError::InvalidAnswer {
            url: realm.chars().take(200).collect(),
            what: "token realm",
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(RegistryError::InvalidAnswer {
                url: show_url(&url),
                what: "token realm",
            });
        }
        let shown = show_url(&url);
        let mut scopes: Vec<&str> = scope.split(' ').filter(|s| !s.is_empty()).collect();
        if let Some(extra) = challenge.param("scope") {
            for s in extra.split(' ').filter(|s| !s.is_empty()) {
                if !scopes.contains(&s) {
                    scopes.push(s);
                }
            }
        }
        let service = challenge.param("service");
        let http = &self.inner.verifying;
        let request = match credentials {
            Credentials::IdentityToken(refresh) => {
                let mut form = Url::parse("http://form.invalid/").expect("static URL");
                {
                    let mut q = form.query_pairs_mut();
                    q.append_pair("grant_type", "refresh_token");
                    q.append_pair("client_id", "image-registry");
                    q.append_pair("refresh_token", refresh.expose());
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for s in &scopes {
                        q.append_pair("scope", s);
                    }
                }
                http.post(url.clone())
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(form.query().unwrap_or_default().to_owned())
            }
            _ => {
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for s in &scopes {
                        q.append_pair("scope", s);
                    }
                    if let Credentials::Basic { username, .. } = credentials {
                        q.append_pair("account", username);
                    }
                }
                let mut r = http.get(url.clone());
                if let Some(h) = credentials
                    .basic_header()
                    .and_then(|h| HeaderValue::from_str(&h).ok())
                {
                    r = r.header(AUTHORIZATION, sensitive(h));
                }
                r
            }
        };
        let resp = request
            .send()
            .await
            .map_err(|source| RegistryError::transport("GET", shown.clone(), source))?;
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            return Err(RegistryError::Unauthenticated {
                url: shown,
                reason: "token server refused the credentials",
            });
        }
        let resp = check_status(Method::GET, resp).await?;
        let body = read_bounded(resp, MAX_TOKEN_ANSWER, "token answer", &shown).await?;
        let answer: Answer = serde_json::from_slice(&body).map_err(|_| RegistryError::Token {
            realm: shown.clone(),
        })?;
        let value = answer
            .token
            .filter(|t| !t.is_empty())
            .or(answer.access_token.filter(|t| !t.is_empty()))
            .ok_or(RegistryError::Token { realm: shown })?;
        let lifetime = answer
            .expires_in
            .unwrap_or(MIN_TOKEN_LIFETIME)
            .clamp(MIN_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME);
        Ok(Token {
            value,
            expires: Instant::now() + Duration::from_secs(lifetime.unsigned_abs()),
        })
    }
}

/// Refuses `doc` when `expected` (its `Content-Type`, or the media type
/// of the descriptor it was fetched by) names the other kind: an index
/// described as a manifest or the reverse, which clients would read
/// differently (CVE-2021-41190; containerd and Docker refuse it too).
/// Another media type of the same kind (Docker's for an OCI manifest) is
/// taken, as containerd takes it.
fn kind_agrees(doc: &Document, expected: &MediaType) -> Result<(), image_core::ParseError> {
    let wrong = |expected| {
        Err(image_core::ParseError::WrongKind {
            expected,
            found: doc.media_type().to_string(),
        })
    };
    match doc {
        Document::Index(_) if expected.is_manifest() => wrong("an image manifest"),
        Document::Manifest(_) if expected.is_index() => wrong("an image index"),
        _ => Ok(()),
    }
}

/// Refuses an index that also has a manifest's `config` or `layers` (a
/// manifest with `manifests` is refused by its parser): read as an index
/// here and as a manifest by another client (containerd refuses it too).
fn unambiguous(doc: &Document) -> Result<(), image_core::ParseError> {
    match doc {
        Document::Index(i)
            if ["config", "layers"]
                .iter()
                .any(|k| i.extra_fields().contains_key(*k)) =>
        {
            Err(image_core::ParseError::WrongKind {
                expected: "an image index",
                found: "an index with a manifest's config or layers".to_owned(),
            })
        }
        _ => Ok(()),
    }
}

/// Sends `request` (to `method` `url`), a failure to get an answer as a
/// transport error.
async fn sent(
    request: reqwest::RequestBuilder,
    method: &Method,
    url: &Url,
) -> Result<reqwest::Response, RegistryError> {
    request
        .send()
        .await
        .map_err(|source| RegistryError::transport(method.to_string(), show_url(url), source))
}

/// Checks `interrupt` between chunks of a long download.
pub(crate) fn check_interrupt(interrupt: &Interrupt) -> Result<(), RegistryError> {
    interrupt.check().map_err(RegistryError::Cancelled)
}

fn bearer(token: &Secret) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {}", token.expose()))
        .map(sensitive)
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid"))
}

/// Marks a header value sensitive (hyper then keeps it out of its own
/// debug output).
fn sensitive(mut h: HeaderValue) -> HeaderValue {
    h.set_sensitive(true);
    h
}

fn manifest_ref(reference: &Reference) -> String {
    match (reference.digest(), reference.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_owned(),
        (None, None) => image_core::reference::DEFAULT_TAG.to_owned(),
    }
}

fn is_retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()))
}

/// A `Retry-After` value as a wait from `now`: delay-seconds, or an
/// HTTP date (RFC 7231's IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`;
/// a date already past is no wait). `None` for anything else.
fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = imf_fixdate(value)?;
    let now = now.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// Seconds since the epoch of an IMF-fixdate (the only form RFC 7231
/// requires senders to use; the obsolete RFC 850 and asctime forms are
/// not taken).
fn imf_fixdate(value: &str) -> Option<u64> {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (day_name, rest) = value.split_once(", ")?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let number = |s: &str, len: usize| {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<i64>().ok())
            .flatten()
    };
    let day = number(day, 2)?;
    let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
    let year = number(year, 4)?;
    let hms: Vec<i64> = time
        .split(':')
        .map(|s| number(s, 2))
        .collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    if !DAYS.contains(&day_name) || !(1..=31).contains(&day) || *h > 23 || *m > 59 || *s > 60 {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + m * 60 + s).ok()
}

/// A URL as messages show it: no user information, no query.
pub(crate) fn show_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// Turns an error status into a [`RegistryError`], reading (a bounded
/// part of) the body for its distribution error code.
pub(crate) async fn check_status(
    method: Method,
    resp: reqwest::Response,
) -> Result<reqwest::Response, RegistryError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    #[derive(serde::Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
    }
    let url = show_url(resp.url());
    let body = if method == Method::HEAD {
        Vec::new()
    } else {
        read_bounded(resp, MAX_ERROR_BODY, "error body", &url)
            .await
            .unwrap_or_default()
    };
    let code = serde_json::from_slice::<Errors>(&body)
        .ok()
        .and_then(|e| e.errors.into_iter().next())
        .map(|e| {
            e.code
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect::<String>()
        })
        .filter(|c| !c.is_empty());
    if status == StatusCode::UNAUTHORIZED {
        return Err(RegistryError::Unauthenticated {
            url,
            reason: "credentials missing or rejected",
        });
    }
    Err(RegistryError::Status {
        method: method.to_string(),
        url,
        status: status.as_u16(),
        code,
    })
}

/// Reads a body up to `limit` bytes; more is [`RegistryError::TooLarge`].
pub(crate) async fn read_bounded(
    resp: reqwest::Response,
    limit: u64,
    what: &'static str,
    url: &str,
) -> Result<Vec<u8>, RegistryError> {
    let too_large = || RegistryError::TooLarge {
        what,
        url: url.to_owned(),
        limit,
    };
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|source| RegistryError::transport("GET", url.to_owned(), source))?;
        if (out.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Whether `tag` is a tag as references spell it.
fn is_tag(tag: &str) -> bool {
    Reference::parse_name("registry.invalid/r").is_ok_and(|r| r.with_tag(tag).is_ok())
}

/// Whether `name` is a repository name as references spell it (no tag,
/// no digest, no other registry).
fn is_repository_name(name: &str) -> bool {
    Reference::parse_name(&format!("registry.invalid/{name}")).is_ok_and(|r| {
        r.domain() == "registry.invalid"
            && r.repository() == name
            && r.tag().is_none()
            && r.digest().is_none()
    })
}

/// The `rel="next"` link of a list page, resolved against its URL and
/// required to stay on its origin.
fn next_link(resp: &reqwest::Response, url: &Url) -> Result<Option<Url>, RegistryError> {
    let Some(link) = resp
        .headers()
        .get(reqwest::header::LINK)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(None);
    };
    for part in link.split(',') {
        let Some((target, params)) = part.trim().split_once(';') else {
            continue;
        };
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        let target = target.trim();
        if !is_next || !target.starts_with('<') || !target.ends_with('>') {
            continue;
        }
        let next =
            url.join(&target[1..target.len() - 1])
                .map_err(|_| RegistryError::InvalidAnswer {
                    url: show_url(url),
                    what: "pagination link",
                })?;
        if next.origin() != url.origin() {
            return Err(RegistryError::ForeignLink { url: show_url(url) });
        }
        return Ok(Some(next));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let p = RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        for retry in 0..30 {
            let d = p.delay(retry, None);
            let ceiling = Duration::from_millis(100)
                .saturating_mul(1 << retry.min(20))
                .min(Duration::from_secs(1));
            assert!(d <= ceiling, "{retry}: {d:?}");
        }
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(3600))),
            Duration::from_secs(1)
        );
        assert_eq!(
            p.delay(3, Some(Duration::from_millis(300))),
            Duration::from_millis(300)
        );
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        use std::time::UNIX_EPOCH;
        // 1994-11-06T08:49:37Z, the example of RFC 7231.
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Mon, 07 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(86_400))
        );
        // A leap day and a year boundary.
        assert_eq!(
            imf_fixdate("Tue, 29 Feb 2000 00:00:00 GMT"),
            Some(951_782_400)
        );
        assert_eq!(imf_fixdate("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            imf_fixdate("Tue, 14 Nov 2023 22:13:20 GMT"),
            Some(1_700_000_000)
        );
        // Past: no wait.
        assert_eq!(
            parse_retry_after("Sat, 05 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in [
            "",
            "soon",
            "-5",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:49:37 GMT",
            "Xyz, 06 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn shown_urls_lose_query_and_user() {
        let u = Url::parse("https://user:pw@blobs.example/x/y?X-Amz-Signature=secret#f").unwrap();
        assert_eq!(show_url(&u), "https://blobs.example/x/y");
    }
}
