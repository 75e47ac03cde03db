//! What a build says about its result: the manifest's annotations
//! (`--annotation`, and the OCI `org.opencontainers.image.*` ones when
//! asked, as BuildKit fills them) and the provenance record attached to
//! the image as an OCI referrer ([`crate::provenance`]).

use std::collections::BTreeMap;

use image_core::config::ConfigFile;
use image_core::Digest;
use image_store::{ContentStore, Leases, TagStore};

use super::graph::Source;
use super::{BuildError, Run};
use crate::provenance::{Material, Provenance};

/// `org.opencontainers.image.created`.
pub const CREATED: &str = "org.opencontainers.image.created";
/// `org.opencontainers.image.base.name`.
pub const BASE_NAME: &str = "org.opencontainers.image.base.name";
/// `org.opencontainers.image.base.digest`.
pub const BASE_DIGEST: &str = "org.opencontainers.image.base.digest";
/// `org.opencontainers.image.source`.
pub const SOURCE: &str = "org.opencontainers.image.source";
/// `org.opencontainers.image.revision`.
pub const REVISION: &str = "org.opencontainers.image.revision";

impl<S> Run<'_, S>
where
    S: ContentStore + TagStore + Leases + Sync + ?Sized,
{
    /// The image the target stage starts from through its chain of FROMs:
    /// its name as the Dockerfile gives it (expanded), `None` for scratch.
    fn base_name(&self) -> Option<String> {
        super::preflight::target_base(self.df, self.expander, self.graph).map(|(_, name)| name)
    }

    /// The manifest's annotations: with
    /// [`oci_annotations`](super::BuildOptions::oci_annotations), `created`
    /// (the config's), `base.name` and `base.digest` (the target's base
    /// image, none from scratch), and `source` and `revision` from the
    /// labels of those names, as BuildKit fills them; then
    /// [`annotations`](super::BuildOptions::annotations) of the manifest
    /// level for this platform, which win.
    pub(super) fn manifest_annotations(
        &self,
        base: Option<&Digest>,
        config: &ConfigFile,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if self.options.oci_annotations {
            if let Some(c) = &config.created {
                out.insert(CREATED.to_owned(), c.clone());
            }
            if let (Some(name), Some(digest)) = (self.base_name(), base) {
                out.insert(BASE_NAME.to_owned(), name);
                out.insert(BASE_DIGEST.to_owned(), digest.to_string());
            }
            let labels = config.config.as_ref().and_then(|c| c.labels.as_ref());
            for key in [SOURCE, REVISION] {
                if let Some(v) = labels.and_then(|l| l.get(key)) {
                    out.insert(key.to_owned(), v.clone());
                }
            }
        }
        out.extend(
            self.annotations
                .of(super::annotate::Level::Manifest, Some(&self.platform)),
        );
        out
    }

    /// The provenance of the build: the base images of the stages built
    /// (by digest, resolved as the build resolved them), the build args,
    /// the Dockerfile's file name (never the path it was named by) and
    /// digest, the target.
    pub(super) fn provenance(&self, dockerfile: &str) -> Result<Provenance, BuildError> {
        let mut materials: Vec<Material> = Vec::new();
        for stage in &self.df.stages {
            if !self.graph.is_needed(stage.index) {
                continue;
            }
            let from = self.expander.from(stage)?;
            let Source::Image(name) = self.graph.source(&from.image, stage.index) else {
                continue;
            };
            let image = self
                .resolve(&name, &self.stage_platforms[stage.index])
                .map_err(self.at(stage.pos.line, "FROM".into()))?;
            let m = Material {
                name,
                digest: image.manifest_digest().clone(),
            };
            if !materials.contains(&m) {
                materials.push(m);
            }
        }
        // Its file name, as BuildKit records it: the path it was named by
        // is a directory of the builder's machine.
        let name = std::path::Path::new(self.file).file_name().map_or_else(
            || self.file.to_owned(),
            |n| n.to_string_lossy().into_owned(),
        );
        Ok(Provenance {
            dockerfile: name,
            dockerfile_digest: Digest::sha256(dockerfile.as_bytes()),
            target: self.options.target.clone(),
            build_args: self.options.build_args.clone(),
            materials,
        })
    }
}
