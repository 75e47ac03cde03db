//! What each layer changes: the paths it adds, modifies and deletes, read
//! against the filesystem the layers below it make.
//!
//! The filesystem is kept as a sorted map of paths (a `Stack`), so that a
//! directory's descendants are one contiguous range: a whiteout or an
//! opaque directory removes them in one range walk, and every path is
//! removed at most once after it was added (linear work per layer).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::list::{EntryKind, ListEntry, WhiteoutKind};

/// The type of a path, as the JSON report names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A hard link to an earlier entry of the layer.
    Hardlink,
    /// A character or block device.
    Device,
    /// A named pipe.
    Fifo,
    /// Another tar type.
    Other,
}

impl FileType {
    pub(crate) fn of(kind: EntryKind) -> FileType {
        match kind {
            EntryKind::Regular => FileType::File,
            EntryKind::Directory => FileType::Dir,
            EntryKind::Symlink => FileType::Symlink,
            EntryKind::HardLink => FileType::Hardlink,
            EntryKind::Char | EntryKind::Block => FileType::Device,
            EntryKind::Fifo => FileType::Fifo,
            EntryKind::Other(_) => FileType::Other,
        }
    }
}

/// How a layer changed a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ChangeKind {
    /// The path did not exist below this layer.
    Added,
    /// The path existed below and the layer wrote it again (the old bytes
    /// stay in the lower layer).
    Modified,
    /// A whiteout (`.wh.NAME`) deleted the path and everything beneath it.
    Deleted,
    /// An opaque directory (`.wh..wh..opq`) hid what the lower layers had
    /// in it.
    Opaque,
}

/// One change of a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Change {
    /// The path, absolute (`/etc/passwd`).
    pub path: String,
    /// What happened to it.
    pub kind: ChangeKind,
    /// The type the layer gives it (for a deletion: the type it had).
    #[serde(rename = "type")]
    pub file_type: FileType,
    /// The size the layer gives it; for a deletion or an opaque directory,
    /// the bytes of the paths it removed.
    pub size: u64,
    /// Permission bits the layer gives it (0 for a deletion).
    pub mode: u32,
    /// For a modification: the type, size and mode it had below.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<Previous>,
    /// For a deletion or an opaque directory: how many paths it removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<u64>,
}

/// What a modified path was before the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Previous {
    /// Its type.
    #[serde(rename = "type")]
    pub file_type: FileType,
    /// Its size.
    pub size: u64,
    /// Its permission bits.
    pub mode: u32,
    /// The layer that wrote it.
    pub layer: usize,
}

/// A layer entry as the analysis keeps it: the path normalised, whiteouts
/// resolved to the path they delete.
#[derive(Debug, Clone)]
pub(crate) struct LayerEntry {
    /// Normalised path, no leading `/` (`""` is the root); for a whiteout,
    /// the path it deletes; for an opaque marker, its directory.
    pub(crate) path: String,
    pub(crate) kind: EntryKind,
    pub(crate) mode: u32,
    pub(crate) size: u64,
    pub(crate) whiteout: Option<Whiteout>,
    /// Why the file looks sensitive (a content rule or its name), for the
    /// deleted-or-overwritten check of later layers.
    pub(crate) sensitive: Option<&'static str>,
}

/// A whiteout entry, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Whiteout {
    /// `.wh.NAME`.
    Remove,
    /// `.wh..wh..opq`.
    Opaque,
}

impl LayerEntry {
    /// The entry for `e`, or `None` for an entry the analysis ignores (the
    /// root itself, reserved `.wh..wh.` names, invalid whiteout names).
    pub(crate) fn from_list(e: &ListEntry) -> Option<LayerEntry> {
        let path = normalise(&e.path_lossy());
        let (path, whiteout) = match &e.whiteout {
            None => (path, None),
            Some(WhiteoutKind::Remove(name)) => {
                let dir = parent(&path);
                (
                    join(dir, &String::from_utf8_lossy(name)),
                    Some(Whiteout::Remove),
                )
            }
            Some(WhiteoutKind::Opaque) => (parent(&path).to_owned(), Some(Whiteout::Opaque)),
            Some(WhiteoutKind::Meta | WhiteoutKind::Invalid) => return None,
        };
        if path.is_empty() && whiteout != Some(Whiteout::Opaque) {
            return None;
        }
        Some(LayerEntry {
            path,
            kind: e.kind,
            mode: e.mode,
            size: e.size,
            whiteout,
            sensitive: None,
        })
    }

    /// The path of the node dive's per-layer tree makes for this entry:
    /// a whiteout keeps its `.wh.` name; an opaque marker makes none.
    pub(crate) fn dive_node(&self) -> Option<String> {
        match self.whiteout {
            None => Some(self.path.clone()),
            Some(Whiteout::Remove) => Some(join(
                parent(&self.path),
                &format!(".wh.{}", name(&self.path)),
            )),
            Some(Whiteout::Opaque) => None,
        }
    }
}

/// `path` cleaned as Go's `path.Clean` cleans a rooted path, without the
/// leading `/`: empty and `.` components dropped, `..` removing the one
/// before (never above the root).
pub(crate) fn normalise(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// The directory part of a normalised path (`""` for a top-level name).
pub(crate) fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
}

/// The last component of a normalised path.
pub(crate) fn name(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, n)| n)
}

/// `dir/name`, or `name` at the root.
pub(crate) fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// The bounds of the keys strictly beneath `dir` in byte order: from
/// `dir/` up to (not including) `dir0` (`'0'` follows `'/'`); everything
/// for the root.
pub(crate) fn descendants(dir: &str) -> (std::ops::Bound<String>, std::ops::Bound<String>) {
    use std::ops::Bound;
    if dir.is_empty() {
        (Bound::Excluded(String::new()), Bound::Unbounded)
    } else {
        (
            Bound::Included(format!("{dir}/")),
            Bound::Excluded(format!("{dir}0")),
        )
    }
}

/// A path of the stacked filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) file_type: FileType,
    pub(crate) size: u64,
    pub(crate) mode: u32,
    /// The layer that last wrote it.
    pub(crate) layer: usize,
    pub(crate) sensitive: Option<&'static str>,
}

/// A sensitive file a layer deleted or overwrote: its bytes stay in the
/// layer that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Buried {
    pub(crate) path: String,
    pub(crate) node: Node,
    /// Deleted (whiteout, opaque directory, replaced directory) rather
    /// than overwritten.
    pub(crate) deleted: bool,
}

/// The filesystem the layers applied so far make.
#[derive(Debug, Default)]
pub(crate) struct Stack {
    pub(crate) paths: BTreeMap<String, Node>,
    /// Paths visited by `whiteout_sizes` (for the linearity test).
    #[cfg(test)]
    pub(crate) visited: std::cell::Cell<usize>,
}

impl Stack {
    /// The bytes of `path` and everything beneath it, for dive's sizing of
    /// a whiteout: the subtree's sizes when `path` is a directory, else 0
    /// (the plain definition [`whiteout_sizes`](Stack::whiteout_sizes) is
    /// checked against).
    #[cfg(test)]
    pub(crate) fn whiteout_size(&self, path: &str) -> u64 {
        match self.paths.get(path) {
            Some(n) if n.file_type == FileType::Dir => {
                n.size
                    + self
                        .paths
                        .range(descendants(path))
                        .map(|(_, n)| n.size)
                        .sum::<u64>()
            }
            _ => 0,
        }
    }

    /// [`whiteout_size`](Stack::whiteout_size) of each of `targets` (the
    /// paths one layer's whiteouts delete), in one walk: each path of the
    /// filesystem is visited at most once, however the targets nest (a
    /// target beneath another is summed from the outer one's walk).
    pub(crate) fn whiteout_sizes<'t>(&self, targets: &[&'t str]) -> HashMap<&'t str, u64> {
        // In component order a directory's descendants follow it at once
        // (in byte order `a-b` would sort between `a` and `a/b`), so one
        // sweep finds the outermost target above each target.
        let mut sorted: Vec<&'t str> = targets.to_vec();
        sorted.sort_by(|a, b| a.split('/').cmp(b.split('/')));
        sorted.dedup();
        let mut groups: Vec<(&'t str, Vec<&'t str>)> = Vec::new();
        for t in sorted {
            match groups.last_mut() {
                Some((outer, inner))
                    if t.len() > outer.len()
                        && t.starts_with(*outer)
                        && t.as_bytes()[outer.len()] == b'/' =>
                {
                    inner.push(t);
                }
                _ => groups.push((t, vec![t])),
            }
        }
        let mut sizes = HashMap::with_capacity(targets.len());
        for (outer, inner) in groups {
            // The outer target's tree, sorted, with running sums.
            let mut keys: Vec<&str> = Vec::new();
            let mut sums: Vec<u64> = vec![0];
            let own = self.paths.get_key_value(outer);
            for (k, n) in own.into_iter().chain(self.paths.range(descendants(outer))) {
                #[cfg(test)]
                self.visited.set(self.visited.get() + 1);
                keys.push(k);
                sums.push(sums[sums.len() - 1] + n.size);
            }
            for t in inner {
                let size = match self.paths.get(t) {
                    Some(n) if n.file_type == FileType::Dir => {
                        // `t` itself, then the range `t/` .. `t0` (what sorts
                        // between, `t-x`, is not beneath `t`).
                        let lo = format!("{t}/");
                        let hi = format!("{t}0");
                        let from = keys.partition_point(|k| *k < lo.as_str());
                        let to = keys.partition_point(|k| *k < hi.as_str());
                        n.size + sums[to] - sums[from]
                    }
                    _ => 0,
                };
                sizes.insert(t, size);
            }
        }
        sizes
    }

    /// Removes the paths beneath `dir` (and `dir` itself when `with_dir`),
    /// returning how many and their bytes; sensitive ones go to `buried`.
    fn remove_tree(&mut self, dir: &str, with_dir: bool, buried: &mut Vec<Buried>) -> (u64, u64) {
        let mut keys: Vec<String> = self
            .paths
            .range(descendants(dir))
            .map(|(k, _)| k.clone())
            .collect();
        if with_dir && self.paths.contains_key(dir) {
            keys.push(dir.to_owned());
        }
        let (mut count, mut bytes) = (0, 0);
        for k in keys {
            if let Some(node) = self.paths.remove(&k) {
                count += 1;
                bytes += node.size;
                if node.sensitive.is_some() {
                    buried.push(Buried {
                        path: k,
                        node,
                        deleted: true,
                    });
                }
            }
        }
        (count, bytes)
    }

    /// Applies layer `index` (its entries in archive order): whiteouts and
    /// opaque directories first, against the layers below only (as the OCI
    /// image spec orders them), then the entries. Returns the layer's
    /// changes and the sensitive files it deleted or overwrote.
    pub(crate) fn apply(
        &mut self,
        index: usize,
        entries: &[LayerEntry],
    ) -> (Vec<Change>, Vec<Buried>) {
        let mut changes = Vec::with_capacity(entries.len());
        let mut buried = Vec::new();
        for e in entries {
            let Some(w) = e.whiteout else { continue };
            let was = self.paths.get(&e.path).copied();
            let (removed, size) = self.remove_tree(&e.path, w == Whiteout::Remove, &mut buried);
            changes.push(Change {
                path: format!("/{}", e.path),
                kind: match w {
                    Whiteout::Remove => ChangeKind::Deleted,
                    Whiteout::Opaque => ChangeKind::Opaque,
                },
                file_type: match w {
                    Whiteout::Remove => was.map_or(FileType::Other, |n| n.file_type),
                    Whiteout::Opaque => FileType::Dir,
                },
                size,
                mode: 0,
                previous: None,
                removed: Some(removed),
            });
        }
        for e in entries.iter().filter(|e| e.whiteout.is_none()) {
            let file_type = FileType::of(e.kind);
            let node = Node {
                file_type,
                size: e.size,
                mode: e.mode,
                layer: index,
                sensitive: e.sensitive,
            };
            let before = self.paths.insert(e.path.clone(), node);
            let previous = before.map(|b| Previous {
                file_type: b.file_type,
                size: b.size,
                mode: b.mode,
                layer: b.layer,
            });
            if let Some(b) = before {
                if b.sensitive.is_some() {
                    buried.push(Buried {
                        path: e.path.clone(),
                        node: b,
                        deleted: false,
                    });
                }
                if b.file_type == FileType::Dir && file_type != FileType::Dir {
                    // A directory replaced by a non-directory loses its tree.
                    self.remove_tree(&e.path, false, &mut buried);
                }
            }
            changes.push(Change {
                path: format!("/{}", e.path),
                kind: if before.is_some() {
                    ChangeKind::Modified
                } else {
                    ChangeKind::Added
                },
                file_type,
                size: e.size,
                mode: e.mode,
                previous,
                removed: None,
            });
        }
        (changes, buried)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An entry for tests (of this module and of efficiency).
    pub(crate) fn entry(
        path: &str,
        kind: EntryKind,
        size: u64,
        whiteout: Option<Whiteout>,
    ) -> LayerEntry {
        LayerEntry {
            path: path.into(),
            kind,
            mode: 0o644,
            size,
            whiteout,
            sensitive: None,
        }
    }

    #[test]
    fn normalise_cleans_as_go_does() {
        assert_eq!(normalise("./etc//passwd"), "etc/passwd");
        assert_eq!(normalise("/a/b/../c/"), "a/c");
        assert_eq!(normalise("../../x"), "x");
        assert_eq!(normalise("."), "");
    }

    #[test]
    fn descendants_exclude_siblings_sorting_between() {
        let mut s = Stack::default();
        for p in ["a", "a-b", "a/x", "a/y/z", "a0", "b"] {
            s.paths.insert(
                p.into(),
                Node {
                    file_type: if p == "a" {
                        FileType::Dir
                    } else {
                        FileType::File
                    },
                    size: 1,
                    mode: 0,
                    layer: 0,
                    sensitive: None,
                },
            );
        }
        let inside: Vec<&String> = s.paths.range(descendants("a")).map(|(k, _)| k).collect();
        assert_eq!(inside, ["a/x", "a/y/z"]);
        assert_eq!(s.whiteout_size("a"), 3);
        assert_eq!(
            s.whiteout_size("b"),
            0,
            "a deleted file counts 0, as in dive"
        );
    }

    fn file(t: FileType, size: u64) -> Node {
        Node {
            file_type: t,
            size,
            mode: 0,
            layer: 0,
            sensitive: None,
        }
    }

    /// Generated trees and nested whiteout targets: the one-walk sizes are
    /// the plain definition's, and each path is visited at most once.
    #[test]
    fn whiteout_sizes_match_the_definition_and_visit_each_path_once() {
        let mut next = image_testsupport::xorshift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..200 {
            let mut s = Stack::default();
            let names = ["a", "a-b", "b", "a0", "c"];
            let mut dirs = vec![String::new()];
            for _ in 0..40 {
                let parent = dirs[(next() % dirs.len() as u64) as usize].clone();
                let name = names[(next() % names.len() as u64) as usize];
                let p = join(&parent, name);
                if next() % 2 == 0 {
                    s.paths.insert(p.clone(), file(FileType::Dir, 0));
                    dirs.push(p);
                } else {
                    s.paths
                        .entry(p)
                        .or_insert(file(FileType::File, next() % 100));
                }
            }
            let keys: Vec<String> = s.paths.keys().cloned().collect();
            let targets: Vec<&str> = keys
                .iter()
                .filter(|_| next() % 3 == 0)
                .map(String::as_str)
                .chain(["zz", "a/none"])
                .collect();
            s.visited.set(0);
            let got = s.whiteout_sizes(&targets);
            assert!(s.visited.get() <= s.paths.len(), "each path once");
            for t in &targets {
                assert_eq!(got[t], s.whiteout_size(t), "{t} in {keys:?}");
            }
        }
    }

    /// A deep chain of directories, each deleted by a whiteout of the same
    /// layer (dive sums each one's tree): one walk of the chain, not one
    /// per whiteout.
    #[test]
    fn nested_whiteouts_walk_the_tree_once() {
        let mut s = Stack::default();
        let mut p = String::from("d");
        let mut targets = Vec::new();
        for _ in 0..2000 {
            s.paths.insert(p.clone(), file(FileType::Dir, 0));
            targets.push(p.clone());
            p.push_str("/d");
        }
        for i in 0..1000 {
            s.paths.insert(format!("{p}/f{i}"), file(FileType::File, 1));
        }
        let t: Vec<&str> = targets.iter().map(String::as_str).collect();
        let sizes = s.whiteout_sizes(&t);
        assert_eq!(sizes["d"], 1000);
        assert_eq!(sizes[t[1999]], 1000);
        assert_eq!(s.visited.get(), s.paths.len());
    }

    #[test]
    fn whiteouts_apply_to_lower_layers_only() {
        let mut s = Stack::default();
        s.apply(
            0,
            &[
                entry("d", EntryKind::Directory, 0, None),
                entry("d/old", EntryKind::Regular, 5, None),
                entry("f", EntryKind::Regular, 7, None),
            ],
        );
        let (changes, _) = s.apply(
            1,
            &[
                entry("d/new", EntryKind::Regular, 3, None),
                entry("d", EntryKind::Directory, 0, Some(Whiteout::Opaque)),
                entry("f", EntryKind::Regular, 0, Some(Whiteout::Remove)),
            ],
        );
        let kinds: Vec<(&str, ChangeKind, u64)> = changes
            .iter()
            .map(|c| (c.path.as_str(), c.kind, c.size))
            .collect();
        assert_eq!(
            kinds,
            [
                ("/d", ChangeKind::Opaque, 5),
                ("/f", ChangeKind::Deleted, 7),
                ("/d/new", ChangeKind::Added, 3)
            ]
        );
        let left: Vec<&String> = s.paths.keys().collect();
        assert_eq!(left, ["d", "d/new"]);
    }
}
