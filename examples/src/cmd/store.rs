//! Store commands: `images`, `inspect`, `tag`, `rmi`, `gc`, `fsck`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use image_core::{DescriptorExt, Platform, Reference};
use image_store::fsck::FsckOptions;
use image_store::gc::GcOptions;
use image_store::image::{resolve_descriptor, resolve_image};
use image_store::{resolve_reference, OciDir, TagStore};

/// The store options every store command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// The store directory (an OCI image layout). Default: $IMAGECTL_STORE,
    /// else $XDG_DATA_HOME/imagectl/store, else ~/.local/share/imagectl/store.
    #[arg(long, global = true, env = "IMAGECTL_STORE")]
    pub store: Option<PathBuf>,
}

impl StoreArgs {
    /// The store directory chosen.
    pub fn path(&self) -> PathBuf {
        if let Some(p) = &self.store {
            return p.clone();
        }
        let data = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("."));
        data.join("imagectl/store")
    }

    /// Opens the store, creating it when absent.
    pub fn open(&self) -> anyhow::Result<OciDir> {
        let p = self.path();
        OciDir::open_or_create(&p).with_context(|| format!("opening store {}", p.display()))
    }
}

/// Arguments of `imagectl images`.
#[derive(Debug, clap::Args)]
pub struct ImagesArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Lists the tagged images.
pub fn images(store: &StoreArgs, args: ImagesArgs) -> anyhow::Result<()> {
    let s = store.open()?;
    let mut rows = Vec::new();
    // The build cache's records are images of the store, not the user's.
    for t in s.tags()?.into_iter().filter(|t| {
        !image_build::cache::is_cache_reference(&t.name)
            && !image_build::provenance::is_referrers_reference(&t.name)
    }) {
        // The listed descriptor itself: resolving each name again would
        // read index.json once per tag.
        let image = resolve_descriptor(&s, &t.name, &t.descriptor, None);
        let (id, size, err) = match &image {
            Ok(i) => (
                Some(i.id().clone()),
                i.size_on_disk(&s).ok(),
                None::<String>,
            ),
            Err(e) => (None, None, Some(e.to_string())),
        };
        rows.push((t, id, size, err));
    }
    if args.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(t, id, size, err)| {
                serde_json::json!({
                    "name": t.name,
                    "digest": t.descriptor.digest().to_string(),
                    "mediaType": t.descriptor.media_type().to_string(),
                    "id": id.as_ref().map(ToString::to_string),
                    "size": size,
                    "error": err,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<40} {:<20} {:<14} {:>10}",
        "REPOSITORY", "TAG", "IMAGE ID", "SIZE"
    );
    for (t, id, size, _) in rows {
        let (repo, tag) = match t.name.parse::<Reference>() {
            Ok(r) => (
                r.without_tag().without_digest().familiar_name(),
                r.tag().unwrap_or("<none>").to_owned(),
            ),
            Err(_) => (t.name.clone(), "<none>".into()),
        };
        let id = id
            .map(|d| d.short().to_owned())
            .unwrap_or_else(|| "<error>".into());
        let size = size.map(human_size).unwrap_or_default();
        println!("{repo:<40} {tag:<20} {id:<14} {size:>10}");
    }
    Ok(())
}

/// A size as `docker images` prints it (decimal units).
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}{}", UNITS[u])
            .replace(".000", "")
            .to_string()
    }
}

/// Arguments of `imagectl inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The image reference.
    pub reference: String,
    /// Show the history as `docker history` does instead of the documents.
    #[arg(long)]
    pub history: bool,
    /// The platform to choose from an index (default: the host's).
    #[arg(long)]
    pub platform: Option<String>,
    /// List the manifests that refer to the image's manifest (OCI
    /// referrers: a provenance record of `imagectl build --provenance`)
    /// instead of the documents.
    #[arg(long, conflicts_with = "history")]
    pub referrers: bool,
}

/// Prints an image's manifest, config and IDs, or its history.
pub fn inspect(store: &StoreArgs, args: InspectArgs) -> anyhow::Result<()> {
    let s = store.open()?;
    let platform = args
        .platform
        .as_deref()
        .map(str::parse::<Platform>)
        .transpose()?;
    let image = resolve_image(&s, &args.reference, platform.as_ref())?;
    if args.referrers {
        let found = image_build::provenance::referrers(&s, image.manifest_digest())?;
        println!("{}", serde_json::to_string_pretty(&found)?);
        return Ok(());
    }
    if args.history {
        println!(
            "{:<14} {:<30} {:<60} {:>10}  COMMENT",
            "IMAGE", "CREATED", "CREATED BY", "SIZE"
        );
        let mut layers = image.layers().iter();
        let mut rows = Vec::new();
        for h in image.history() {
            let size = if h.empty_layer {
                0
            } else {
                layers.next().map_or(0, |l| l.size())
            };
            rows.push((h, size));
        }
        for (i, (h, size)) in rows.iter().enumerate().rev() {
            let id = if i + 1 == rows.len() {
                image.id().short().to_owned()
            } else {
                "<missing>".to_owned()
            };
            let mut by = h.created_by.clone().unwrap_or_default();
            if by.chars().count() > 58 {
                by = by.chars().take(55).collect::<String>() + "...";
            }
            println!(
                "{id:<14} {:<30} {by:<60} {:>10}  {}",
                h.created.as_deref().unwrap_or(""),
                human_size(*size),
                h.comment.as_deref().unwrap_or("")
            );
        }
        return Ok(());
    }
    let manifest: serde_json::Value = serde_json::from_slice(image.manifest.raw())?;
    let config: serde_json::Value = serde_json::from_slice(image.config.raw())?;
    let v = serde_json::json!({
        "name": image.name,
        "id": image.id().to_string(),
        "manifestDigest": image.manifest_digest().to_string(),
        "mediaType": image.manifest.media_type().to_string(),
        "chainIds": image.config.chain_ids().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "manifest": manifest,
        "config": config,
    });
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// Arguments of `imagectl history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// The image reference.
    pub reference: String,
    /// The platform to choose from an index (default: the host's).
    #[arg(long)]
    pub platform: Option<String>,
}

/// `imagectl history REF`: `imagectl inspect --history REF`.
pub fn history(store: &StoreArgs, args: HistoryArgs) -> anyhow::Result<()> {
    inspect(
        store,
        InspectArgs {
            reference: args.reference,
            history: true,
            platform: args.platform,
            referrers: false,
        },
    )
}

/// Arguments of `imagectl tag`.
#[derive(Debug, clap::Args)]
pub struct TagArgs {
    /// The existing image.
    pub source: String,
    /// The new name.
    pub target: String,
}

/// Gives an image another name (the source may be a digest reference; the
/// new name may not hold a digest).
pub fn tag(store: &StoreArgs, args: TagArgs) -> anyhow::Result<()> {
    let s = store.open()?;
    let desc = resolve_reference(&s, &args.source)?;
    s.set_tag(&args.target, &desc)?;
    Ok(())
}

/// Arguments of `imagectl rmi`.
#[derive(Debug, clap::Args)]
pub struct RmiArgs {
    /// The names to remove.
    #[arg(required = true)]
    pub references: Vec<String>,
}

/// Removes tags; `imagectl gc` then frees the blobs nothing else uses.
/// `NAME@DIGEST` removes an image by content, as `docker rmi` does: every
/// tag of NAME's repository that points at the digest.
pub fn rmi(store: &StoreArgs, args: RmiArgs) -> anyhow::Result<()> {
    let s = store.open()?;
    for r in &args.references {
        if r.contains('@') {
            for name in untag_digest(&s, r)? {
                println!("Untagged: {name}");
            }
            continue;
        }
        if !s.remove_tag(r)? {
            bail!("no such image: {r}");
        }
        println!("Untagged: {r}");
    }
    Ok(())
}

/// Removes, in one update of `index.json`, the tags of the repository of
/// `reference` (`NAME@DIGEST`, resolved by content) that point at the
/// digest, and any entry an older version stored under that very name;
/// returns the names removed.
fn untag_digest(s: &OciDir, reference: &str) -> anyhow::Result<Vec<String>> {
    let wanted = Reference::parse_name(reference)?;
    let repository = wanted.name();
    // Entries an older version stored with a digest in their name are no
    // tags (resolve_reference does not see them): removed by name.
    let legacy = s.remove_tag(reference)?;
    let found = match resolve_reference(s, reference) {
        Ok(d) => Some(d.checked_digest()?),
        Err(image_store::TagError::DigestNotFound { .. }) if legacy => None,
        Err(e) => return Err(e.into()),
    };
    let mut removed = Vec::new();
    if let Some(digest) = &found {
        s.update_index(|manifests| {
            manifests.retain(|m| {
                let hit = image_store::tags::ref_name(m).filter(|n| {
                    !n.contains('@')
                        && Reference::parse_tag(n).is_ok_and(|t| t.name() == repository)
                        && m.checked_digest().is_ok_and(|d| d == *digest)
                });
                if let Some(n) = hit {
                    removed.push(n.to_owned());
                }
                hit.is_none()
            });
            Ok(!removed.is_empty())
        })?;
        if removed.is_empty() {
            // Found inside an index a tag points at: removing that tag would
            // remove the other platforms too.
            bail!(
                "{reference} is a manifest listed in an index tagged in {repository}, \
                 not tagged itself: remove the index's tag instead"
            );
        }
    }
    if legacy {
        removed.push(reference.to_owned());
    }
    Ok(removed)
}

/// Arguments of `imagectl gc` (its help, on the `Gc` command, says why
/// the default grace is short).
#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Keep unreferenced blobs younger than this many seconds: a second
    /// line of defence for other tools writing into the store without a
    /// lease (this tool's writers hold leases).
    #[arg(long, default_value_t = image_store::gc::DEFAULT_GRACE.as_secs())]
    pub grace: u64,
    /// Only report what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Removes blobs no tag or lease reaches.
pub fn gc(store: &StoreArgs, args: GcArgs) -> anyhow::Result<()> {
    let s = store.open()?;
    let report = s.gc(&GcOptions::default()
        .grace(Duration::from_secs(args.grace))
        .dry_run(args.dry_run))?;
    if args.json {
        let v = serde_json::json!({
            "marked": report.marked,
            "removed": report.removed.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "freedBytes": report.freed_bytes,
            "keptRecent": report.kept_recent,
            "ingestsRemoved": report.ingests_removed,
            "ingestBytes": report.ingest_bytes,
            "leasesExpired": report.leases_expired,
            "leasesStale": report.leases_stale,
            "dryRun": args.dry_run,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let verb = if args.dry_run {
            "would remove"
        } else {
            "removed"
        };
        println!(
            "{verb} {} blobs ({}), kept {} reachable and {} recent; \
             {verb} {} stale ingests ({}) and {} stale leases, {} expired leases",
            report.removed.len(),
            human_size(report.freed_bytes),
            report.marked,
            report.kept_recent,
            report.ingests_removed,
            human_size(report.ingest_bytes),
            report.leases_stale,
            report.leases_expired,
        );
    }
    Ok(())
}

/// Arguments of `imagectl fsck`.
#[derive(Debug, clap::Args)]
pub struct FsckArgs {
    /// Remove blobs that do not hash to their name.
    #[arg(long)]
    pub remove_corrupt: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Re-hashes every blob and checks every tag's closure; fails when not clean.
pub fn fsck(store: &StoreArgs, args: FsckArgs) -> anyhow::Result<()> {
    let s = store.open()?;
    let r = s.fsck(&FsckOptions::default().remove_corrupt(args.remove_corrupt))?;
    if args.json {
        let v = serde_json::json!({
            "checked": r.checked,
            "bytes": r.bytes,
            "corrupt": r.corrupt.iter().map(|c| serde_json::json!({"digest": c.digest.to_string(), "problem": c.problem})).collect::<Vec<_>>(),
            "strays": r.strays,
            "missing": r.missing.iter().map(|m| serde_json::json!({"digest": m.digest.to_string(), "root": m.root})).collect::<Vec<_>>(),
            "dangling": r.dangling.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "removed": r.removed.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "staleIngests": r.stale_ingests.iter().map(|i| serde_json::json!({"reference": i.reference, "bytes": i.offset})).collect::<Vec<_>>(),
            "staleLeases": r.stale_leases,
            "clean": r.is_clean(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("checked {} blobs ({})", r.checked, human_size(r.bytes));
        for c in &r.corrupt {
            println!("corrupt: {} ({})", c.digest, c.problem);
        }
        for p in &r.strays {
            println!("stray: {}", p.display());
        }
        for m in &r.missing {
            println!("missing: {} (from {})", m.digest, m.root);
        }
        println!("dangling: {} (gc frees them)", r.dangling.len());
        for i in &r.stale_ingests {
            println!(
                "stale ingest: {} ({}, no writer holds it; gc removes it)",
                i.reference,
                human_size(i.offset)
            );
        }
        for l in &r.stale_leases {
            println!("stale lease: {l} (its holder is gone; gc removes it)");
        }
        for d in &r.removed {
            println!("removed: {d}");
        }
    }
    if !r.is_clean() {
        bail!("the store is not clean");
    }
    Ok(())
}
