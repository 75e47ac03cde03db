//! The newest-wins merge of a stack of layers into one tar stream, without
//! unpacking anything to disk: the core of [`squash`](super::squash) and
//! [`export`](super::export).
//!
//! Two reads of each layer, both through unpack's stream path (sniffed and
//! declared compression, both digests verified, where a tar may end, the
//! [`Limits`] per layer):
//!
//! 1. the plan: every layer's headers, newest layer first, against an index
//!    of the paths seen so far (a tree of path components, one node per
//!    distinct path, bounded by [`MergeLimits::max_paths`]). An entry
//!    survives unless a higher layer wrote or removed its path, or removed,
//!    made opaque or replaced by a non-directory one of its parents; within
//!    a layer the last entry of a path wins. Whiteouts act on lower layers
//!    only, as unpack applies them. A hard link names an earlier entry of
//!    its own layer, or a file a lower layer left at that path (as
//!    flattening links to what is on disk): such a group waits, keyed by
//!    the path, until the lower layer is read, and is refused when a layer
//!    between removed the file or hid a parent of it. A group's first
//!    surviving member carries the data (written at the file's place in
//!    the output, under the member's name, when the file itself does not
//!    survive); the others link to it (crane's export, too, gives a link
//!    whose target an upper layer hid the target's content). Above a base
//!    (squash `--from`), a link to a file of the base stays a link to its
//!    path, unless the merged layer's markers remove that file before the
//!    link is made: then the file is found in the base's layers (newest
//!    first, through the base's own hard links, each base layer read once
//!    for its headers) and its bytes kept in an unnamed temporary file (one
//!    more read of the base layers holding them), and the group's first
//!    surviving member carries them, with the base file's metadata, as the
//!    unsquashed image shows it.
//! 2. the output: the surviving entries, oldest layer first and in each
//!    layer's order (so parents and link targets come before what needs
//!    them), their data streamed from the layer to the writer.
//!
//! Each entry is looked at once per read and its path resolved once
//! (linear in the path's length), so the work is linear in the layers'
//! size. Two reads rather than one: a single newest-first pass cannot know,
//! when it meets a file, whether a later entry of the same layer links to
//! it, nor write a parent before its children.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;

use image_core::manifest::descriptor_media_type;
use image_core::{Descriptor, DescriptorExt, Digest, HashingReader};
use image_store::Provider;

use crate::flatten::{open_layer_with, OpenFailure};
use crate::fsops::display_path;
use crate::list::{describe, EntryKind, ListEntry, WhiteoutKind};
use crate::tarwriter::{Entry as TarEntry, Kind, TarWriter};
use crate::unpack::{blame_the_blob, sniff, walk, Ending, Limits, SourceTag, UnpackError};

use super::SurgeryError;

/// Bounds of a merge beyond each layer's own [`Limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeLimits {
    /// Each layer's limits (entries, expanded bytes, header group size).
    pub layer: Limits,
    /// Most distinct paths (and path prefixes) in all layers together,
    /// which the merge keeps in memory.
    pub max_paths: usize,
    /// Most entries in all layers together.
    pub max_entries: u64,
}

impl Default for MergeLimits {
    fn default() -> Self {
        MergeLimits {
            layer: Limits::default(),
            max_paths: 8_000_000,
            max_entries: 8_000_000,
        }
    }
}

/// A layer to merge: its descriptor, diff ID and position in its image.
pub(crate) struct Source<'a> {
    pub(crate) descriptor: &'a Descriptor,
    pub(crate) diff_id: &'a Digest,
    pub(crate) index: usize,
}

/// The sizes of the merged layers, as read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Read2 {
    pub(crate) compressed: u64,
    pub(crate) uncompressed: u64,
    pub(crate) entries: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Free,
    Dir,
    Other,
    Removed,
}

/// A whiteout or opaque marker the merged layer needs for a path (the
/// stronger wins: a whiteout hides what an opaque marker would).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Out {
    None,
    Opaque,
    Whiteout,
}

struct Node {
    parent: u32,
    name: Box<[u8]>,
    /// What the layers above the one being planned made of this path.
    state: State,
    /// A layer above made it opaque: lower layers' entries below it are hidden.
    opaque: bool,
    /// 1 + the layer whose entry at this path survived (a later duplicate
    /// in the same layer wins).
    seen: u32,
    /// What the merged layer, on a base, writes for it before its entries.
    out: Out,
    /// 1 + the lowest layer read so far that removed this path.
    gone: u32,
    /// 1 + the lowest layer read so far that hid what lower layers have
    /// below this path (removed it, made it opaque, wrote a non-directory).
    covered: u32,
}

/// The index of paths: one node per distinct path, children found by
/// (parent, name).
struct Tree {
    nodes: Vec<Node>,
    children: HashMap<Box<[u8]>, u32>,
    key: Vec<u8>,
    limit: usize,
}

const ROOT: u32 = 0;

impl Tree {
    fn new(limit: usize) -> Tree {
        Tree {
            nodes: vec![Node {
                parent: ROOT,
                name: Box::default(),
                state: State::Free,
                opaque: false,
                seen: 0,
                out: Out::None,
                gone: u32::MAX,
                covered: u32::MAX,
            }],
            children: HashMap::new(),
            key: Vec::new(),
            limit,
        }
    }

    fn set_key(&mut self, parent: u32, name: &[u8]) {
        self.key.clear();
        self.key.extend_from_slice(&parent.to_le_bytes());
        self.key.extend_from_slice(name);
    }

    fn child(
        &mut self,
        parent: u32,
        name: &[u8],
        create: bool,
    ) -> Result<Option<u32>, SurgeryError> {
        self.set_key(parent, name);
        if let Some(n) = self.children.get(self.key.as_slice()) {
            return Ok(Some(*n));
        }
        if !create {
            return Ok(None);
        }
        if self.nodes.len() >= self.limit {
            return Err(SurgeryError::TooManyPaths { limit: self.limit });
        }
        let id = u32::try_from(self.nodes.len())
            .map_err(|_| SurgeryError::TooManyPaths { limit: self.limit })?;
        self.children
            .insert(self.key.clone().into_boxed_slice(), id);
        self.nodes.push(Node {
            parent,
            name: name.into(),
            state: State::Free,
            opaque: false,
            seen: 0,
            out: Out::None,
            gone: u32::MAX,
            covered: u32::MAX,
        });
        Ok(Some(id))
    }

    /// The node of a normalised path (components), created when `create`.
    fn lookup(&mut self, path: &[&[u8]], create: bool) -> Result<Option<u32>, SurgeryError> {
        let mut at = ROOT;
        for c in path {
            match self.child(at, c, create)? {
                Some(n) => at = n,
                None => return Ok(None),
            }
        }
        Ok(Some(at))
    }

    /// Whether a layer above hides what lower layers have strictly below `node`.
    fn hidden_below(&self, mut node: u32) -> bool {
        loop {
            let n = &self.nodes[node as usize];
            if n.opaque || matches!(n.state, State::Other | State::Removed) {
                return true;
            }
            if node == ROOT {
                return false;
            }
            node = n.parent;
        }
    }

    /// Whether a layer below `from` (a stamp, 1 + its position) and above
    /// the layers read after it removed `node` or hid what is below one of
    /// its parents: what a hard link written in that layer cannot see.
    fn removed_before(&self, node: u32, from: u32) -> bool {
        if self.nodes[node as usize].gone < from {
            return true;
        }
        let mut at = node;
        while at != ROOT {
            at = self.nodes[at as usize].parent;
            if self.nodes[at as usize].covered < from {
                return true;
            }
        }
        false
    }

    /// Whether the merged layer, on a base, removes `node` or a parent of
    /// it with a marker written before every entry.
    fn marked(&self, node: u32) -> bool {
        if self.nodes[node as usize].out != Out::None {
            return true;
        }
        let mut at = node;
        while at != ROOT {
            at = self.nodes[at as usize].parent;
            if self.nodes[at as usize].out != Out::None {
                return true;
            }
        }
        false
    }

    /// The path of a node, relative, without a trailing `/`.
    fn path(&self, mut node: u32) -> Vec<u8> {
        let mut parts = Vec::new();
        while node != ROOT {
            let n = &self.nodes[node as usize];
            parts.push(&n.name[..]);
            node = n.parent;
        }
        parts.reverse();
        parts.join(&b'/')
    }
}

/// An entry's components, without `.`, empty components or a leading `/`;
/// `None` for a path with `..` (unpack refuses those too).
fn components(raw: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// What the output does with an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Skip,
    Emit,
    /// The data of a hard link group whose first entry is hidden, written
    /// under the name of its first surviving link.
    EmitAs(u32),
    /// A surviving hard link, to the entry that carries its group's data.
    LinkTo(u32),
    /// A surviving hard link to a base file the merged layer removes: it
    /// carries that file (the key of [`Plan::carried`]) under its own name.
    Carry(u32),
}

/// One header of the plan's read.
enum Hdr {
    Entry {
        node: u32,
        dir: bool,
        /// A hard link to an earlier entry of its layer: its group's first.
        link: Option<usize>,
        /// A hard link to a file of a lower layer (or the base): the path.
        cross: Option<u32>,
    },
    Remove {
        target: u32,
    },
    Opaque {
        dir: u32,
    },
    Ignored,
}

/// The first surviving entry of a hard link group (layer, entry, node).
#[derive(Debug, Clone, Copy)]
struct Rep {
    layer: usize,
    entry: usize,
    node: u32,
}

/// A hard link group led by a link to a file of a lower layer, waiting for
/// the layer that has the file.
struct Pending {
    /// 1 + the layer of the link: what it sees is below it.
    from: u32,
    /// The group's first surviving entry, if any survives.
    rep: Option<Rep>,
    /// The link's position in the image and its path, for errors.
    index: usize,
    path: Vec<u8>,
}

/// What the merge decided: per layer, per entry, what to write; and the
/// whiteouts and opaque markers a merged layer on a base needs.
pub(crate) struct Plan {
    tree: Tree,
    actions: Vec<Vec<Action>>,
    /// The base files the merged layer carries, by their node.
    carried: HashMap<u32, Carried>,
    /// Their bytes, one after the other (an unnamed temporary file).
    spool: Option<File>,
    pub(crate) read: Read2,
}

/// A base file the merged layer carries: its header and where its bytes
/// are in the plan's spool.
struct Carried {
    entry: ListEntry,
    offset: u64,
}

const REMOVED_BELOW: &str = "a hard link to a file a layer below it removed";

fn bad_path(index: usize, raw: &[u8], reason: &'static str) -> SurgeryError {
    SurgeryError::Entry {
        index,
        path: display_path(raw),
        reason,
    }
}

/// What [`read_layer`] hands each entry to: the entry (its data readable)
/// and its metadata.
type EntryVisitor<'v> =
    dyn FnMut(&mut tar::Entry<'_, Ending<'_>>, &ListEntry) -> Result<(), SurgeryError> + 'v;

/// Reads one layer through unpack's stream path, verifying its digest,
/// size and diff ID, and hands each entry (not PAX globals) to `visit`.
fn read_layer<P: Provider + ?Sized>(
    store: &P,
    source: &Source<'_>,
    limits: Limits,
    visit: &mut EntryVisitor<'_>,
) -> Result<Read2, SurgeryError> {
    let desc = source.descriptor;
    let index = source.index;
    let compression = descriptor_media_type(desc)
        .require_layer_compression()
        .map_err(|source| SurgeryError::MediaType { index, source })?;
    let (digest, mut reader) = open_layer_with(store, desc, |failure| match failure {
        OpenFailure::BadDigest(source) => SurgeryError::BadLayer {
            index,
            source: Box::new(source),
        },
        OpenFailure::Stream(digest, source) => SurgeryError::Layer {
            index,
            digest,
            source: Box::new(source),
        },
        OpenFailure::Content(digest, source) => SurgeryError::Content {
            index,
            digest,
            source: Box::new(source),
        },
    })?;
    let layer_err = |e: UnpackError| SurgeryError::Layer {
        index,
        digest: digest.clone(),
        source: Box::new(blame_the_blob(store, &digest, e)),
    };
    let mut tagged = SourceTag(&mut reader);
    let mut hashing = HashingReader::new(&mut tagged as &mut dyn Read, digest.algorithm());
    let (head, compression) = sniff(&mut hashing, Some(compression)).map_err(layer_err)?;
    let mut own: Option<SurgeryError> = None;
    let walked = walk(
        &mut hashing,
        &head,
        compression,
        limits,
        source.diff_id.algorithm(),
        &mut |entry, raw, global| {
            if global {
                return Ok(());
            }
            let listed = describe(entry, raw)?;
            visit(entry, &listed).map_err(|e| {
                own = Some(e);
                UnpackError::Source {
                    source: io::Error::other("stopped by the merge"),
                }
            })
        },
    );
    if let Some(e) = own {
        return Err(e);
    }
    let walked = walked.map_err(layer_err)?;
    io::copy(&mut hashing, &mut io::sink())
        .map_err(|e| layer_err(UnpackError::Source { source: e }))?;
    let (found, size) = hashing.finish();
    if walked.nonzero_trailing {
        return Err(layer_err(UnpackError::TrailingData {
            count: walked.trailing_bytes,
        }));
    }
    if size != desc.size() {
        return Err(layer_err(UnpackError::SizeMismatch {
            expected: desc.size(),
            found: size,
        }));
    }
    if found != digest {
        return Err(layer_err(UnpackError::DigestMismatch {
            expected: digest.clone(),
            found,
        }));
    }
    if walked.diff_id != *source.diff_id {
        return Err(layer_err(UnpackError::DiffIdMismatch {
            expected: source.diff_id.clone(),
            found: walked.diff_id,
        }));
    }
    Ok(Read2 {
        compressed: size,
        uncompressed: walked.size,
        entries: walked.entries,
    })
}

/// Plans the merge of `layers` (lowest first) on the layers of `base`
/// (lowest first; none for a merge of a whole image). On a base, the
/// merged layer keeps the removals and opaque directories that reach below
/// the merged ones, and the base is read for the files a link of the merged
/// layers needs but the merged layer removes.
pub(crate) fn plan<P: Provider + ?Sized>(
    store: &P,
    layers: &[Source<'_>],
    base: &[Source<'_>],
    limits: MergeLimits,
) -> Result<Plan, SurgeryError> {
    let on_base = !base.is_empty();
    let mut tree = Tree::new(limits.max_paths);
    let mut actions = vec![Vec::new(); layers.len()];
    // Hard link groups led by a link to a lower layer's file, by its path.
    let mut pending: HashMap<u32, Vec<Pending>> = HashMap::new();
    let mut read = Read2::default();
    for (l, source) in layers.iter().enumerate().rev() {
        let stamp = u32::try_from(l + 1).unwrap_or(u32::MAX);
        let index = source.index;
        // Forward: headers, paths resolved once, hard links to the entry
        // that was at their target when they were written.
        let mut hdrs: Vec<Hdr> = Vec::new();
        let mut last: HashMap<u32, usize> = HashMap::new();
        // The paths of this layer's links to lower layers, for errors.
        let mut paths: HashMap<usize, Vec<u8>> = HashMap::new();
        let mut total = read.entries;
        let r = read_layer(store, source, limits.layer, &mut |_, e| {
            total += 1;
            if total > limits.max_entries {
                return Err(SurgeryError::TooManyEntries {
                    limit: limits.max_entries,
                });
            }
            let Some(parts) = components(&e.path) else {
                return Err(bad_path(index, &e.path, "a path with '..'"));
            };
            let hdr = match &e.whiteout {
                Some(WhiteoutKind::Invalid) => {
                    return Err(bad_path(index, &e.path, "an invalid whiteout name"))
                }
                Some(WhiteoutKind::Meta) => Hdr::Ignored,
                Some(WhiteoutKind::Remove(name)) => {
                    let parent = tree.lookup(&parts[..parts.len().saturating_sub(1)], true)?;
                    let parent = parent.unwrap_or(ROOT);
                    let target = tree.child(parent, name, true)?.unwrap_or(ROOT);
                    Hdr::Remove { target }
                }
                Some(WhiteoutKind::Opaque) => {
                    let dir = tree.lookup(&parts[..parts.len().saturating_sub(1)], true)?;
                    Hdr::Opaque {
                        dir: dir.unwrap_or(ROOT),
                    }
                }
                None => {
                    let node = tree.lookup(&parts, true)?.unwrap_or(ROOT);
                    let link = match e.kind {
                        EntryKind::HardLink => {
                            let target = e.link_target.as_deref().unwrap_or_default();
                            let found = match components(target) {
                                Some(t) => tree.lookup(&t, false)?,
                                None => None,
                            };
                            match found.and_then(|t| last.get(&t).copied()) {
                                Some(t) => match hdrs[t] {
                                    Hdr::Entry {
                                        dir: false, link, ..
                                    } => (Some(link.unwrap_or(t)), None),
                                    _ => {
                                        return Err(bad_path(
                                            index,
                                            &e.path,
                                            "a hard link to a directory",
                                        ))
                                    }
                                },
                                // A file of a lower layer: resolved when
                                // that layer is read.
                                None => {
                                    let Some(t) = components(target) else {
                                        return Err(bad_path(
                                            index,
                                            &e.path,
                                            "a hard link to a path with '..'",
                                        ));
                                    };
                                    match tree.lookup(&t, true)? {
                                        Some(n) if n != ROOT => (None, Some(n)),
                                        _ => {
                                            return Err(bad_path(
                                                index,
                                                &e.path,
                                                "a hard link to a directory",
                                            ))
                                        }
                                    }
                                }
                            }
                        }
                        EntryKind::Other(_) => {
                            return Err(bad_path(index, &e.path, "an unsupported entry type"))
                        }
                        _ => (None, None),
                    };
                    let (link, cross) = link;
                    if cross.is_some() {
                        paths.insert(hdrs.len(), e.path.clone());
                    }
                    last.insert(node, hdrs.len());
                    Hdr::Entry {
                        node,
                        dir: e.kind == EntryKind::Directory,
                        link,
                        cross,
                    }
                }
            };
            hdrs.push(hdr);
            Ok(())
        })?;
        read.compressed += r.compressed;
        read.uncompressed += r.uncompressed;
        read.entries += r.entries;

        // Links of the layers above to a file of this one join its group.
        let mut extras: HashMap<usize, Vec<Pending>> = HashMap::new();
        if !pending.is_empty() {
            for (&node, &t) in &last {
                let Some(waiting) = pending.remove(&node) else {
                    continue;
                };
                for p in waiting {
                    if tree.removed_before(node, p.from) {
                        return Err(bad_path(p.index, &p.path, REMOVED_BELOW));
                    }
                    let leader = match hdrs[t] {
                        Hdr::Entry {
                            dir: false, link, ..
                        } => link.unwrap_or(t),
                        _ => return Err(bad_path(p.index, &p.path, "a hard link to a directory")),
                    };
                    extras.entry(leader).or_default().push(p);
                }
            }
        }

        // Backward: what survives against the layers above (their state is
        // applied after this layer, whiteouts last).
        let mut kept = vec![false; hdrs.len()];
        let mut writes = Vec::new();
        let mut whiteouts = Vec::new();
        for (i, h) in hdrs.iter().enumerate().rev() {
            match *h {
                Hdr::Entry { node, dir, .. } => {
                    if !dir {
                        let n = &mut tree.nodes[node as usize];
                        n.covered = n.covered.min(stamp);
                    }
                    let n = &tree.nodes[node as usize];
                    let shadowed = n.state != State::Free || n.seen == stamp;
                    if shadowed || (node != ROOT && tree.hidden_below(n.parent)) {
                        continue;
                    }
                    tree.nodes[node as usize].seen = stamp;
                    kept[i] = true;
                    writes.push((node, dir));
                }
                Hdr::Remove { target } => {
                    let n = &mut tree.nodes[target as usize];
                    n.gone = n.gone.min(stamp);
                    n.covered = n.covered.min(stamp);
                    let parent = tree.nodes[target as usize].parent;
                    if !tree.hidden_below(parent) {
                        whiteouts.push((target, false));
                    }
                }
                Hdr::Opaque { dir } => {
                    let n = &mut tree.nodes[dir as usize];
                    n.covered = n.covered.min(stamp);
                    let n = &tree.nodes[dir as usize];
                    let hidden = matches!(n.state, State::Other | State::Removed)
                        || (dir != ROOT && tree.hidden_below(n.parent));
                    if !hidden {
                        whiteouts.push((dir, true));
                    }
                }
                Hdr::Ignored => {}
            }
        }
        for (node, dir) in writes {
            let n = &mut tree.nodes[node as usize];
            n.state = if dir { State::Dir } else { State::Other };
        }
        for (node, opaque) in whiteouts {
            let n = &mut tree.nodes[node as usize];
            // Without a base below, the merged layer needs no markers.
            let before = n.out;
            match (opaque, n.state) {
                // Hidden below: by a whiteout in the merged layer when the
                // merged layer makes the directory again (the base's path
                // may be anything, even a file), else by an opaque marker.
                (true, State::Dir) | (false, State::Dir) => {
                    n.opaque = true;
                    n.out = n.out.max(Out::Whiteout);
                }
                (true, State::Free) => {
                    n.opaque = true;
                    n.out = n.out.max(Out::Opaque);
                }
                (false, State::Free) => {
                    n.state = State::Removed;
                    n.out = n.out.max(Out::Whiteout);
                }
                _ => {}
            }
            if !on_base {
                n.out = before;
            }
        }

        // Forward again: hard link groups get a carrier. A group's members
        // are its surviving entries in this layer, then the links of the
        // layers above that joined it; the first is the group's
        // representative: it carries the data when the group's file is
        // this layer's (written here under its name when the file itself
        // does not survive), the others link to it.
        let mut layer_actions = vec![Action::Skip; hdrs.len()];
        let mut first: HashMap<usize, Rep> = HashMap::new();
        let local = |g: usize| matches!(hdrs[g], Hdr::Entry { cross: None, .. });
        for (i, h) in hdrs.iter().enumerate() {
            let Hdr::Entry { node, link, .. } = *h else {
                continue;
            };
            if !kept[i] {
                continue;
            }
            let leader = link.unwrap_or(i);
            match first.get(&leader) {
                Some(r) => layer_actions[i] = Action::LinkTo(r.node),
                None => {
                    first.insert(
                        leader,
                        Rep {
                            layer: l,
                            entry: i,
                            node,
                        },
                    );
                    if !local(leader) {
                        // Decided when the lower layer is read.
                    } else if leader == i {
                        layer_actions[i] = Action::Emit;
                    } else {
                        layer_actions[leader] = Action::EmitAs(node);
                    }
                }
            }
        }
        let mut joined: Vec<(usize, Vec<Pending>)> = extras.into_iter().collect();
        joined.sort_by_key(|(g, _)| *g);
        for (leader, mut waiting) in joined {
            waiting.sort_by_key(|p| p.rep.map(|r| (r.layer, r.entry)));
            for p in waiting {
                let Some(r) = p.rep else { continue };
                match first.get(&leader) {
                    Some(c) => actions[r.layer][r.entry] = Action::LinkTo(c.node),
                    None => {
                        first.insert(leader, r);
                        if local(leader) {
                            layer_actions[leader] = Action::EmitAs(r.node);
                        }
                    }
                }
            }
        }
        for (i, h) in hdrs.iter().enumerate() {
            if let Hdr::Entry {
                cross: Some(target),
                ..
            } = *h
            {
                pending.entry(target).or_default().push(Pending {
                    from: stamp,
                    rep: first.get(&i).copied(),
                    index,
                    path: paths.remove(&i).unwrap_or_default(),
                });
            }
        }
        actions[l] = layer_actions;
    }
    // Links to no file of the merged layers: to the base's file, which
    // stays a link where it is still there when the merged layer is
    // applied, and is found in the base where the merged layer removes it.
    let mut wanted: Vec<Wanted> = Vec::new();
    let mut pending: Vec<(u32, Vec<Pending>)> = pending.into_iter().collect();
    pending.sort_by_key(|(target, _)| *target);
    for (target, waiting) in pending {
        let mut carriers: Vec<Rep> = Vec::new();
        let mut link = None;
        for p in waiting {
            if !on_base {
                return Err(bad_path(
                    p.index,
                    &p.path,
                    "a hard link to no earlier entry",
                ));
            }
            if tree.removed_before(target, p.from) {
                return Err(bad_path(p.index, &p.path, REMOVED_BELOW));
            }
            link.get_or_insert((p.index, p.path));
            match p.rep {
                Some(r) if tree.marked(target) => carriers.push(r),
                Some(r) => actions[r.layer][r.entry] = Action::LinkTo(target),
                None => {}
            }
        }
        if carriers.is_empty() {
            continue;
        }
        carriers.sort_by_key(|r| (r.layer, r.entry));
        let (index, link) = link.unwrap_or_default();
        wanted.push(Wanted {
            target,
            carriers,
            index,
            link,
        });
    }
    let (carried, spool) = if wanted.is_empty() {
        (HashMap::new(), None)
    } else {
        let (carried, spool) = from_base(store, base, &mut tree, &mut actions, wanted, limits)?;
        (carried, Some(spool))
    };
    Ok(Plan {
        tree,
        actions,
        carried,
        spool,
        read,
    })
}

/// A file of the base that the merged layer removes but links of the
/// merged layers name: its node, their surviving first members (lowest
/// first), and the first link, for errors.
struct Wanted {
    target: u32,
    carriers: Vec<Rep>,
    index: usize,
    link: Vec<u8>,
}

/// The non-directories of the base's tree as its layers leave it: each
/// path's file (an index into `files`), and each file's entry (base layer,
/// position). Hard links share their target's file.
#[derive(Default)]
struct BaseFiles {
    paths: BTreeMap<Vec<u8>, usize>,
    files: Vec<(usize, usize)>,
}

impl BaseFiles {
    /// Forgets `path` and, when `below`, everything under it.
    fn remove(&mut self, path: &[u8], itself: bool, below: bool) {
        if itself {
            self.paths.remove(path);
        }
        if below {
            let mut prefix = path.to_vec();
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            let under: Vec<Vec<u8>> = self
                .paths
                .range(prefix.clone()..)
                .take_while(|(p, _)| p.starts_with(&prefix))
                .map(|(p, _)| p.clone())
                .collect();
            for p in under {
                self.paths.remove(&p);
            }
        }
    }

    /// Reads the `base` layers, lowest first, as unpack applies them:
    /// each layer's whiteouts and opaque markers act on the layers below
    /// it, then its entries in order.
    ///
    /// The base's entries, all layers together, count against
    /// [`MergeLimits::max_entries`] and its paths against
    /// [`MergeLimits::max_paths`], as the merged layers' do.
    fn read<P: Provider + ?Sized>(
        store: &P,
        base: &[Source<'_>],
        limits: MergeLimits,
    ) -> Result<BaseFiles, SurgeryError> {
        let mut model = BaseFiles::default();
        let mut total = 0u64;
        for (l, source) in base.iter().enumerate() {
            // (path, position, kind, normalised hard link target)
            let mut entries: Vec<(Vec<u8>, usize, EntryKind, Vec<u8>)> = Vec::new();
            let mut at = 0usize;
            read_layer(store, source, limits.layer, &mut |_, e| {
                total += 1;
                if total > limits.max_entries {
                    return Err(SurgeryError::TooManyEntries {
                        limit: limits.max_entries,
                    });
                }
                let i = at;
                at += 1;
                let Some(parts) = components(&e.path) else {
                    return Err(bad_path(source.index, &e.path, "a path with '..'"));
                };
                let parent = parts[..parts.len().saturating_sub(1)].join(&b'/');
                match &e.whiteout {
                    Some(WhiteoutKind::Remove(name)) => {
                        let mut p = parent;
                        if !p.is_empty() {
                            p.push(b'/');
                        }
                        p.extend_from_slice(name);
                        model.remove(&p, true, true);
                    }
                    Some(WhiteoutKind::Opaque) => model.remove(&parent, false, true),
                    Some(_) => {}
                    None => {
                        let to = match (&e.kind, e.link_target.as_deref()) {
                            (EntryKind::HardLink, Some(t)) => {
                                components(t).map(|c| c.join(&b'/')).unwrap_or_default()
                            }
                            _ => Vec::new(),
                        };
                        entries.push((parts.join(&b'/'), i, e.kind, to));
                    }
                }
                Ok(())
            })?;
            for (path, i, kind, to) in entries {
                match kind {
                    EntryKind::Regular
                    | EntryKind::Symlink
                    | EntryKind::Char
                    | EntryKind::Block
                    | EntryKind::Fifo => {
                        model.remove(&path, true, true);
                        model.paths.insert(path, model.files.len());
                        model.files.push((l, i));
                    }
                    EntryKind::HardLink => {
                        match model.paths.get(&to).copied() {
                            Some(f) => {
                                model.remove(&path, true, true);
                                model.paths.insert(path, f);
                            }
                            // A link to no file: unpack refuses the base.
                            None => model.remove(&path, true, true),
                        }
                    }
                    EntryKind::Directory => model.remove(&path, true, false),
                    _ => model.remove(&path, true, true),
                }
                if model.paths.len() > limits.max_paths {
                    return Err(SurgeryError::TooManyPaths {
                        limit: limits.max_paths,
                    });
                }
            }
        }
        Ok(model)
    }
}

/// Whether the base's `path` is still there once the merged layer is
/// applied: neither it nor a parent is removed, replaced or hidden by it.
fn survives(tree: &mut Tree, path: &[u8]) -> Result<bool, SurgeryError> {
    let Some(parts) = components(path) else {
        return Ok(false);
    };
    let mut at = ROOT;
    for (k, c) in parts.iter().enumerate() {
        let last = k + 1 == parts.len();
        let n = &tree.nodes[at as usize];
        if n.opaque || n.out != Out::None || matches!(n.state, State::Other | State::Removed) {
            return Ok(false);
        }
        match tree.child(at, c, false)? {
            Some(next) => at = next,
            None => return Ok(true),
        }
        if last {
            let n = &tree.nodes[at as usize];
            return Ok(n.state == State::Free && n.out == Out::None);
        }
    }
    Ok(false)
}

/// Resolves the wanted files in the base: where another name of the base
/// file survives the merged layer, the links link to it; otherwise the
/// lowest one carries the file's bytes (kept from the base's layer in an
/// unnamed temporary file) and the others link to it.
fn from_base<P: Provider + ?Sized>(
    store: &P,
    base: &[Source<'_>],
    tree: &mut Tree,
    actions: &mut [Vec<Action>],
    wanted: Vec<Wanted>,
    limits: MergeLimits,
) -> Result<(HashMap<u32, Carried>, File), SurgeryError> {
    let model = BaseFiles::read(store, base, limits)?;
    let limits = limits.layer;
    // Every name of each wanted file, in path order.
    let mut files: HashMap<usize, Vec<&[u8]>> = HashMap::new();
    for w in &wanted {
        let path = tree.path(w.target);
        let Some(&f) = model.paths.get(&path) else {
            return Err(bad_path(
                w.index,
                &w.link,
                "a hard link to no earlier entry",
            ));
        };
        files.entry(f).or_default();
    }
    for (p, f) in &model.paths {
        if let Some(names) = files.get_mut(f) {
            names.push(p);
        }
    }
    // (base layer, entry) -> the files whose bytes it holds.
    let mut needed: HashMap<(usize, usize), Vec<u32>> = HashMap::new();
    // Each base file resolved once (its names searched once, however many
    // wanted targets name it): where none of its names survives, the
    // wanted target written first carries it and every later one links
    // to that carrier, so the file stays one inode as in the original.
    let mut resolved: HashMap<usize, Action> = HashMap::new();
    let mut order: Vec<&Wanted> = wanted.iter().collect();
    order.sort_by_key(|w| (w.carriers[0].layer, w.carriers[0].entry));
    for w in order {
        let f = model.paths[&tree.path(w.target)];
        let first = match resolved.get(&f) {
            Some(done) => *done,
            None => {
                let mut survivor = None;
                for name in &files[&f] {
                    if survives(tree, name)? {
                        survivor = Some(*name);
                        break;
                    }
                }
                let first = match survivor {
                    Some(name) => {
                        let parts = components(name).unwrap_or_default();
                        let node = tree.lookup(&parts, true)?.unwrap_or(ROOT);
                        Action::LinkTo(node)
                    }
                    None => {
                        let (l, i) = model.files[f];
                        needed.entry((l, i)).or_default().push(w.target);
                        Action::Carry(w.target)
                    }
                };
                let later = match first {
                    Action::LinkTo(node) => Action::LinkTo(node),
                    _ => Action::LinkTo(w.carriers[0].node),
                };
                resolved.insert(f, later);
                first
            }
        };
        let lowest = w.carriers[0];
        actions[lowest.layer][lowest.entry] = first;
        for r in &w.carriers[1..] {
            actions[r.layer][r.entry] = match first {
                Action::LinkTo(node) => Action::LinkTo(node),
                _ => Action::LinkTo(lowest.node),
            };
        }
    }
    let spool_err = |source| SurgeryError::Write { source };
    let mut spool = temporary_file().map_err(spool_err)?;
    let mut carried = HashMap::new();
    let mut offset = 0u64;
    let mut layers: Vec<usize> = needed.keys().map(|(l, _)| *l).collect();
    layers.sort_unstable();
    layers.dedup();
    for l in layers {
        let source = &base[l];
        let mut at = 0usize;
        read_layer(store, source, limits, &mut |entry, e| {
            let i = at;
            at += 1;
            let Some(nodes) = needed.get(&(l, i)) else {
                return Ok(());
            };
            let copied = copy_entry(entry, e.size, source, &mut |data| {
                spool.write_all(data).map_err(spool_err)
            })?;
            if copied != e.size {
                return Err(bad_path(
                    source.index,
                    &e.path,
                    "file data shorter than its size (a sparse file?)",
                ));
            }
            for n in nodes {
                carried.insert(
                    *n,
                    Carried {
                        entry: e.clone(),
                        offset,
                    },
                );
            }
            offset += copied;
            Ok(())
        })?;
    }
    Ok((carried, spool))
}

/// An unnamed file in the temporary directory (`O_TMPFILE`: it has no
/// name to remove, and goes with its last descriptor).
fn temporary_file() -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        std::env::temp_dir(),
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    Ok(File::from(fd))
}

/// Hands the first `size` bytes of `entry`'s data, in pieces, to `out`;
/// returns how many there were (fewer at a short entry).
fn copy_entry(
    entry: &mut tar::Entry<'_, Ending<'_>>,
    size: u64,
    source: &Source<'_>,
    out: &mut dyn FnMut(&[u8]) -> Result<(), SurgeryError>,
) -> Result<u64, SurgeryError> {
    let mut buf = vec![0u8; usize::try_from(size.min(256 * 1024)).unwrap_or(256 * 1024)];
    let mut left = size;
    while left > 0 {
        let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        let k = entry
            .read(&mut buf[..want])
            .map_err(|e| SurgeryError::Layer {
                index: source.index,
                digest: source
                    .descriptor
                    .checked_digest()
                    .unwrap_or_else(|_| source.diff_id.clone()),
                source: Box::new(UnpackError::Source { source: e }),
            })?;
        if k == 0 {
            break;
        }
        out(&buf[..k])?;
        left -= k as u64;
    }
    Ok(size - left)
}

/// The header the output writes for an entry.
fn header<'a>(path: &'a [u8], e: &'a ListEntry, kind: Kind) -> TarEntry<'a> {
    TarEntry {
        path,
        kind,
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        mtime: e.mtime,
        xattrs: &e.xattrs,
    }
}

fn write_err(source: io::Error) -> SurgeryError {
    SurgeryError::Write { source }
}

/// The header of a whiteout or opaque marker at `path`: an empty file,
/// as Docker writes them.
pub(crate) fn whiteout_entry(path: &[u8]) -> TarEntry<'_> {
    TarEntry {
        path,
        kind: Kind::File { size: 0 },
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 0,
        xattrs: &[],
    }
}

fn marker<W: Write>(tar: &mut TarWriter<W>, path: &[u8]) -> Result<(), SurgeryError> {
    tar.header(&whiteout_entry(path)).map_err(write_err)
}

/// The output kind of an entry written as itself (not as a hard link), a
/// directory's `path` given its trailing `/`.
fn plain_kind(e: &ListEntry, path: &mut Vec<u8>, index: usize) -> Result<Kind, SurgeryError> {
    Ok(match e.kind {
        EntryKind::Regular => Kind::File { size: e.size },
        EntryKind::Directory => {
            if path.is_empty() {
                path.push(b'.');
            }
            path.push(b'/');
            Kind::Dir
        }
        EntryKind::Symlink => Kind::Symlink(e.link_target.clone().unwrap_or_default()),
        EntryKind::Char => {
            let (a, b) = e.device.unwrap_or_default();
            Kind::Char(a.into(), b.into())
        }
        EntryKind::Block => {
            let (a, b) = e.device.unwrap_or_default();
            Kind::Block(a.into(), b.into())
        }
        EntryKind::Fifo => Kind::Fifo,
        _ => return Err(bad_path(index, &e.path, "an unsupported entry type")),
    })
}

/// Writes the bytes of the carried file `c` from the plan's spool.
fn write_spooled<W: Write>(
    plan: &Plan,
    c: &Carried,
    tar: &mut TarWriter<W>,
) -> Result<(), SurgeryError> {
    let Some(spool) = &plan.spool else {
        return Err(write_err(io::Error::other("no spool for a carried file")));
    };
    let mut buf = vec![0u8; usize::try_from(c.entry.size.min(256 * 1024)).unwrap_or(256 * 1024)];
    let mut done = 0u64;
    while done < c.entry.size {
        let want =
            usize::try_from((c.entry.size - done).min(buf.len() as u64)).unwrap_or(buf.len());
        let k = spool
            .read_at(&mut buf[..want], c.offset + done)
            .map_err(write_err)?;
        if k == 0 {
            return Err(write_err(io::ErrorKind::UnexpectedEof.into()));
        }
        tar.data(&buf[..k]).map_err(write_err)?;
        done += k as u64;
    }
    Ok(())
}

/// Writes the merged tar stream of `layers` (as planned) into `tar`:
/// the whiteouts and opaque markers first (for a layer on a base), then
/// the surviving entries. Returns the entries written.
pub(crate) fn emit<P: Provider + ?Sized, W: Write>(
    store: &P,
    layers: &[Source<'_>],
    plan: &Plan,
    limits: Limits,
    tar: &mut TarWriter<W>,
) -> Result<u64, SurgeryError> {
    let tree = &plan.tree;
    let mut written = 0u64;
    // Whiteouts first, then opaque markers: an opaque marker makes its
    // directory, which a whiteout after it would take for this layer's own.
    for want in [Out::Whiteout, Out::Opaque] {
        for (id, n) in tree.nodes.iter().enumerate() {
            if n.out != want {
                continue;
            }
            let mut path = match want {
                Out::Whiteout => tree.path(n.parent),
                _ => tree.path(id as u32),
            };
            if !path.is_empty() {
                path.push(b'/');
            }
            match want {
                Out::Whiteout => {
                    path.extend_from_slice(b".wh.");
                    path.extend_from_slice(&n.name);
                }
                _ => path.extend_from_slice(b".wh..wh..opq"),
            }
            marker(tar, &path)?;
            written += 1;
        }
    }
    for (l, source) in layers.iter().enumerate() {
        let actions = &plan.actions[l];
        let mut at = 0usize;
        read_layer(store, source, limits, &mut |entry, e| {
            let action = actions.get(at).copied().unwrap_or(Action::Skip);
            at += 1;
            let (node, link, carried) = match action {
                Action::Skip => return Ok(()),
                Action::Emit => (None, None, None),
                Action::EmitAs(n) => (Some(n), None, None),
                Action::LinkTo(n) => (None, Some(tree.path(n)), None),
                Action::Carry(n) => (None, None, plan.carried.get(&n)),
            };
            let mut path = match node {
                Some(n) => tree.path(n),
                None => {
                    let parts = components(&e.path).unwrap_or_default();
                    parts.join(&b'/')
                }
            };
            if let Some(c) = carried {
                // The base file (its bytes, metadata and kind) under the
                // link's name.
                let kind = plain_kind(&c.entry, &mut path, source.index)?;
                let mut head = header(&path, &c.entry, kind);
                if c.entry.kind == EntryKind::Symlink {
                    head.mode = 0o777;
                }
                tar.header_nanos(&head, c.entry.mtime_nanos)
                    .map_err(write_err)?;
                if c.entry.kind == EntryKind::Regular {
                    write_spooled(plan, c, tar)?;
                    tar.pad(c.entry.size).map_err(write_err)?;
                }
                written += 1;
                return Ok(());
            }
            let kind = match link {
                Some(target) => Kind::Hardlink(target),
                None => plain_kind(e, &mut path, source.index)?,
            };
            let size = match kind {
                Kind::File { size } => size,
                _ => 0,
            };
            let mut head = header(&path, e, kind);
            if e.kind == EntryKind::Symlink {
                // A link's own mode means nothing on Linux (always 0777),
                // which is what an unpacked tree shows.
                head.mode = 0o777;
            }
            tar.header_nanos(&head, e.mtime_nanos).map_err(write_err)?;
            let copied = copy_entry(entry, size, source, &mut |data| {
                tar.data(data).map_err(write_err)
            })?;
            if copied != size {
                return Err(bad_path(
                    source.index,
                    &e.path,
                    "file data shorter than its size (a sparse file?)",
                ));
            }
            tar.pad(size).map_err(write_err)?;
            written += 1;
            Ok(())
        })?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::components;

    #[test]
    fn components_drop_dots_and_refuse_dotdot() {
        assert_eq!(
            components(b"./a//b/./c/").expect("clean"),
            vec![&b"a"[..], b"b", b"c"]
        );
        assert!(components(b"a/../b").is_none());
        assert!(components(b"./").expect("root").is_empty());
    }
}
