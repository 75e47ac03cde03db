//! The steps that make a layer (RUN, COPY, ADD): the cache is asked
//! first; on a miss, an active snapshot is prepared on the stage's
//! committed one, changed (COPY/ADD through a mount of it, RUN in a
//! container whose root it is), its changes stored as one layer and the
//! snapshot committed under the chain ID of the stage's layers.
//!
//! A failing step leaves no active snapshot, view or mount behind: each is
//! held by a guard that undoes it on every path.
//!
//! # `COPY --link` and `ADD --link`
//! The copy is made into an empty snapshot, as BuildKit's merge-op does:
//! its layer holds the files copied and, as plain directories (0755,
//! owned by the `--chown` owner, else root), every directory of the
//! destination's path; its cache key is the instruction, the working
//! directory and the digest of what is copied, never the stage's layers,
//! so a rebuild on another base reuses the layer. The layer is then
//! stacked on the stage's: the next step that needs a filesystem applies
//! it onto the stage's snapshot. Where this differs from a plain COPY:
//! - a destination directory the base already has is not looked at: the
//!   layer's directory (root's, 0755) replaces its owner and mode, where a
//!   plain COPY keeps them;
//! - a destination directory that is a symlink in the base is not followed:
//!   the layer's directory replaces the link;
//! - a `--chown` by name is looked up in the layer's own empty root (no
//!   `/etc/passwd`), so only numeric ids are taken.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use image_core::progress::{Cancelled, Interrupt};
use image_core::Digest;
use image_overlay::mount::{MountGuard, SysMounter};
use image_overlay::snapshot::{Kind, Snapshotter};
use image_overlay::PackOptions;
use image_store::{ContentStore, Leases, TagStore};

use super::error::StepError;
use super::events::BuildEvent;
use super::graph::Source;
use super::state::{Entry, State};
use super::{history, Run};
use crate::cache::{self, CacheKey, CachedLayer};
use crate::copy::{self, CopySource, CopySpec};
use crate::dockerfile::{Command, Scope, PROXY_ARGS};
use crate::run::{self, RunSpec};
use crate::Layer;

/// A snapshot this step made (active, or a view), removed on drop unless
/// kept.
struct SnapshotGuard<'a> {
    sn: &'a dyn Snapshotter,
    key: String,
    keep: bool,
}

impl Drop for SnapshotGuard<'_> {
    fn drop(&mut self) {
        if !self.keep {
            let _ = self.sn.remove(&self.key);
        }
    }
}

/// An empty directory made for a mount, removed on drop (after the mount
/// guard declared after it has unmounted).
struct MountDir(PathBuf);

impl Drop for MountDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A name no other step of any process uses: `<prefix>-<pid>-<n>-<nanos>`.
fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A layer step's key held in [`super::Counts::running`] until dropped.
///
/// Dropped before [`Claim::succeeded`] (the step failed, or panicked), it
/// sets the build's interrupt before it lets the key go: a step of
/// another platform waiting for the key then stops, cancelled, instead
/// of finding no layer and running the failed step again (the failure
/// reaches the scheduler, which sets the same interrupt, only later).
struct Claim<'c> {
    counts: &'c super::Counts,
    cancel: &'c Interrupt,
    key: Digest,
    succeeded: bool,
}

impl Claim<'_> {
    /// The step made or found its layer (recorded in `made` first).
    fn succeeded(mut self) {
        self.succeeded = true;
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.succeeded {
            self.cancel.set();
        }
        super::lock(&self.counts.running).remove(&self.key);
        self.counts.finished.notify_all();
    }
}

impl super::Counts {
    /// Holds `key` as running, after waiting while another step holds it;
    /// `interrupted` (the build's interrupt, which `cancel` sets) is
    /// looked at before each wait and after the last, so a step whose
    /// claim was dropped without success stops its waiters cancelled.
    fn claim<'c>(
        &'c self,
        key: &Digest,
        cancel: &'c Interrupt,
        interrupted: impl Fn() -> Result<(), Cancelled>,
    ) -> Result<Claim<'c>, StepError> {
        let mut running = super::lock(&self.running);
        while running.contains(key) {
            interrupted().map_err(StepError::Cancelled)?;
            running = self
                .finished
                .wait_timeout(running, std::time::Duration::from_millis(100))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        // The step waited for failed (its claim set the interrupt).
        interrupted().map_err(StepError::Cancelled)?;
        running.insert(key.clone());
        Ok(Claim {
            counts: self,
            cancel,
            key: key.clone(),
            succeeded: false,
        })
    }
}

/// A root filesystem mounted read-only for `COPY --from` (or an empty
/// directory for a source with no layer), undone on drop.
struct SourceRoot<'a> {
    // Dropped in order: unmount, then the view, then the directory.
    _mount: Option<MountGuard<SysMounter>>,
    _view: Option<SnapshotGuard<'a>>,
    dir: MountDir,
}

/// How a layer step's work changes the active snapshot.
enum Work<'a> {
    Copy {
        spec: Box<CopySpec>,
        plan: Box<copy::CopyPlan>,
        from: Option<SourceRoot<'a>>,
    },
    Run {
        spec: RunSpec,
        /// The stage it runs in (for its mounts' `from`).
        stage: usize,
        /// How each of its mounts that binds the context shows it
        /// ([`Run::mounts_key`]).
        views: Vec<Option<crate::mounts::ContextView>>,
    },
    /// An `ADD` of remote sources: only a cache record gives its layer.
    Remote { source: String },
}

impl<'b, S> Run<'b, S>
where
    S: ContentStore + TagStore + Leases + Sync + ?Sized,
{
    fn snapshotter(&self) -> &'b dyn Snapshotter {
        // Checked when the build starts.
        self.runtime
            .snapshots()
            .map(|s| s.snapshotter())
            .expect("the runtime has snapshots")
    }

    /// Holds `key` as running for the step that has it, in a multi-platform
    /// build (`None` in a build of one platform), after waiting while
    /// another platform's step of the same key runs.
    ///
    /// # Errors
    /// [`StepError::Cancelled`] when the build is interrupted while waiting
    /// (as it is when the step waited for fails).
    fn claim(&self, key: &Digest) -> Result<Option<Claim<'_>>, StepError> {
        if !self.shared {
            return Ok(None);
        }
        let interrupted = || {
            if self.caller_interrupted() {
                self.cancel.set();
            }
            self.tracker.check()
        };
        self.counts.claim(key, &self.cancel, interrupted).map(Some)
    }

    /// A directory for a mount, below the runtime's state directory.
    fn mount_dir(&self) -> Result<MountDir, StepError> {
        let parent = self.runtime.root().join("build");
        let dir = parent.join(unique("mnt"));
        std::fs::create_dir_all(&parent)
            .and_then(|()| std::fs::create_dir(&dir))
            .map_err(|source| StepError::MountPoint {
                dir: dir.clone(),
                source,
            })?;
        Ok(MountDir(dir))
    }

    /// Makes the committed snapshots of `state`'s layers present (after
    /// cache hits they may not be) and returns the top one's name.
    fn ensure_top(&self, state: &mut State) -> Result<Option<String>, StepError> {
        self.ensure(&state.layers, &mut state.top)
    }

    /// Makes `top`, the committed snapshot of `layers`, known to be present.
    fn ensure(
        &self,
        layers: &[Layer],
        top: &mut Option<String>,
    ) -> Result<Option<String>, StepError> {
        if top.is_none() && !layers.is_empty() {
            *top = cache::ensure_snapshots(
                &self.lease.protect(self.store),
                self.snapshotter(),
                layers,
                Some(&self.tracker),
            )
            .map_err(|e| StepError::Cache(Box::new(e)))?;
        }
        Ok(top.clone())
    }

    /// The read-only root filesystem of `layers` on a new directory.
    fn view_of(
        &self,
        (layers, mut top): (Vec<Layer>, Option<String>),
    ) -> Result<SourceRoot<'b>, StepError> {
        let dir = self.mount_dir()?;
        let Some(top) = self.ensure(&layers, &mut top)? else {
            return Ok(SourceRoot {
                _mount: None,
                _view: None,
                dir,
            });
        };
        let sn = self.snapshotter();
        let key = unique("build-view");
        let mounts = sn.view(&key, Some(&top)).map_err(|e| snap_err(&key, e))?;
        let view = SnapshotGuard {
            sn,
            key: key.clone(),
            keep: false,
        };
        let mount =
            MountGuard::mount(SysMounter, &mounts, &dir.0).map_err(|e| StepError::Mount {
                key,
                source: Box::new(e),
            })?;
        Ok(SourceRoot {
            _mount: Some(mount),
            _view: Some(view),
            dir,
        })
    }

    /// The layers (and their snapshot, when known) a `COPY --from` reads:
    /// an earlier stage's, or an image's. Only those are taken, never the
    /// stage's whole state.
    fn source_layers(
        &self,
        from: &str,
        at: usize,
    ) -> Result<(Vec<Layer>, Option<String>), StepError> {
        match self.graph.source(from, at) {
            Source::Scratch => Ok((Vec::new(), None)),
            Source::Stage(j) => {
                let states = super::lock(&self.states);
                let state = states[j].as_ref().ok_or_else(|| StepError::Invalid {
                    what: "--from",
                    value: from.to_owned(),
                    reason: "names a stage that is not built",
                })?;
                Ok((state.layers.clone(), state.top.clone()))
            }
            Source::Image(name) => Ok((
                super::state::image_layers(&self.resolve(&name, &self.platform)?),
                None,
            )),
        }
    }

    /// The build args a RUN sees as environment (`K=V`, sorted): the
    /// stage's ARGs that no ENV shadows, and the proxy args given.
    fn run_args(&self, state: &State, scope: &Scope) -> Vec<String> {
        let env = state.env_map();
        let mut args: std::collections::BTreeMap<&str, &str> = scope
            .args
            .iter()
            .filter(|(k, _)| !env.contains_key(*k))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        for (k, v) in &self.options.build_args {
            if PROXY_ARGS.contains(&k.as_str()) && !env.contains_key(k) {
                args.insert(k, v);
            }
        }
        args.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// The part of a RUN's cache key its mounts make: each mount's spec
    /// (never a secret's value, never a cache's content) and, for a bind
    /// mount, what it reads: the chain ID of a stage's or image's layers,
    /// or the content digest of the context files (added to `inputs`).
    /// With it, for each mount (by index), how a bind of the context shows
    /// it when the context has ignore rules, decided from the same walk:
    /// whole when they exclude nothing under its source, else the build's
    /// filtered copy of that content.
    fn mounts_key(
        &self,
        spec: &RunSpec,
        stage: usize,
        inputs: &mut Vec<Digest>,
    ) -> Result<(String, Vec<Option<crate::mounts::ContextView>>), StepError> {
        let setup_err = |e| {
            StepError::Run(Box::new(run::RunError::MountSetup {
                source: Box::new(e),
            }))
        };
        let mut text = String::new();
        let mut views = vec![None; spec.mounts.len()];
        for (m, view) in spec.mounts.iter().zip(&mut views) {
            text.push_str("\0mount=");
            text.push_str(&m.key());
            let crate::mounts::MountSpec::Bind(b) = m else {
                continue;
            };
            match &b.from {
                Some(f) => {
                    let (layers, _) = self.source_layers(f, stage)?;
                    text.push_str(",layers=");
                    text.push_str(&cache::chain_name(&layers).unwrap_or_default());
                }
                None if crate::mounts::has_ignore_rules(self.context) => {
                    // What the mount shows: a COPY of the source from the
                    // context, what its ignore rules exclude left out.
                    let rel =
                        crate::mounts::context_path(self.context, &b.source).map_err(setup_err)?;
                    let copy = CopySpec::new(vec![rel], "/".to_owned(), "/".to_owned());
                    let plan = copy::plan(&CopySource::Context(self.context), &copy)
                        .map_err(|e| StepError::Copy(Box::new(e)))?;
                    // The whole source shows what the copy would: the key
                    // is the plan's either way.
                    *view = Some(if plan.excluded_any() {
                        crate::mounts::ContextView::Filtered(plan.digest.clone())
                    } else {
                        crate::mounts::ContextView::Whole
                    });
                    inputs.push(plan.digest);
                }
                None => {
                    // What the mount shows: the source resolved in the
                    // context, hashed as a COPY of it would be.
                    let host = crate::mounts::resolve_in_context(self.context, &b.source)
                        .map_err(setup_err)?;
                    let (root, name) = match (host.is_dir(), host.parent(), host.file_name()) {
                        (false, Some(parent), Some(name)) => {
                            (parent.to_owned(), name.to_string_lossy().into_owned())
                        }
                        _ => (host, ".".to_owned()),
                    };
                    let copy = CopySpec::new(vec![name], "/".to_owned(), "/".to_owned());
                    let plan = copy::plan(&CopySource::Root(&root), &copy)
                        .map_err(|e| StepError::Copy(Box::new(e)))?;
                    inputs.push(plan.digest);
                }
            }
        }
        Ok((text, views))
    }

    /// Runs one RUN, COPY or ADD (expanded) of stage `stage_index` on
    /// `state`.
    pub(super) fn layer_step(
        &self,
        state: &mut State,
        scope: &Scope,
        command: &Command,
        stage_index: usize,
        index: usize,
        total: usize,
    ) -> Result<(), StepError> {
        let started = Instant::now();
        let stage = super::graph::stage_name(&self.df.stages[stage_index]);
        let step = self.next_step();
        let escape = self.df.directives.escape;
        let text = history::text(command, escape);
        self.emit(&BuildEvent::StepStarted {
            step,
            stage: self.shown_stage(stage.clone()),
            index,
            total,
            text: text.clone(),
        });
        // What the step does, what it reads, and its history entry.
        let remote = remote_add(command, state, &text)?;
        let (work, key, mut entry) = match command {
            _ if remote.is_some() => remote.expect("an ADD of remote sources"),
            Command::Run(r) => {
                let args = self.run_args(state, scope);
                let mut env = state.env().to_vec();
                env.extend(args.iter().cloned());
                let mut spec = RunSpec::from_instruction(
                    r,
                    &state.shell(),
                    env,
                    state.user(),
                    state.workdir(),
                )
                .map_err(|e| StepError::Run(Box::new(e)))?;
                // `default` is the build's network, as no flag is.
                if r.network.is_none() || r.network.as_deref() == Some("default") {
                    spec.network = self.options.network;
                }
                if spec.insecure && !self.options.allow_insecure {
                    return Err(StepError::Run(Box::new(run::RunError::InsecureNotAllowed)));
                }
                let mut files: Vec<Digest> = spec
                    .files
                    .iter()
                    .map(|(name, data)| Digest::sha256(&[name.as_bytes(), b"\0", data].concat()))
                    .collect();
                let (mounts, views) = self.mounts_key(&spec, stage_index, &mut files)?;
                let entry = history::run(&spec.args, &args);
                let by = entry.created_by.clone().unwrap_or_default();
                // A privileged run's result is not the sandbox's: each keys
                // apart (a sandboxed key stays as it was).
                let security = if spec.insecure {
                    "\0security=insecure"
                } else {
                    ""
                };
                let key = state.key.child(
                    &format!("{by}\0network={:?}{mounts}{security}", spec.network),
                    &files,
                );
                (
                    Work::Run {
                        spec,
                        stage: stage_index,
                        views,
                    },
                    key,
                    entry,
                )
            }
            Command::Copy(_) | Command::Add(_) => {
                let (spec, from) = copy_spec(command, state.workdir());
                let from_root = match &from {
                    Some(f) => Some(self.view_of(self.source_layers(f, stage_index)?)?),
                    None => None,
                };
                let plan = {
                    let source = match &from_root {
                        Some(root) => CopySource::Root(&root.dir.0),
                        None => CopySource::Context(self.context),
                    };
                    copy::plan(&source, &spec).map_err(|e| StepError::Copy(Box::new(e)))?
                };
                let entry = history::copy(command.keyword(), &plan.created_by_source, &spec.dest);
                let key = if spec.link {
                    link_key(
                        &self.stage_platforms[stage_index],
                        &text,
                        &spec.workdir,
                        &plan.digest,
                    )
                } else {
                    state.key.child(&text, std::slice::from_ref(&plan.digest))
                };
                (
                    Work::Copy {
                        spec: Box::new(spec),
                        plan: Box::new(plan),
                        from: from_root,
                    },
                    key,
                    entry,
                )
            }
            _ => unreachable!("layer_step is called for RUN, COPY and ADD only"),
        };
        let link = matches!(&work, Work::Copy { spec, .. } if spec.link);
        // A reproducible build's layers are packed for its epoch: a layer
        // made for another (or none) is not the same layer.
        let key = key.packed_for(self.epoch);
        entry.created = Some(self.created_now());
        state.fits(&entry)?;
        self.counts.steps.fetch_add(1, Ordering::Relaxed);
        let use_cache = !self.options.no_cache
            && !self
                .options
                .no_cache_filter
                .iter()
                .any(|s| s.eq_ignore_ascii_case(&stage) || *s == stage_index.to_string());
        // Another platform's step of the same key that is running now is
        // waited for: its layer is then this step's (held until the
        // layer is recorded and in `made`).
        let claim = self.claim(key.digest())?;
        // A layer another platform of this build made.
        let made_here = self.shared && super::lock(&self.counts.made).contains(key.digest());
        if use_cache || made_here {
            if let Some(hit) = self
                .cache
                .lookup(&key)
                .map_err(|e| StepError::Cache(Box::new(e)))?
            {
                self.counts.cached.fetch_add(1, Ordering::Relaxed);
                self.emit(&BuildEvent::StepCached { step });
                entry.created_by = Some(hit.created_by);
                // The first build's time, so that a cached rebuild makes
                // the same config (and so no new blob); a reproducible
                // build's is its epoch already.
                if hit.created.is_some() && self.epoch.is_none() {
                    entry.created = hit.created;
                }
                let size = hit.layer.descriptor.size();
                state.layers.push(hit.layer.clone());
                state.top = None;
                state.key = stacked_key(state, key, link, &text, &hit.layer);
                state.add(Entry {
                    history: entry,
                    layer: Some(hit.layer),
                })?;
                self.emit(&BuildEvent::StepDone {
                    step,
                    layer_size: Some(size),
                    elapsed: started.elapsed(),
                });
                if let Some(claim) = claim {
                    claim.succeeded();
                }
                return Ok(());
            }
        }
        if let Work::Remote { source } = work {
            return Err(StepError::Copy(Box::new(copy::CopyError::Remote {
                source,
            })));
        }
        let layer = self.make_layer(state, work, step)?;
        self.cache
            .record(
                &key,
                &CachedLayer {
                    layer: layer.clone(),
                    created_by: entry.created_by.clone().unwrap_or_default(),
                    created: entry.created.clone(),
                },
            )
            .map_err(|e| StepError::Cache(Box::new(e)))?;
        if self.shared {
            super::lock(&self.counts.made).insert(key.digest().clone());
        }
        if let Some(claim) = claim {
            claim.succeeded();
        }
        state.key = stacked_key(state, key, link, &text, &layer);
        let size = layer.descriptor.size();
        state.add(Entry {
            history: entry,
            layer: Some(layer),
        })?;
        self.emit(&BuildEvent::StepDone {
            step,
            layer_size: Some(size),
            elapsed: started.elapsed(),
        });
        Ok(())
    }

    /// Prepares an active snapshot on `state`'s top, lets `work` change
    /// it, stores its changes as a layer, commits it as the new top.
    ///
    /// A `COPY --link` copies into an empty snapshot instead: its layer
    /// holds the files copied and the directories made for them, whatever
    /// the stage's layers hold. That snapshot is not kept; the stage's next
    /// step that needs a filesystem applies the layer onto the stage's top
    /// ([`Run::ensure_top`]).
    fn make_layer(
        &self,
        state: &mut State,
        work: Work<'b>,
        step: usize,
    ) -> Result<Layer, StepError> {
        let link = matches!(&work, Work::Copy { spec, .. } if spec.link);
        let parent = if link { None } else { self.ensure_top(state)? };
        let sn = self.snapshotter();
        let key = unique("build");
        let mounts = sn
            .prepare(&key, parent.as_deref())
            .map_err(|e| snap_err(&key, e))?;
        let mut active = SnapshotGuard {
            sn,
            key: key.clone(),
            keep: false,
        };
        match work {
            Work::Copy { spec, plan, from } => {
                let dir = self.mount_dir()?;
                let mount = MountGuard::mount(SysMounter, &mounts, &dir.0).map_err(|e| {
                    StepError::Mount {
                        key: key.clone(),
                        source: Box::new(e),
                    }
                })?;
                let source = match &from {
                    Some(root) => CopySource::Root(&root.dir.0),
                    None => CopySource::Context(self.context),
                };
                copy::apply(&plan, &source, &spec, &dir.0)
                    .map_err(|e| StepError::Copy(Box::new(e)))?;
                mount.unmount().map_err(|e| StepError::Mount {
                    key: key.clone(),
                    source: Box::new(e),
                })?;
                drop(from);
            }
            Work::Remote { source } => {
                return Err(StepError::Copy(Box::new(copy::CopyError::Remote {
                    source,
                })));
            }
            Work::Run {
                mut spec,
                stage,
                views,
            } => {
                // The mounts' host side, undone (and the roots they read
                // unmounted) when this arm ends.
                let mut roots = Vec::new();
                let mut paths = std::collections::BTreeMap::new();
                for f in crate::mounts::froms_of(&spec.mounts) {
                    if let std::collections::btree_map::Entry::Vacant(e) = paths.entry(f) {
                        let root = self.view_of(self.source_layers(e.key(), stage)?)?;
                        e.insert(root.dir.0.clone());
                        roots.push(root);
                    }
                }
                let work = self.runtime.root().join("build");
                let interrupt = Some(self.tracker.interrupt().clone());
                let prepared = crate::mounts::Setup {
                    work: &work,
                    state: self.runtime.root(),
                    secrets: &self.options.secrets,
                    context: self.context,
                    roots: &paths,
                    interrupt: interrupt.as_ref(),
                    views: &views,
                    copies: Some(self.context_copies),
                }
                .prepare(&spec.mounts)
                .map_err(|e| {
                    StepError::Run(Box::new(run::RunError::MountSetup {
                        source: Box::new(e),
                    }))
                })?;
                for message in &prepared.warnings {
                    self.emit(&BuildEvent::Warning {
                        message: message.clone(),
                    });
                }
                spec.binds.clone_from(&prepared.binds);
                spec.env.extend(prepared.env.iter().cloned());
                let mut output = |stream, line: &[u8]| {
                    self.emit(&BuildEvent::Output {
                        step,
                        stream,
                        line: String::from_utf8_lossy(line).into_owned(),
                    });
                };
                let ran = run::run(self.runtime, mounts, &spec, &mut output, interrupt.as_ref());
                drop(prepared);
                drop(roots);
                ran.map_err(|e| StepError::Run(Box::new(e)))?;
            }
        }
        let mut pack = PackOptions::default();
        pack.source_date_epoch = self.epoch;
        pack.tracker = self.tracker.clone();
        let compared =
            image_overlay::compare_into(&self.lease.protect(self.store), sn, &key, &pack)
                .map_err(|e| StepError::Layer(Box::new(e)))?;
        let layer = Layer {
            descriptor: compared.descriptor,
            diff_id: compared.report.diff_id,
        };
        state.layers.push(layer.clone());
        if link {
            state.top = None;
            return Ok(layer);
        }
        let name = cache::chain_name(&state.layers).unwrap_or_default();
        // The same content may have been built before (without a cache
        // record): the committed snapshot is then already there.
        let exists = sn
            .try_stat(&name)
            .map_err(|e| snap_err(&name, e))?
            .is_some_and(|i| i.kind == Kind::Committed);
        // Another stage building the same content at the same time may
        // commit it first: its snapshot is then the one kept.
        if !exists && !committed_by_another(sn, &name, sn.commit(&name, &key))? {
            active.keep = true;
        }
        drop(active);
        state.top = Some(name);
        Ok(layer)
    }
}

/// An `ADD` of remote sources as a step without the network: keyed by what
/// names them ([`copy::remote_digest`]), so that only a cache record can
/// give its layer; `None` for any other step.
fn remote_add<'a>(
    command: &Command,
    state: &State,
    text: &str,
) -> Result<
    Option<(
        Work<'a>,
        crate::cache::CacheKey,
        image_core::config::History,
    )>,
    StepError,
> {
    if !matches!(command, Command::Add(_)) {
        return Ok(None);
    }
    let (spec, _) = copy_spec(command, state.workdir());
    let Some(digest) = copy::remote_digest(&spec).map_err(|e| StepError::Copy(Box::new(e)))? else {
        return Ok(None);
    };
    let entry = history::copy(command.keyword(), &spec.sources.join(" "), &spec.dest);
    let key = state.key.child(text, &[digest]);
    let source = spec.sources.first().cloned().unwrap_or_default();
    Ok(Some((Work::Remote { source }, key, entry)))
}

/// The cache key of a `COPY --link` (or `ADD --link`): the instruction as
/// expanded, the working directory its destination is relative to, and
/// the digest of what it copies, and nothing of the stage's layers (the
/// layer is made in an empty snapshot), so that a rebuild on another base
/// finds it.
fn link_key(
    platform: &image_core::Platform,
    text: &str,
    workdir: &str,
    content: &Digest,
) -> CacheKey {
    CacheKey::base(None, platform).child(
        &format!("{text}\0link\0workdir={workdir}"),
        std::slice::from_ref(content),
    )
}

/// The stage's key once a layer step made (or found) `layer` under `key`:
/// `key` itself, but for a `--link` step, whose key ignores the stage,
/// the stage's key followed by the step and the layer it stacked.
fn stacked_key(state: &State, key: CacheKey, link: bool, text: &str, layer: &Layer) -> CacheKey {
    if link {
        state.key.child(
            &format!("{text}\0link"),
            std::slice::from_ref(&layer.diff_id),
        )
    } else {
        key
    }
}

/// Whether `commit`, the commit of an active snapshot as `name`, failed
/// only because another step committed `name` first (`Ok(true)`: the
/// active one is then removed); `Ok(false)` when it succeeded.
fn committed_by_another(
    sn: &dyn Snapshotter,
    name: &str,
    commit: Result<(), image_overlay::snapshot::SnapshotError>,
) -> Result<bool, StepError> {
    let Err(e) = commit else {
        return Ok(false);
    };
    let there = sn
        .try_stat(name)
        .map_err(|e| snap_err(name, e))?
        .is_some_and(|i| i.kind == Kind::Committed);
    if there {
        Ok(true)
    } else {
        Err(snap_err(name, e))
    }
}

fn snap_err(key: &str, source: image_overlay::snapshot::SnapshotError) -> StepError {
    StepError::Snapshot {
        key: key.to_owned(),
        source: Box::new(source),
    }
}

/// Heredoc sources as a copy takes them: (name, content).
fn heredocs(docs: &[crate::dockerfile::Heredoc]) -> Vec<(String, String)> {
    docs.iter()
        .map(|h| (h.name.clone(), h.content.clone()))
        .collect()
}

/// The sources of a COPY or ADD that are files: a `<<NAME` word (by the
/// parser's own rule) naming one of its heredocs is that heredoc, given to
/// the copy as content, not a path, as BuildKit reads it.
fn file_sources(sources: &[String], docs: &[crate::dockerfile::Heredoc]) -> Vec<String> {
    sources
        .iter()
        .filter(|s| {
            !crate::dockerfile::heredoc_word(s)
                .is_some_and(|h| docs.iter().any(|d| d.name == h.name))
        })
        .cloned()
        .collect()
}

/// The copy spec of an expanded COPY or ADD in `workdir`, and its `--from`.
fn copy_spec(command: &Command, workdir: String) -> (CopySpec, Option<String>) {
    match command {
        Command::Copy(c) => {
            let mut spec = CopySpec::new(
                file_sources(&c.sources, &c.heredocs),
                c.dest.clone(),
                workdir,
            );
            spec.chown = c.chown.clone();
            spec.chmod = c.chmod.clone();
            spec.exclude = c.exclude.clone();
            spec.parents = c.parents;
            spec.link = c.link;
            spec.heredocs = heredocs(&c.heredocs);
            (spec, c.from.clone())
        }
        Command::Add(a) => {
            let mut spec = CopySpec::new(
                file_sources(&a.sources, &a.heredocs),
                a.dest.clone(),
                workdir,
            );
            spec.add = true;
            spec.chown = a.chown.clone();
            spec.chmod = a.chmod.clone();
            spec.exclude = a.exclude.clone();
            spec.link = a.link;
            spec.checksum = a.checksum.clone();
            spec.keep_git_dir = a.keep_git_dir;
            spec.heredocs = heredocs(&a.heredocs);
            (spec, None)
        }
        _ => (CopySpec::default(), None),
    }
}

#[cfg(test)]
mod tests {
    use image_overlay::snapshot::CopySnapshotter;

    use super::*;

    /// A shared step's claim dropped without success (the step failed)
    /// sets the build's interrupt before it lets the key go, so a step of
    /// another platform waiting for the key stops cancelled instead of
    /// running the failed step again: deterministically, before the
    /// scheduler (which sets the same interrupt once the failure reaches
    /// it) could. One that succeeded lets its waiter take the key.
    #[test]
    fn a_failed_claim_stops_its_waiter_and_a_succeeded_one_lets_it_go() {
        let key = Digest::sha256(b"a shared RUN");
        for succeeded in [true, false] {
            let counts = super::super::Counts::default();
            let cancel = Interrupt::new();
            let check = || cancel.check();
            let first = counts.claim(&key, &cancel, check).unwrap();
            let waited = std::thread::scope(|s| {
                let waiter = s.spawn(|| counts.claim(&key, &cancel, check).map(Claim::succeeded));
                // Give the waiter time to wait (what it gets does not
                // depend on whether it did).
                std::thread::sleep(std::time::Duration::from_millis(50));
                if succeeded {
                    first.succeeded();
                } else {
                    drop(first);
                }
                waiter.join().unwrap()
            });
            if succeeded {
                waited.unwrap();
                assert!(!cancel.is_set());
            } else {
                let e = waited.expect_err("the waiter ran the failed step again");
                assert!(matches!(e, StepError::Cancelled(_)), "{e:?}");
            }
            assert!(super::super::lock(&counts.running).is_empty());
        }
    }

    /// Two steps of two stages making the same layer at once commit it
    /// under the same chain ID: the second commit finds the first's
    /// snapshot, which is kept, and is not an error; its own active
    /// snapshot is then removed by its guard. Any other failure is one.
    #[test]
    fn a_chain_committed_by_another_step_is_not_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let sn = CopySnapshotter::open(tmp.path()).unwrap();
        sn.prepare("first", None).unwrap();
        sn.prepare("second", None).unwrap();
        assert!(!committed_by_another(&sn, "chain", sn.commit("chain", "first")).unwrap());
        assert!(committed_by_another(&sn, "chain", sn.commit("chain", "second")).unwrap());
        // A commit that failed for another reason (no such active
        // snapshot), with nothing committed under the name, stays an error.
        let e = committed_by_another(&sn, "other", sn.commit("other", "missing"))
            .expect_err("not committed by anyone");
        assert!(matches!(e, StepError::Snapshot { .. }), "{e:?}");
    }
}
