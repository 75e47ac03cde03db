//! Registry commands: `pull`, `push`, `tags`, `manifest`, `login`,
//! `logout`, and `copy` when a registry is at one end, over
//! image-registry's blocking client.
//!
//! Without `--insecure` a registry is reached over verified HTTPS only; a
//! failure to reach it says that `--insecure` allows plain HTTP and
//! unverified TLS for that registry (as crane's flag does).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use base64::Engine;
use image_core::{Classify, ErrorKind, Reference};
use image_registry::{
    blocking, Client, CopyOptions, Location, PullOptions, PushOptions, RegistryConfig,
};
use image_store::{resolve_reference, OciDir};

use super::progress::UiArgs;
use super::store::StoreArgs;
use super::unpack_sink::SnapshotSink;

/// How to reach a registry, shared by the commands that talk to one.
#[derive(Debug, Clone, clap::Args)]
pub struct ReachArgs {
    /// Allow plain HTTP and unverified TLS for this registry.
    #[arg(long)]
    pub insecure: bool,
}

impl ReachArgs {
    /// A client for registry `domain`, with the default auth files.
    pub(crate) fn client(&self, domain: &str) -> anyhow::Result<blocking::Client> {
        self.client_for(&[domain])
    }

    /// A client for the registries `domains` (each insecure with
    /// `--insecure`), with the default auth files.
    fn client_for(&self, domains: &[&str]) -> anyhow::Result<blocking::Client> {
        let mut config = RegistryConfig::new();
        if self.insecure {
            for domain in domains {
                config = config.with_insecure(*domain);
            }
        }
        let docker_config = image_registry::DockerConfig::load_default()?;
        Ok(blocking::Client::from_builder(
            Client::builder()
                .config(config)
                .docker_config(docker_config),
        )?)
    }

    /// `result`, with the hint that names `--insecure` when the registry
    /// could not be reached without it.
    pub(crate) fn hint<T, E>(&self, domain: &str, result: Result<T, E>) -> anyhow::Result<T>
    where
        E: std::error::Error + Classify + Send + Sync + 'static,
    {
        result.map_err(|e| {
            let unreachable = e.kind() == ErrorKind::Unavailable;
            let e = anyhow::Error::new(e);
            if unreachable && !self.insecure {
                e.context(format!(
                    "cannot reach {domain} over verified HTTPS (for plain HTTP or unverified TLS, pass --insecure)"
                ))
            } else {
                e
            }
        })
    }
}

/// Arguments of `imagectl pull`.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// The image (`busybox`, `127.0.0.1:5000/app:1`, `name@sha256:...`).
    pub reference: String,
    /// The platform to take from an index (the host's by default).
    #[arg(long, conflicts_with = "all_platforms")]
    pub platform: Option<String>,
    /// Take every platform of an index.
    #[arg(long)]
    pub all_platforms: bool,
    /// Unpack the layers into snapshots while they download (in one pass),
    /// as `run` and `unpack --driver` would find them.
    #[arg(long, conflicts_with = "all_platforms")]
    pub unpack: bool,
    #[command(flatten)]
    pub place: super::snapshot::SnapshotsArgs,
    #[command(flatten)]
    pub reach: ReachArgs,
}

/// Pulls an image into the store, named by the reference it was pulled by.
pub fn pull(store: &StoreArgs, ui: &UiArgs, args: PullArgs) -> anyhow::Result<()> {
    let s = store.open()?;
    let reference = Reference::parse_name(&args.reference)?;
    let client = args.reach.client(reference.domain())?;
    let mut options = PullOptions::default()
        .with_all_platforms(args.all_platforms)
        .with_tracker(ui.tracker());
    let platform = args
        .platform
        .as_deref()
        .map(str::parse::<image_core::Platform>)
        .transpose()?;
    if let Some(p) = &platform {
        options = options.with_platform(p.clone());
    }
    let unpack_options = image_overlay::ImageUnpackOptions::default();
    let unpacker = if args.unpack {
        let snaps = args.place.open(store)?;
        let unpacker = Arc::new(image_overlay::StreamUnpacker::new(
            snaps.shared(),
            &unpack_options,
        ));
        options = options.with_layer_sink(Arc::new(SnapshotSink(unpacker.clone())));
        Some(unpacker)
    } else {
        None
    };
    let report = args
        .reach
        .hint(reference.domain(), client.pull(&reference, &s, &options))?;
    let name = report.tag.as_deref().unwrap_or(&args.reference);
    let digest = report
        .descriptor
        .as_ref()
        .map(|d| d.digest().to_string())
        .unwrap_or_default();
    println!(
        "Pulled {name} ({digest}): {} blobs fetched, {} present",
        report.fetched.len(),
        report.skipped.len()
    );
    if let (Some(unpacker), Some(root)) = (unpacker, &report.descriptor) {
        let image = image_store::image::resolve_descriptor(&s, name, root, platform.as_ref())?;
        let unpacked = unpacker
            .finish(&s, &image, &unpack_options)
            .with_context(|| format!("unpacking {name}"))?;
        println!(
            "Unpacked {name}: {} layers unpacked ({} in one pass), {} present; top snapshot {}",
            unpacked.unpacked.len(),
            unpacker.streamed().len(),
            unpacked.reused.len(),
            unpacked.top().unwrap_or_default()
        );
    }
    Ok(())
}

/// Arguments of `imagectl push`.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The image in the store.
    pub reference: String,
    /// Where to push it (a full registry reference; REFERENCE by default).
    pub dest: Option<String>,
    #[command(flatten)]
    pub reach: ReachArgs,
}

/// Pushes an image of the store to a registry.
pub fn push(store: &StoreArgs, ui: &UiArgs, args: PushArgs) -> anyhow::Result<()> {
    let s = store.open()?;
    // As given, else in the full form a pull stores names in.
    let full = Reference::parse_name(&args.reference).map(|r| r.to_string());
    let descriptor = resolve_reference(&s, &args.reference)
        .or_else(|e| match &full {
            Ok(full) if full != &args.reference => resolve_reference(&s, full),
            _ => Err(e),
        })
        .with_context(|| format!("finding {} in the store", args.reference))?;
    let dest = Reference::parse_name(args.dest.as_deref().unwrap_or(&args.reference))?;
    let client = args.reach.client(dest.domain())?;
    let options = PushOptions::default().with_tracker(ui.tracker());
    let report = args
        .reach
        .hint(dest.domain(), client.push(&s, &descriptor, &dest, &options))?;
    println!(
        "Pushed {dest} ({}): {} blobs uploaded, {} present, {} mounted",
        descriptor.digest(),
        report.uploaded.len(),
        report.skipped.len(),
        report.mounted.len()
    );
    Ok(())
}

/// Arguments of `imagectl tags`.
#[derive(Debug, clap::Args)]
pub struct TagsArgs {
    /// The repository (`127.0.0.1:5000/app`).
    pub repository: String,
    #[command(flatten)]
    pub reach: ReachArgs,
}

/// Lists a repository's tags, one a line.
pub fn tags(args: TagsArgs) -> anyhow::Result<()> {
    let reference = Reference::parse_name(&args.repository)?;
    let client = args.reach.client(reference.domain())?;
    for t in args
        .reach
        .hint(reference.domain(), client.tags(&reference))?
    {
        println!("{t}");
    }
    Ok(())
}

/// Arguments of `imagectl manifest`.
#[derive(Debug, clap::Args)]
pub struct ManifestArgs {
    /// The image (tag or digest).
    pub reference: String,
    /// Print the bytes as the registry sent them (else indented JSON).
    #[arg(long)]
    pub raw: bool,
    #[command(flatten)]
    pub reach: ReachArgs,
}

/// Prints a manifest or index from a registry.
pub fn manifest(args: ManifestArgs) -> anyhow::Result<()> {
    let reference = Reference::parse_name(&args.reference)?;
    let client = args.reach.client(reference.domain())?;
    let doc = args
        .reach
        .hint(reference.domain(), client.get_manifest(&reference))?;
    let mut out = std::io::stdout().lock();
    if args.raw {
        out.write_all(doc.raw())?;
    } else {
        let value: serde_json::Value = serde_json::from_slice(doc.raw())?;
        serde_json::to_writer_pretty(&mut out, &value)?;
        writeln!(out)?;
    }
    Ok(())
}

/// Arguments of `imagectl login`.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The registry (`127.0.0.1:5000`, `docker.io`).
    pub registry: String,
    /// The user name.
    #[arg(short, long)]
    pub username: String,
    /// Read the password from standard input.
    #[arg(long, required = true)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub reach: ReachArgs,
}

/// The largest password read from standard input.
const MAX_PASSWORD: u64 = 64 * 1024;
/// The largest Docker config file read.
const MAX_CONFIG: u64 = 4 * 1024 * 1024;

/// Checks the credentials against the registry, then keeps them in the
/// Docker config file.
pub fn login(args: LoginArgs) -> anyhow::Result<()> {
    let mut password = String::new();
    std::io::stdin()
        .take(MAX_PASSWORD)
        .read_to_string(&mut password)
        .context("reading the password from standard input")?;
    let password = password.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        bail!("no password on standard input");
    }
    let domain = Reference::parse_name(&format!("{}/x", args.registry))?
        .domain()
        .to_owned();
    let mut config = RegistryConfig::new();
    if args.reach.insecure {
        config = config.with_insecure(&domain);
    }
    let client = blocking::Client::from_builder(Client::builder().config(config).credentials(
        domain.clone(),
        image_registry::Credentials::basic(args.username.clone(), password.clone()),
    ))?;
    args.reach.hint(&domain, client.ping(&domain))?;
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", args.username));
    let path = docker_config_path()?;
    edit_config(&path, |auths| {
        auths.insert(args.registry.clone(), serde_json::json!({ "auth": auth }));
    })?;
    println!("Login Succeeded ({})", path.display());
    Ok(())
}

/// Arguments of `imagectl logout`.
#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    /// The registry.
    pub registry: String,
}

/// Removes a registry's credentials from the Docker config file.
pub fn logout(args: LogoutArgs) -> anyhow::Result<()> {
    let path = docker_config_path()?;
    let mut removed = false;
    edit_config(&path, |auths| {
        removed = auths.remove(&args.registry).is_some();
    })?;
    if !removed {
        bail!("not logged in to {}", args.registry);
    }
    println!("Removed login credentials for {}", args.registry);
    Ok(())
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
fn docker_config_path() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Ok(Path::new(&dir).join("config.json"));
    }
    let home = std::env::var_os("HOME").context("neither DOCKER_CONFIG nor HOME is set")?;
    Ok(Path::new(&home).join(".docker/config.json"))
}

/// Changes the `auths` of the Docker config file at `path` (other keys
/// kept), written beside it with mode 0600 and renamed over it. A config
/// file that is a symlink (a dotfile manager's link into a repository) is
/// written through: the file it resolves to is replaced (or made, with
/// its directory, for a dangling link), the link kept, as Docker's CLI
/// does (`configfile.Save` resolves the link first). Replacing the link
/// with a file cut the user's file off from it.
fn edit_config(
    path: &Path,
    change: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let resolved =
        resolve_link(path).with_context(|| format!("resolving the links to {}", path.display()))?;
    let path = resolved.as_path();
    let dir = path.parent().context("the config file has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut doc = match std::fs::File::open(path) {
        Ok(f) => {
            let mut raw = Vec::new();
            f.take(MAX_CONFIG + 1)
                .read_to_end(&mut raw)
                .with_context(|| format!("reading {}", path.display()))?;
            if raw.len() as u64 > MAX_CONFIG {
                bail!("{} is larger than {MAX_CONFIG} bytes", path.display());
            }
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&raw)
                .with_context(|| format!("parsing {}", path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::Map::new(),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let auths = doc
        .entry("auths")
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()
        .with_context(|| format!("{}: \"auths\" is not an object", path.display()))?;
    change(auths);
    let partial = dir.join(format!(".config.json.{}.partial", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)?;
        serde_json::to_writer_pretty(&mut f, &doc)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&partial, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

/// The file `path` resolves to, links followed; for a path that does not
/// exist (a dangling link, a chain of links ending in nothing, no file
/// yet), the missing file its last link names, or `path` itself, as Go's
/// `filepath.EvalSymlinks` reports it to Docker's CLI. At most 40 links
/// are followed (the kernel's bound).
fn resolve_link(path: &Path) -> std::io::Result<PathBuf> {
    match std::fs::canonicalize(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        other => return other,
    }
    let mut at = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(&at)?;
                at = at.parent().unwrap_or(Path::new("")).join(to);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(at),
            // A directory on the way is missing, or this is not a link.
            _ => return std::fs::canonicalize(&at),
        }
    }
    Err(rustix::io::Errno::LOOP.into())
}

/// The prefix of a registry reference in `imagectl copy`.
pub const DOCKER_PREFIX: &str = "docker://";

/// The flags of `imagectl copy` that concern registries and indexes.
#[derive(Debug, Clone, clap::Args)]
pub struct CopyFlags {
    /// Copy every platform of an index (the default).
    #[arg(long, conflicts_with = "platform")]
    pub all_platforms: bool,
    /// Copy only this platform's manifest of an index (`linux/arm64/v8`).
    #[arg(long)]
    pub platform: Option<String>,
    /// Copy the referrers (signatures, SBOMs, attestations) of every
    /// manifest copied, recursively: between registries, stores, OCI
    /// layouts and OCI archives (a layout or an archive lists them in its
    /// index.json, untagged, as oras does).
    #[arg(long)]
    pub referrers: bool,
    #[command(flatten)]
    pub reach: ReachArgs,
}

/// Whether `imagectl copy` goes through image-registry's copy: a registry
/// at one end, or a flag only it has (a store-to-store copy of every
/// platform keeps image-store's copy and its report).
pub fn wants_registry_copy(source: &str, destination: &str, flags: &CopyFlags) -> bool {
    source.starts_with(DOCKER_PREFIX)
        || destination.starts_with(DOCKER_PREFIX)
        || flags.platform.is_some()
        || flags.referrers
}

/// The prefix of an OCI layout at either end of `imagectl copy`
/// (skopeo's transport name).
pub const LAYOUT_PREFIX: &str = "oci:";

/// The prefix of an OCI archive at either end of `imagectl copy`
/// (skopeo's transport name).
pub const ARCHIVE_PREFIX: &str = "oci-archive:";

/// The OCI archive `spec` names (`oci-archive:PATH[:REF]`, split at the
/// first colon as skopeo does), if it names one.
pub fn archive_location<S>(spec: &str) -> Option<image_registry::Location<'static, S>> {
    let rest = spec.strip_prefix(ARCHIVE_PREFIX)?;
    let (path, name) = match rest.split_once(':') {
        Some((path, name)) => (path, Some(name.to_owned())),
        None => (rest, None),
    };
    Some(image_registry::Location::Archive {
        path: path.into(),
        name,
    })
}

/// One end of a copy: the store or layout, the name in it (or the
/// `docker://` reference), and the end as given.
type End<'a> = (&'a OciDir, &'a str, &'a str);

/// Copies between registries, stores and layouts.
pub fn copy(src: End<'_>, dst: End<'_>, ui: &UiArgs, flags: &CopyFlags) -> anyhow::Result<()> {
    fn end<'a>((store, name, spec): End<'a>, to: bool) -> anyhow::Result<Location<'a, OciDir>> {
        if let Some(archive) = archive_location(name) {
            return Ok(archive);
        }
        Ok(match name.strip_prefix(DOCKER_PREFIX) {
            Some(r) => Location::Registry(Reference::parse_name(r)?),
            // `oci:DIR` at a destination: an unnamed entry of its index,
            // as skopeo writes it.
            None if spec.starts_with(LAYOUT_PREFIX) && name.is_empty() && to => {
                Location::Untagged { store }
            }
            // `oci:DIR` at a source: the layout's only image.
            None if spec.starts_with(LAYOUT_PREFIX) && name.is_empty() => {
                Location::OnlyImage { store }
            }
            // An OCI layout keeps referrers as untagged index entries.
            None if spec.starts_with(LAYOUT_PREFIX) => Location::Layout {
                store,
                name: name.to_owned(),
            },
            None => Location::Store {
                store,
                name: name.to_owned(),
            },
        })
    }
    let from = end(src, false)?;
    let to = end(dst, true)?;
    let domains: Vec<&str> = [&from, &to]
        .into_iter()
        .filter_map(|l| match l {
            Location::Registry(r) => Some(r.domain()),
            _ => None,
        })
        .collect();
    let client = flags.reach.client_for(&domains)?;
    let mut options = CopyOptions::default()
        .with_referrers(flags.referrers)
        .with_tracker(ui.tracker());
    if let Some(p) = &flags.platform {
        options = options.with_platform(p.parse()?);
    }
    let shown = domains.join(", ");
    let report = flags
        .reach
        .hint(&shown, client.copy(&from, &to, &options))?;
    let digest = report
        .descriptor
        .map(|d| d.digest().to_string())
        .unwrap_or_default();
    println!(
        "Copied {} to {} ({digest}): {} blobs copied, {} present, {} mounted, {} referrers",
        src.2,
        dst.2,
        report.copied,
        report.skipped,
        report.mounted,
        report.referrers.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config file that is a link is written through it: the link stays,
    /// the file it names gets the change, other keys kept. Before, the link
    /// was replaced with a new file.
    #[test]
    fn a_linked_config_file_is_written_through_the_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dotfiles = dir.path().join("dotfiles");
        std::fs::create_dir(&dotfiles).expect("mkdir");
        let real = dotfiles.join("docker-config.json");
        std::fs::write(&real, br#"{"auths":{},"psFormat":"table"}"#).expect("write");
        let docker = dir.path().join("docker");
        std::fs::create_dir(&docker).expect("mkdir");
        let link = docker.join("config.json");
        std::os::unix::fs::symlink("../dotfiles/docker-config.json", &link).expect("symlink");
        // Logs in to `registry` through the link, which must stay one; the
        // config file it names, after.
        let login = |registry: &str| {
            edit_config(&link, |auths| {
                auths.insert(registry.into(), serde_json::json!({ "auth": "eA==" }));
            })
            .expect("edit");
            let kind = std::fs::symlink_metadata(&link).expect("lstat").file_type();
            assert!(kind.is_symlink(), "the link was replaced");
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(&real).expect("read"))
                .expect("json")
        };
        let json = login("r.example");
        assert_eq!(json["auths"]["r.example"]["auth"], "eA==");
        assert_eq!(json["psFormat"], "table");
        // Nothing left beside either.
        assert_eq!(std::fs::read_dir(&docker).expect("ls").count(), 1);
        assert_eq!(std::fs::read_dir(&dotfiles).expect("ls").count(), 1);

        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&real).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        // A dangling link, through a second link: the file the last one
        // names is made, both links kept.
        std::fs::remove_file(&real).expect("rm");
        std::fs::rename(&link, docker.join("second")).expect("mv");
        std::os::unix::fs::symlink("second", &link).expect("symlink");
        assert_eq!(login("s.example")["auths"]["s.example"]["auth"], "eA==");
        let second = std::fs::symlink_metadata(docker.join("second")).expect("lstat");
        assert!(second.file_type().is_symlink());
    }
}
