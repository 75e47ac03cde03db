//! What the parity tests compare of a built image, read independently of
//! our own unpacker: the root filesystem that its layers stack up to (a
//! small applier of OCI layers written for the tests, so a bug in
//! `image_overlay::unpack` cannot hide a difference), the run-time config
//! fields, the layer count and the history's `empty_layer` pattern.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use image_core::Digest;

/// The kind of a node of a root filesystem, with what identifies its
/// content (a digest of a regular file's bytes, a symlink's target).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file: the sha256 of its content and its size.
    File { digest: Digest, size: u64 },
    /// A directory.
    Dir,
    /// A symbolic link and its target, as written.
    Symlink(String),
    /// A character device (major, minor).
    Char(u32, u32),
    /// A block device (major, minor).
    Block(u32, u32),
    /// A named pipe.
    Fifo,
}

/// A node of a root filesystem: kind, permission bits (with set-id and
/// sticky), owner, and the inode it shares with its hard links.
#[derive(Clone, Debug)]
pub struct Node {
    /// What it is.
    pub kind: Kind,
    /// `mode & 0o7777`.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Equal for the paths of one hard-link group (only meaningful
    /// within one tree).
    pub inode: u64,
}

impl Node {
    /// The node as one line of a difference report.
    pub fn describe(&self) -> String {
        let kind = match &self.kind {
            Kind::File { digest, size } => format!("file {size} bytes {}", digest.short()),
            Kind::Dir => "dir".to_owned(),
            Kind::Symlink(t) => format!("symlink -> {t}"),
            Kind::Char(a, b) => format!("char {a}:{b}"),
            Kind::Block(a, b) => format!("block {a}:{b}"),
            Kind::Fifo => "fifo".to_owned(),
        };
        format!("{kind} {:04o} {}:{}", self.mode, self.uid, self.gid)
    }

    /// Whether it is an empty regular file.
    fn is_empty_file(&self) -> bool {
        matches!(self.kind, Kind::File { size: 0, .. })
    }
}

/// A root filesystem: nodes by path relative to the root (no leading or
/// trailing `/`; the root itself is left out).
#[derive(Clone, Debug, Default)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
    next_inode: u64,
}

/// The paths a container runtime creates as mount points when it runs a
/// build step (`RUN`), deepest first. buildah (and Docker's classic
/// builder) leave them in the step's layer, as empty directories or empty
/// files; BuildKit removes them, as our builder does. They are the one
/// difference the comparison forgives, and only where both of these hold:
/// the path is not in the base image (so the Dockerfile did not make it)
/// and it is still empty (so no step put anything in it).
pub const RUNTIME_STUBS: &[&str] = &[
    "run/.containerenv",
    "run/secrets",
    "run",
    "etc/hostname",
    "etc/hosts",
    "etc/resolv.conf",
    "dev",
    "proc",
    "sys",
];

impl Tree {
    /// The node at `path`, if any.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Every path and node, in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }

    /// Adds a node at `path`; a new inode unless `inode` is given (a hard
    /// link).
    fn insert(
        &mut self,
        path: String,
        kind: Kind,
        mode: u32,
        uid: u64,
        gid: u64,
        inode: Option<u64>,
    ) {
        let inode = inode.unwrap_or_else(|| {
            self.next_inode += 1;
            self.next_inode
        });
        self.nodes.insert(
            path,
            Node {
                kind,
                mode,
                uid,
                gid,
                inode,
            },
        );
    }

    /// Removes `path` and everything below it.
    fn remove_subtree(&mut self, path: &str) {
        self.nodes.remove(path);
        self.remove_children(path);
    }

    /// Removes everything below `dir` (`""` is the root), keeping `dir`.
    fn remove_children(&mut self, dir: &str) {
        let below: Vec<String> = self
            .nodes
            .keys()
            .filter(|p| is_below(p, dir))
            .cloned()
            .collect();
        for p in below {
            self.nodes.remove(&p);
        }
    }

    /// The hard-link groups: sets of two or more paths sharing an inode.
    pub fn hardlink_groups(&self) -> BTreeSet<BTreeSet<String>> {
        let mut by_inode: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
        for (p, n) in &self.nodes {
            if !matches!(n.kind, Kind::Dir) {
                by_inode.entry(n.inode).or_default().insert(p.clone());
            }
        }
        by_inode.into_values().filter(|g| g.len() > 1).collect()
    }

    /// Drops the [`RUNTIME_STUBS`] that are empty here and absent from
    /// `base`.
    pub fn drop_runtime_stubs(&mut self, base: &Tree) {
        for stub in RUNTIME_STUBS {
            if base.nodes.contains_key(*stub) {
                continue;
            }
            let empty = match self.nodes.get(*stub) {
                Some(n) if n.is_empty_file() => true,
                Some(Node {
                    kind: Kind::Dir, ..
                }) => !self.nodes.keys().any(|p| is_below(p, stub)),
                _ => false,
            };
            if empty {
                self.nodes.remove(*stub);
            }
        }
    }

    /// Applies one layer (an uncompressed tar stream) as the OCI image
    /// spec says: its whiteouts (`.wh.NAME`, and `.wh..wh..opq` for an
    /// opaque directory) remove from the layers below, then its entries
    /// are added; an entry replaces what was at its path (a directory over
    /// a directory keeps the children), a hard link shares its target's
    /// inode.
    ///
    /// # Panics
    /// On a damaged tar or a hard link to a path that is not there.
    pub fn apply_layer(&mut self, tar: impl Read) {
        let mut archive = tar::Archive::new(tar);
        let mut adds = Vec::new();
        let mut whiteouts = Vec::new();
        let mut opaques = Vec::new();
        for entry in archive.entries().expect("layer entries") {
            let mut entry = entry.expect("layer entry");
            let path = normalise(&entry.path().expect("entry path").to_string_lossy());
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
            if name == ".wh..wh..opq" {
                opaques.push(dir.to_owned());
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                whiteouts.push(join(dir, hidden));
                continue;
            }
            let h = entry.header();
            let (mode, uid, gid) = (
                h.mode().expect("mode") & 0o7777,
                h.uid().expect("uid"),
                h.gid().expect("gid"),
            );
            let dev = || {
                (
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0),
                )
            };
            let link = || {
                entry
                    .link_name()
                    .expect("link name")
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            let add = match h.entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let mut bytes = Vec::new();
                    entry.read_to_end(&mut bytes).expect("entry content");
                    let size = bytes.len() as u64;
                    Add::Node(Kind::File {
                        digest: Digest::sha256(&bytes),
                        size,
                    })
                }
                tar::EntryType::Directory => Add::Node(Kind::Dir),
                tar::EntryType::Symlink => Add::Node(Kind::Symlink(link())),
                tar::EntryType::Link => Add::Hardlink(normalise(&link())),
                tar::EntryType::Char => Add::Node(Kind::Char(dev().0, dev().1)),
                tar::EntryType::Block => Add::Node(Kind::Block(dev().0, dev().1)),
                tar::EntryType::Fifo => Add::Node(Kind::Fifo),
                // PAX and GNU long-name headers are folded into the next
                // entry by the tar crate; anything else is not a file.
                _ => continue,
            };
            adds.push((path, add, mode, uid, gid));
        }
        for dir in opaques {
            self.remove_children(&dir);
        }
        for path in whiteouts {
            self.remove_subtree(&path);
        }
        for (path, add, mode, uid, gid) in adds {
            if path.is_empty() {
                continue; // the root directory's own entry
            }
            self.make_parents(&path);
            match add {
                Add::Node(Kind::Dir) if matches!(self.get(&path), Some(n) if n.kind == Kind::Dir) =>
                {
                    let n = self.nodes.get_mut(&path).expect("present");
                    (n.mode, n.uid, n.gid) = (mode, uid, gid);
                }
                Add::Node(kind) => {
                    self.remove_subtree(&path);
                    self.insert(path, kind, mode, uid, gid, None);
                }
                Add::Hardlink(target) => {
                    let t = self
                        .get(&target)
                        .unwrap_or_else(|| panic!("hard link {path} to {target}: no such path"))
                        .clone();
                    self.remove_subtree(&path);
                    self.insert(path, t.kind, t.mode, t.uid, t.gid, Some(t.inode));
                }
            }
        }
    }

    /// Directories a layer names no entry for but puts something in
    /// (0755, root's), as the unpackers make them.
    fn make_parents(&mut self, path: &str) {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let dir = &path[..at + i];
            if !self.nodes.contains_key(dir) {
                self.insert(dir.to_owned(), Kind::Dir, 0o755, 0, 0, None);
            }
            at += i + 1;
        }
    }

    /// The tree of a directory on disk (an unpacked root filesystem),
    /// read without following any symlink.
    ///
    /// # Panics
    /// When the directory cannot be read.
    pub fn from_dir(root: &Path) -> Tree {
        let mut tree = Tree::default();
        let mut inodes: BTreeMap<(u64, u64), u64> = BTreeMap::new();
        let mut stack = vec![String::new()];
        while let Some(rel) = stack.pop() {
            let dir = if rel.is_empty() {
                root.to_path_buf()
            } else {
                root.join(&rel)
            };
            for entry in std::fs::read_dir(&dir).expect("read_dir") {
                let entry = entry.expect("dir entry");
                let path = join(&rel, &entry.file_name().to_string_lossy());
                let md = entry.path().symlink_metadata().expect("lstat");
                let ft = md.file_type();
                let kind = if ft.is_dir() {
                    stack.push(path.clone());
                    Kind::Dir
                } else if ft.is_symlink() {
                    let t = std::fs::read_link(entry.path()).expect("readlink");
                    Kind::Symlink(t.to_string_lossy().into_owned())
                } else if ft.is_file() {
                    let f = std::fs::File::open(entry.path()).expect("open");
                    let (digest, size) =
                        Digest::of_reader(image_core::digest::Algorithm::Sha256, f).expect("read");
                    Kind::File { digest, size }
                } else if ft.is_fifo() {
                    Kind::Fifo
                } else {
                    let (ma, mi) = major_minor(md.rdev());
                    if ft.is_char_device() {
                        Kind::Char(ma, mi)
                    } else {
                        Kind::Block(ma, mi)
                    }
                };
                let inode = (!ft.is_dir() && md.nlink() > 1).then(|| {
                    *inodes.entry((md.dev(), md.ino())).or_insert_with(|| {
                        tree.next_inode += 1;
                        tree.next_inode
                    })
                });
                tree.insert(
                    path,
                    kind,
                    md.mode() & 0o7777,
                    u64::from(md.uid()),
                    u64::from(md.gid()),
                    inode,
                );
            }
        }
        tree
    }
}

/// A device number's major and minor parts (Linux's encoding).
fn major_minor(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major as u32, minor as u32)
}

enum Add {
    Node(Kind),
    Hardlink(String),
}

/// `./a/b/`, `/a/b` and `a/b` are all `a/b`.
fn normalise(p: &str) -> String {
    p.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Whether `p` is strictly below `dir` (`""` is the root).
fn is_below(p: &str, dir: &str) -> bool {
    dir.is_empty() || (p.len() > dir.len() && p.starts_with(dir) && p.as_bytes()[dir.len()] == b'/')
}

/// The config fields the comparison covers (the run-time ones a Dockerfile
/// sets).
pub const CONFIG_FIELDS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Labels",
    "Volumes",
    "StopSignal",
    "Healthcheck",
    "OnBuild",
    "Shell",
];

/// What the comparison reads of an image.
#[derive(Debug)]
pub struct Facts {
    /// The root filesystem its layers stack up to.
    pub tree: Tree,
    /// The image config's `config` object (`null` when absent).
    pub config: serde_json::Value,
    /// How many layers the manifest lists.
    pub layers: usize,
    /// `empty_layer` of each history entry, in order.
    pub empty_layers: Vec<bool>,
}

impl Facts {
    /// Reads an image from its manifest, fetching blobs with `blob`
    /// (digest string to bytes). Layers may be plain or gzip tars.
    pub fn read(manifest: &[u8], blob: impl Fn(&str) -> Vec<u8>) -> Facts {
        let manifest: serde_json::Value = serde_json::from_slice(manifest).expect("manifest JSON");
        let config_digest = manifest["config"]["digest"]
            .as_str()
            .expect("config digest");
        let config: serde_json::Value =
            serde_json::from_slice(&blob(config_digest)).expect("config JSON");
        let layers = manifest["layers"].as_array().expect("layers");
        let mut tree = Tree::default();
        for l in layers {
            let bytes = blob(l["digest"].as_str().expect("layer digest"));
            if bytes.starts_with(&[0x1f, 0x8b]) {
                tree.apply_layer(flate2::read::GzDecoder::new(bytes.as_slice()));
            } else {
                tree.apply_layer(bytes.as_slice());
            }
        }
        let empty_layers = config["history"]
            .as_array()
            .map(|h| {
                h.iter()
                    .map(|e| e["empty_layer"].as_bool().unwrap_or(false))
                    .collect()
            })
            .unwrap_or_default();
        Facts {
            tree,
            config: config["config"].clone(),
            layers: layers.len(),
            empty_layers,
        }
    }

    /// An image in an OCI layout (our store is one), by the name in its
    /// index's `org.opencontainers.image.ref.name` annotation.
    pub fn from_oci_layout(layout: &Path, name: &str) -> Facts {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json"))
                .expect("index JSON");
        let digest = index["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {}", layout.display()))["digest"]
            .as_str()
            .expect("digest")
            .to_owned();
        let blob = |d: &str| {
            let (alg, hex) = d.split_once(':').expect("algorithm:hex");
            std::fs::read(layout.join("blobs").join(alg).join(hex)).expect("blob")
        };
        Facts::read(&blob(&digest), blob)
    }

    /// An image that `skopeo copy`/`buildah push` wrote to `dir:DIR`
    /// (blobs named by their hex digest, beside `manifest.json`).
    pub fn from_dir_transport(dir: &Path) -> Facts {
        let blob = |d: &str| {
            let hex = d.split_once(':').expect("algorithm:hex").1;
            std::fs::read(dir.join(hex)).expect("blob")
        };
        Facts::read(
            &std::fs::read(dir.join("manifest.json")).expect("manifest.json"),
            blob,
        )
    }
}

/// A config field with the forms that mean "not set" made one: absent,
/// `null`, `""`, `[]` and `{}` are all `null`. (buildah writes
/// `"Entrypoint": []`, `"Volumes": {}` and `"OnBuild": []` for fields a
/// Dockerfile never set, Docker and we leave them out; the image spec
/// reads both the same.)
fn field(config: &serde_json::Value, name: &str) -> serde_json::Value {
    match &config[name] {
        serde_json::Value::String(s) if s.is_empty() => serde_json::Value::Null,
        serde_json::Value::Array(a) if a.is_empty() => serde_json::Value::Null,
        serde_json::Value::Object(o) if o.is_empty() => serde_json::Value::Null,
        v => v.clone(),
    }
}

/// Every difference between two images (`a` made by the tool named `an`,
/// `b` by `bn`) built on `base`'s tree, one readable line each; empty when
/// they are the same. Modification times are not compared: both tools
/// stamp the time of the build on what a step writes.
pub fn differences(an: &str, a: &Facts, bn: &str, b: &Facts, base: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    if a.layers != b.layers {
        out.push(format!("layer count: {an} {}, {bn} {}", a.layers, b.layers));
    }
    if a.empty_layers != b.empty_layers {
        out.push(format!(
            "history empty_layer: {an} {}, {bn} {}",
            pattern(&a.empty_layers),
            pattern(&b.empty_layers)
        ));
    }
    for f in CONFIG_FIELDS {
        let (x, y) = (field(&a.config, f), field(&b.config, f));
        if x != y {
            out.push(format!("config {f}: {an} {x}, {bn} {y}"));
        }
    }
    let (mut ta, mut tb) = (a.tree.clone(), b.tree.clone());
    ta.drop_runtime_stubs(base);
    tb.drop_runtime_stubs(base);
    out.extend(tree_differences(an, &ta, bn, &tb));
    out
}

/// Every difference between two trees (paths, kinds, content, link
/// targets, modes, owners, hard-link groups), one line each.
pub fn tree_differences(an: &str, a: &Tree, bn: &str, b: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (p, x) in a.iter() {
        match b.get(p) {
            None => out.push(format!("/{p}: only {an}'s: {}", x.describe())),
            Some(y) if x.kind != y.kind || x.mode != y.mode || x.uid != y.uid || x.gid != y.gid => {
                out.push(format!(
                    "/{p}: {an} {}, {bn} {}",
                    x.describe(),
                    y.describe()
                ));
            }
            Some(_) => {}
        }
    }
    for (p, y) in b.iter() {
        if a.get(p).is_none() {
            out.push(format!("/{p}: only {bn}'s: {}", y.describe()));
        }
    }
    let (ga, gb) = (a.hardlink_groups(), b.hardlink_groups());
    if ga != gb {
        out.push(format!("hard-link groups: {an} {ga:?}, {bn} {gb:?}"));
    }
    out
}

/// `empty_layer` flags as a string of `E` (empty) and `L` (layer).
fn pattern(flags: &[bool]) -> String {
    flags.iter().map(|e| if *e { 'E' } else { 'L' }).collect()
}
