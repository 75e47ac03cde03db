//! Keys and certificates made in the test (rcgen): a CA and a server
//! certificate it signs for the registry's TLS, and the token signer
//! whose self-signed certificate the registry trusts.

use std::net::{IpAddr, Ipv4Addr};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate and its private key.
pub(crate) struct Issued {
    pub cert: Certificate,
    pub key: KeyPair,
}

fn params(common_name: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(DnType::CommonName, common_name.to_owned());
    p
}

/// A self-signed CA certificate.
pub(crate) fn ca(common_name: &str) -> Issued {
    let mut p = params(common_name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("generate the CA key");
    let cert = p.self_signed(&key).expect("self-sign the CA");
    Issued { cert, key }
}

/// A server certificate for `127.0.0.1` and `localhost`, signed by `ca`.
pub(crate) fn server(ca: &Issued) -> Issued {
    let mut p = params("127.0.0.1");
    p.subject_alt_names = vec![
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::DnsName("localhost".try_into().expect("a DNS name")),
    ];
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().expect("generate the server key");
    let cert = p
        .signed_by(&key, &ca.cert, &ca.key)
        .expect("sign the server certificate");
    Issued { cert, key }
}

/// The token signer: an ECDSA P-256 key and a self-signed certificate of
/// it, which is both the registry's `rootcertbundle` and the token's
/// one-element `x5c` chain (distribution verifies the chain against the
/// bundle, then the signature with the leaf's key).
pub(crate) fn token_signer() -> Issued {
    let mut p = params("image-testsupport token signer");
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().expect("generate the token key");
    let cert = p.self_signed(&key).expect("self-sign the token signer");
    Issued { cert, key }
}
