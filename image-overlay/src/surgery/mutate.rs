//! Mutate: a new image from an old one with config fields, annotations or
//! the created time changed, a layer appended from a directory or a tar, or
//! a path removed by a new whiteout layer (crane `mutate` and `append`).
//!
//! The old image is untouched; the new config and manifest are written
//! canonically, under a lease of the store until the new tag is set.
//!
//! ```no_run
//! use image_overlay::surgery::{mutate, Mutation, NewLayer};
//! use image_store::OciDir;
//!
//! let store = OciDir::open("/var/lib/images")?;
//! let mut m = Mutation::default();
//! m.env.push("GREETING=hello".into());
//! m.labels.push(("org.example.team".into(), "infra".into()));
//! mutate(&store, "example/app:1", "example/app:2", &m, NewLayer::Remove("/tmp/secret"), None)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use image_core::config::{ConfigFile, History};
use image_core::{Compression, ImageConfig, Manifest, Platform};
use image_store::content::unique_reference;
use image_store::{Ingester, Leases, Provider, TagStore};

use crate::append::{store_layer, AppendSource, ConfigChanges, StoredLayer};
use crate::pack::{LayerWriter, PackOptions};

use super::merge::whiteout_entry;
use super::{check_tag, layer_descriptor, resolve, set_tag, write_image, SurgeryError};

/// Changes to an image's config and manifest. Empty fields change nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mutation {
    /// Replaces the entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the command.
    pub cmd: Option<Vec<String>>,
    /// `KEY=value` entries, each replacing the image's entry of that key.
    pub env: Vec<String>,
    /// Replaces the user.
    pub user: Option<String>,
    /// Replaces the working directory (absolute).
    pub working_dir: Option<String>,
    /// Labels set (added or replaced).
    pub labels: Vec<(String, String)>,
    /// Ports exposed: `80`, `80/tcp`, `53/udp`, `9/sctp`.
    pub exposed_ports: Vec<String>,
    /// Volumes (absolute paths).
    pub volumes: Vec<String>,
    /// Replaces the stop signal.
    pub stop_signal: Option<String>,
    /// Manifest annotations set (added or replaced).
    pub annotations: Vec<(String, String)>,
    /// The image's `created` time (RFC 3339), and the new layer's history
    /// entry's; `None`: the image's is kept, a new layer's is now (or
    /// `SOURCE_DATE_EPOCH`).
    pub created: Option<String>,
    /// The new layer's history `created_by`; `None`: says what was added.
    pub created_by: Option<String>,
}

/// A layer to add with the mutation.
#[non_exhaustive]
pub enum NewLayer<'a> {
    /// No layer: config and manifest changes only.
    None,
    /// A directory packed as a gzip layer (read without following links
    /// inside it).
    Dir(&'a Path),
    /// A layer tarball (plain, gzip or zstd, sniffed), kept as it is after
    /// it is read through unpack's stream rules and limits.
    Tar(&'a mut dyn Read),
    /// A path of the image (absolute or relative to its root) removed: a
    /// layer holding its whiteout.
    Remove(&'a str),
}

impl std::fmt::Debug for NewLayer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NewLayer::None => f.write_str("None"),
            NewLayer::Dir(p) => f.debug_tuple("Dir").field(p).finish(),
            NewLayer::Tar(_) => f.write_str("Tar"),
            NewLayer::Remove(p) => f.debug_tuple("Remove").field(p).finish(),
        }
    }
}

/// What a mutation made.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Mutated {
    /// The new manifest.
    pub manifest: Manifest,
    /// The new config.
    pub config: ImageConfig,
}

fn invalid(what: &'static str, value: &str, reason: &'static str) -> SurgeryError {
    SurgeryError::Invalid {
        what,
        value: value.to_owned(),
        reason,
    }
}

/// `80` -> `80/tcp`; the port a number 1-65535, the protocol tcp, udp or sctp.
fn port_key(p: &str) -> Result<String, SurgeryError> {
    let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(invalid("port", p, "the protocol is not tcp, udp or sctp"));
    }
    match port.parse::<u16>() {
        Ok(n) if n > 0 => Ok(format!("{n}/{proto}")),
        _ => Err(invalid("port", p, "not a port number from 1 to 65535")),
    }
}

impl Mutation {
    /// Checks every value before anything is read or written.
    fn check(&self) -> Result<(), SurgeryError> {
        for e in &self.env {
            if e.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
                return Err(invalid("environment entry", e, "not KEY=value"));
            }
        }
        for (k, _) in self.labels.iter().chain(&self.annotations) {
            if k.is_empty() {
                return Err(invalid("label or annotation", k, "an empty key"));
            }
        }
        for p in &self.exposed_ports {
            port_key(p)?;
        }
        for v in &self.volumes {
            if !v.starts_with('/') {
                return Err(invalid("volume", v, "not an absolute path"));
            }
        }
        if let Some(w) = &self.working_dir {
            if !w.starts_with('/') {
                return Err(invalid("working directory", w, "not an absolute path"));
            }
        }
        if let Some(c) = &self.created {
            if !is_rfc3339(c) {
                return Err(invalid("created time", c, "not an RFC 3339 time"));
            }
        }
        Ok(())
    }

    fn apply(&self, c: &mut ConfigFile) -> Result<(), SurgeryError> {
        if let Some(t) = &self.created {
            c.created = Some(t.clone());
        }
        // The fields `append` changes too, by its rules.
        let mut common = ConfigChanges::new();
        common.entrypoint = self.entrypoint.clone();
        common.cmd = self.cmd.clone();
        common.env = self.env.clone();
        common.user = self.user.clone();
        common.working_dir = self.working_dir.clone();
        common.apply(c);
        let run = c.config.get_or_insert_with(Default::default);
        if let Some(v) = &self.stop_signal {
            run.stop_signal = Some(v.clone());
        }
        if !self.labels.is_empty() {
            let labels = run.labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in &self.labels {
                labels.insert(k.clone(), v.clone());
            }
        }
        if !self.exposed_ports.is_empty() {
            let ports = run.exposed_ports.get_or_insert_with(BTreeMap::new);
            for p in &self.exposed_ports {
                ports.insert(port_key(p)?, serde_json::json!({}));
            }
        }
        if !self.volumes.is_empty() {
            let volumes = run.volumes.get_or_insert_with(BTreeMap::new);
            for v in &self.volumes {
                volumes.insert(v.clone(), serde_json::json!({}));
            }
        }
        Ok(())
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if b.len() < 20
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
        || !matches!(b[10], b'T' | b't')
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    match rest {
        b"Z" | b"z" => true,
        [s, h1, h2, b':', m1, m2] => {
            matches!(s, b'+' | b'-') && [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit())
        }
        _ => false,
    }
}

/// The whiteout's path for removing `path`, refused for the root, `..`
/// and whiteout names.
fn whiteout_path(path: &str) -> Result<Vec<u8>, SurgeryError> {
    let mut parts = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(invalid("path to remove", path, "it has '..'")),
            c if c.starts_with(crate::whiteout::WHITEOUT_PREFIX) => {
                return Err(invalid("path to remove", path, "it names a whiteout"))
            }
            c => parts.push(c),
        }
    }
    let Some(name) = parts.pop() else {
        return Err(invalid("path to remove", path, "it is the root"));
    };
    let mut out = parts.join("/").into_bytes();
    if !out.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(crate::whiteout::WHITEOUT_PREFIX.as_bytes());
    out.extend_from_slice(name.as_bytes());
    Ok(out)
}

/// Stores a layer of one whiteout removing `path`.
fn removal_layer<S: Ingester + ?Sized>(s: &S, path: &str) -> Result<StoredLayer, SurgeryError> {
    let wh = whiteout_path(path)?;
    let mut w = s.writer(&unique_reference()).map_err(SurgeryError::Store)?;
    let options = PackOptions::new(Compression::Gzip).with_source_date_epoch_from_env();
    let mut layer = LayerWriter::new(&mut w, &options).map_err(SurgeryError::Pack)?;
    layer
        .entry(&whiteout_entry(&wh), &[])
        .map_err(SurgeryError::Pack)?;
    let r = layer.finish().map_err(SurgeryError::Pack)?;
    w.commit(Some(r.size), Some(&r.digest))
        .map_err(SurgeryError::Store)?;
    Ok((r.media_type, r.digest, r.size, r.diff_id))
}

/// Makes the image `reference` of `store` (for `platform`, default the
/// host's, when it names an index) changed by `mutation` plus `layer`, and
/// tags it `tag`.
///
/// # Errors
/// [`SurgeryError`]: `InvalidTag` and `Invalid` before anything is read;
/// `Resolve` for a missing image; `Append` when the directory or tar
/// cannot be made a layer; `Store`, `Build`, `Tag` when writing fails.
pub fn mutate<S>(
    store: &S,
    reference: &str,
    tag: &str,
    mutation: &Mutation,
    layer: NewLayer<'_>,
    platform: Option<&Platform>,
) -> Result<Mutated, SurgeryError>
where
    S: Provider + Ingester + TagStore + Leases + ?Sized,
{
    check_tag(tag)?;
    mutation.check()?;
    let lease = store.begin_lease()?;
    let s = lease.protect(store);
    let host = Platform::host();
    let image = resolve(&s, reference, Some(platform.unwrap_or(&host)))?;
    let pack = PackOptions::new(Compression::Gzip).with_source_date_epoch_from_env();
    let (stored, what) = match layer {
        NewLayer::None => (None, String::new()),
        NewLayer::Dir(dir) => store_layer(&s, AppendSource::Dir(dir, &pack))
            .map_err(|e| SurgeryError::Append(Box::new(e)))?,
        NewLayer::Tar(reader) => store_layer(&s, AppendSource::Tarball(reader))
            .map_err(|e| SurgeryError::Append(Box::new(e)))?,
        NewLayer::Remove(path) => (Some(removal_layer(&s, path)?), format!("remove {path}")),
    };
    let mut file = image.config.file().clone();
    mutation.apply(&mut file)?;
    let manifest_type = image.manifest.media_type().clone();
    let mut descriptors = image.layers().to_vec();
    if let Some((media_type, digest, size, diff_id)) = stored {
        file.rootfs.diff_ids.push(diff_id);
        file.history.get_or_insert_with(Vec::new).push(History {
            created: Some(
                mutation
                    .created
                    .clone()
                    .unwrap_or_else(image_core::time::created_now),
            ),
            created_by: Some(mutation.created_by.clone().unwrap_or(what)),
            ..History::default()
        });
        descriptors.push(layer_descriptor(&manifest_type, &media_type, &digest, size));
    }
    let mut annotations = image.manifest.inner().annotations().clone();
    if !mutation.annotations.is_empty() {
        let a = annotations.get_or_insert_with(Default::default);
        for (k, v) in &mutation.annotations {
            a.insert(k.clone(), v.clone());
        }
    }
    let (manifest, config) = write_image(&s, &manifest_type, file, descriptors, annotations)?;
    set_tag(&s, tag, &manifest)?;
    drop(lease);
    Ok(Mutated { manifest, config })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteout_paths() {
        assert_eq!(whiteout_path("/tmp/pass").expect("ok"), b"tmp/.wh.pass");
        assert_eq!(whiteout_path("etc").expect("ok"), b".wh.etc");
        assert!(whiteout_path("/").is_err());
        assert!(whiteout_path("/a/../b").is_err());
        assert!(whiteout_path("/a/.wh.b").is_err());
    }

    #[test]
    fn ports_and_times() {
        assert_eq!(port_key("80").expect("ok"), "80/tcp");
        assert_eq!(port_key("53/UDP").expect("ok"), "53/udp");
        assert!(port_key("0").is_err() && port_key("70000").is_err() && port_key("1/x").is_err());
        assert!(is_rfc3339("2024-01-02T03:04:05Z"));
        assert!(is_rfc3339("2024-01-02T03:04:05.123+02:00"));
        assert!(!is_rfc3339("2024-01-02 03:04:05"));
        assert!(!is_rfc3339("yesterday"));
    }

    #[test]
    fn env_replaces_by_key_and_keeps_order() {
        let mut c = ConfigFile::default();
        c.config.get_or_insert_with(Default::default).env =
            Some(vec!["A=1".into(), "B=2".into(), "C=3".into()]);
        let m = Mutation {
            env: vec!["B=x".into(), "D=4".into(), "B=y".into()],
            ..Mutation::default()
        };
        m.apply(&mut c).expect("apply");
        assert_eq!(
            c.config.and_then(|r| r.env).expect("env"),
            ["A=1", "C=3", "D=4", "B=y"]
        );
    }
}
