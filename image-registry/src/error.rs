//! [`RegistryError`]: why a request to a registry failed.

use image_core::{Classify, Digest, ErrorKind, ParseError};

use crate::auth::CredentialError;

/// Why a registry request failed. URLs are shown without their query (a
/// blob store's signed redirect carries its signature there) and without
/// user information; no secret is ever part of a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The connection failed, was reset or timed out, or the answer's body
    /// was cut. The source is reqwest's error without its URL.
    #[error("request {method} {url} failed in transport")]
    Transport {
        /// The method.
        method: String,
        /// The URL (without its query).
        url: String,
        /// reqwest's error.
        source: reqwest::Error,
    },
    /// The registry answered with an error status.
    #[error("{method} {url} answered {status}{}", code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Status {
        /// The method.
        method: String,
        /// The URL (without its query).
        url: String,
        /// The HTTP status.
        status: u16,
        /// The distribution error code (`MANIFEST_UNKNOWN`, `DENIED`...).
        code: Option<String>,
    },
    /// The registry wants credentials, or refused those given.
    #[error("{url} refused access ({reason})")]
    Unauthenticated {
        /// The URL (without its query).
        url: String,
        /// What happened: no credentials, rejected credentials, no token.
        reason: &'static str,
    },
    /// The token server's answer was not a token.
    #[error("token server {realm} answered without a usable token")]
    Token {
        /// The realm (without its query).
        realm: String,
    },
    /// An answer is larger than this client reads.
    #[error("{what} from {url} is larger than {limit} bytes")]
    TooLarge {
        /// What was read.
        what: &'static str,
        /// The URL (without its query).
        url: String,
        /// The limit.
        limit: u64,
    },
    /// A list is longer (pages or entries) than this client follows.
    #[error("{what} from {url} has more than {limit} entries or pages")]
    TooMany {
        /// What was listed.
        what: &'static str,
        /// The URL (without its query).
        url: String,
        /// The limit.
        limit: u64,
    },
    /// A redirect chain was too long, or a redirect went where it may not
    /// (HTTPS to plain HTTP, another scheme).
    #[error("redirect from {from} refused: {reason}")]
    Redirect {
        /// The URL redirected from (without its query).
        from: String,
        /// Why.
        reason: &'static str,
    },
    /// A pagination link leads to another host.
    #[error("pagination link from {url} leaves its host")]
    ForeignLink {
        /// The URL (without its query).
        url: String,
    },
    /// An answer or header is malformed.
    #[error("{url} sent an invalid {what}")]
    InvalidAnswer {
        /// The URL (without its query).
        url: String,
        /// What was invalid.
        what: &'static str,
    },
    /// A JSON answer does not have its shape.
    #[error("{url} sent JSON that is not a valid {what}")]
    Json {
        /// The URL (without its query).
        url: String,
        /// What was expected.
        what: &'static str,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A manifest or index cannot be used (schema 1, bad JSON, unknown kind).
    #[error("manifest from {url} is unusable")]
    Document {
        /// The URL (without its query).
        url: String,
        /// Why.
        source: ParseError,
    },
    /// A document asked for by digest has another digest, or the registry
    /// answered a write with another digest than the one written.
    #[error("{url} gave digest {found}, not {expected}")]
    DigestMismatch {
        /// The URL (without its query).
        url: String,
        /// The digest asked for, or written.
        expected: Digest,
        /// The digest of the bytes received, or the one the registry
        /// answered with (`Docker-Content-Digest`).
        found: Digest,
    },
    /// Credentials for the registry could not be found.
    #[error("cannot find credentials for {domain}")]
    Credentials {
        /// The registry.
        domain: String,
        /// Why.
        source: CredentialError,
    },
    /// The HTTP client could not be built (a bad CA certificate).
    #[error("cannot build the HTTP client")]
    Client {
        /// reqwest's error.
        source: reqwest::Error,
    },
    /// A tag-schema referrers index kept losing this pusher's entry to
    /// other writers (a registry without conditional writes).
    #[error("referrers index {url} lost the entry written {attempts} times to other writers")]
    IndexContended {
        /// The index (its tag's path).
        url: String,
        /// The writes tried.
        attempts: u32,
    },
    /// The blocking client's private runtime could not start (no threads).
    #[error("cannot start the blocking client's runtime")]
    Runtime {
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The caller's interrupt was set.
    #[error("registry request stopped")]
    Cancelled(#[source] image_core::Cancelled),
}

impl RegistryError {
    /// A transport failure of `method` `url` (shown without its query).
    /// reqwest's error loses its own copy of the URL: this message names it
    /// already, and reqwest's keeps the query (a signed redirect's
    /// signature).
    pub(crate) fn transport(
        method: impl Into<String>,
        url: impl Into<String>,
        source: reqwest::Error,
    ) -> RegistryError {
        RegistryError::Transport {
            method: method.into(),
            url: url.into(),
            source: source.without_url(),
        }
    }
}

impl Classify for RegistryError {
    fn kind(&self) -> ErrorKind {
        match self {
            RegistryError::Transport { source, .. } => transport_kind(source),
            RegistryError::Status { status, .. } => status_kind(*status),
            RegistryError::Unauthenticated { .. } | RegistryError::Token { .. } => {
                ErrorKind::Unauthenticated
            }
            RegistryError::TooLarge { .. }
            | RegistryError::TooMany { .. }
            | RegistryError::Redirect { .. }
            | RegistryError::ForeignLink { .. } => ErrorKind::Unsafe,
            RegistryError::InvalidAnswer { .. } | RegistryError::Json { .. } => {
                ErrorKind::InvalidInput
            }
            RegistryError::Document { source, .. } => source.kind(),
            RegistryError::DigestMismatch { .. } => ErrorKind::DigestMismatch,
            RegistryError::Credentials { source, .. } => source.kind(),
            RegistryError::Client { .. } => ErrorKind::InvalidInput,
            RegistryError::Runtime { source } => ErrorKind::from_io(source),
            RegistryError::Cancelled(_) => ErrorKind::Cancelled,
            RegistryError::IndexContended { .. } => ErrorKind::Unavailable,
        }
    }
}

/// The class of an HTTP status.
pub(crate) fn status_kind(status: u16) -> ErrorKind {
    match status {
        401 | 403 => ErrorKind::Unauthenticated,
        404 => ErrorKind::NotFound,
        408 | 429 | 500..=599 => ErrorKind::Unavailable,
        400 | 405..=428 | 430..=499 => ErrorKind::InvalidInput,
        _ => ErrorKind::Io,
    }
}

fn transport_kind(e: &reqwest::Error) -> ErrorKind {
    if e.is_builder() {
        ErrorKind::InvalidInput
    } else if tls_refused(e) {
        // The registry's certificate is not trusted: a retry meets the
        // same certificate.
        ErrorKind::Unsafe
    } else {
        // Refused, reset, timed out, cut short: all may work on retry.
        ErrorKind::Unavailable
    }
}

/// Whether `e`'s chain holds rustls's refusal of the peer's certificate
/// (untrusted, expired, for another name, or none sent), which the
/// connector carries inside `io::Error`s (nested: an `io::Error`'s
/// `source()` skips what it carries, so each is opened). rustls's other
/// errors (alerts, a record that does not decrypt, a peer that misbehaves)
/// are what a flaky link or a restarting peer makes, so not a refusal.
fn tls_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut link: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(mut l) = link {
        // Bounded: each step opens one `io::Error`, and a chain of them is
        // as deep as the connector made it.
        for _ in 0..8 {
            if let Some(tls) = l.downcast_ref::<rustls::Error>() {
                return matches!(
                    tls,
                    rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
                );
            }
            match l
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
            {
                Some(inner) => l = inner,
                None => break,
            }
        }
        link = l.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_have_their_class() {
        assert_eq!(status_kind(401), ErrorKind::Unauthenticated);
        assert_eq!(status_kind(404), ErrorKind::NotFound);
        assert_eq!(status_kind(429), ErrorKind::Unavailable);
        assert_eq!(status_kind(503), ErrorKind::Unavailable);
        assert_eq!(status_kind(400), ErrorKind::InvalidInput);
        let e = RegistryError::Document {
            url: "http://x/v2/a/manifests/1".into(),
            source: ParseError::Schema1,
        };
        assert_eq!(e.kind(), ErrorKind::Unsupported);
    }

    /// An error over an `io::Error`, as hyper's connect error carries the
    /// TLS stream's failure.
    #[derive(Debug, thiserror::Error)]
    #[error("client error (Connect)")]
    struct Connect(#[source] std::io::Error);

    /// `err` as the connector carries it: rustls's error inside an
    /// `io::Error` inside another, under a connect error.
    fn carried(err: rustls::Error) -> Connect {
        use std::io;
        Connect(io::Error::other(io::Error::new(
            io::ErrorKind::InvalidData,
            err,
        )))
    }

    #[test]
    fn only_an_untrusted_certificate_is_a_tls_refusal() {
        use rustls::{AlertDescription, CertificateError, PeerMisbehaved};
        // What a retry meets again: the registry's certificate.
        for untrusted in [
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
            rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
            rustls::Error::InvalidCertificate(CertificateError::Expired),
            rustls::Error::NoCertificatesPresented,
        ] {
            assert!(tls_refused(&carried(untrusted.clone())), "{untrusted:?}");
        }
        // What a flaky link or a restarting peer makes: retried.
        for flaky in [
            rustls::Error::DecryptError,
            rustls::Error::AlertReceived(AlertDescription::InternalError),
            rustls::Error::PeerMisbehaved(PeerMisbehaved::IncorrectBinder),
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
            rustls::Error::HandshakeNotComplete,
        ] {
            assert!(!tls_refused(&carried(flaky.clone())), "{flaky:?}");
        }
        // Not TLS at all.
        let reset = Connect(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(!tls_refused(&reset));
    }

    #[test]
    fn a_runtime_that_cannot_start_is_an_io_failure_not_invalid_input() {
        // EAGAIN: no thread could be made.
        let e = RegistryError::Runtime {
            source: std::io::Error::from_raw_os_error(11),
        };
        assert_eq!(e.kind(), ErrorKind::Io);
        assert_eq!(e.to_string(), "cannot start the blocking client's runtime");
    }
}
