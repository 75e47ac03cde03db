//! One function per fuzz target. Each takes arbitrary bytes, must never
//! panic, and checks a round-trip property where the format has one:
//! parse, write, parse again gives the same value.

use image_core::config::ImageConfig;
use image_core::manifest::Document;
use image_core::{Digest, Platform, Reference};

/// Digests: a parsed digest prints back to exactly its input.
pub fn digest(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = s.parse::<Digest>() {
        assert_eq!(d.to_string(), s, "a digest prints as parsed");
        assert_eq!(d.to_string().parse::<Digest>().ok(), Some(d));
    }
}

/// References: the normalised form parses to the same reference, and the
/// familiar form does too.
pub fn reference(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = s.parse::<Reference>() {
        let again: Reference = r.to_string().parse().expect("normalised form parses");
        assert_eq!(again, r, "normalised form of {s:?}");
        let familiar: Reference = r.familiar().parse().expect("familiar form parses");
        assert_eq!(familiar, r, "familiar form of {s:?}");
    }
}

/// Platforms: the printed form parses to the same normalised platform.
pub fn platform(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = s.parse::<Platform>() {
        let again: Platform = p.to_string().parse().expect("printed platform parses");
        assert_eq!(again.to_string(), p.to_string(), "platform {s:?}");
    }
}

/// Manifests and indexes: the digest is of the input bytes; rewriting the
/// parsed value canonically and parsing that gives the same value, and the
/// canonical bytes are a fixed point.
pub fn document(data: &[u8]) {
    let Ok(doc) = Document::from_bytes(data.to_vec(), None) else {
        return;
    };
    assert_eq!(doc.digest(), &Digest::sha256(data));
    match doc {
        Document::Manifest(m) => {
            let rewritten = m.modify(|_| {}).expect("a parsed manifest can be written");
            let again = Document::from_bytes(rewritten.raw().to_vec(), None).expect("reparses");
            let Document::Manifest(again) = again else {
                panic!("a manifest came back as an index");
            };
            assert_eq!(again.inner(), m.inner());
            assert_eq!(again.modify(|_| {}).expect("write").raw(), rewritten.raw());
        }
        Document::Index(i) => {
            let rewritten = i.modify(|_| {}).expect("a parsed index can be written");
            let again = Document::from_bytes(rewritten.raw().to_vec(), None).expect("reparses");
            let Document::Index(again) = again else {
                panic!("an index came back as a manifest");
            };
            assert_eq!(again.inner(), i.inner());
            assert_eq!(again.modify(|_| {}).expect("write").raw(), rewritten.raw());
        }
    }
}

/// Image configs: read, write canonically, read again gives the same value.
pub fn config(data: &[u8]) {
    let Ok(c) = ImageConfig::from_bytes(data.to_vec()) else {
        return;
    };
    assert_eq!(c.image_id(), &Digest::sha256(data));
    let Ok(rewritten) = c.modify(|_| {}) else {
        return; // e.g. a float JSON cannot round-trip exactly is reported, not panicked on
    };
    let again =
        ImageConfig::from_bytes(rewritten.raw().to_vec()).expect("canonical config reparses");
    assert_eq!(again.file(), rewritten.file());
    assert_eq!(again.modify(|_| {}).expect("write").raw(), rewritten.raw());
}

/// Layer unpack: any bytes (plain, gzip or zstd, sniffed) applied with
/// small limits onto a fresh directory inside a fresh parent that also
/// holds sentinels; whatever the layer says, nothing outside the target
/// may change: the parent lists the same names, and the sentinels keep
/// their type, content, mode, owner and mtime. Errors are fine; escapes
/// and panics are not.
pub fn unpack(data: &[u8]) {
    use image_overlay::unpack::{unpack, DevicePolicy, Limits, PathResolution, UnpackOptions};
    use std::collections::BTreeMap;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    type Facts = (
        u32,
        u32,
        u32,
        i64,
        i64,
        Option<Vec<u8>>,
        Option<std::path::PathBuf>,
    );
    fn facts(p: &Path) -> Facts {
        let md = std::fs::symlink_metadata(p).expect("sentinel is there");
        let content = md
            .is_file()
            .then(|| std::fs::read(p).expect("read sentinel"));
        let link = md
            .file_type()
            .is_symlink()
            .then(|| std::fs::read_link(p).expect("link"));
        (
            md.mode(),
            md.uid(),
            md.gid(),
            md.mtime(),
            md.mtime_nsec(),
            content,
            link,
        )
    }
    fn state(parent: &Path) -> BTreeMap<std::path::PathBuf, Option<Facts>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![parent.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).expect("list") {
                let p = e.expect("entry").path();
                let rel = p.strip_prefix(parent).expect("under parent").to_path_buf();
                if rel == Path::new("target") {
                    out.insert(rel, None); // its content is the layer's business
                    continue;
                }
                let f = facts(&p);
                if std::fs::symlink_metadata(&p).expect("lstat").is_dir() {
                    stack.push(p);
                }
                out.insert(rel, Some(f));
            }
        }
        out
    }
    /// Makes every directory under `dir` removable again (a layer may
    /// leave one with mode 000).
    fn unlock(dir: &Path) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700));
                unlock(&p);
            }
        }
    }

    let parent = tempfile::tempdir().expect("temp parent");
    let base = parent.path();
    let target = base.join("target");
    std::fs::write(base.join("sentinel"), b"keep").expect("sentinel");
    std::fs::create_dir(base.join("sentinel-dir")).expect("sentinel dir");
    std::fs::write(base.join("sentinel-dir/inner"), b"keep").expect("sentinel");
    std::os::unix::fs::symlink("sentinel", base.join("sentinel-link")).expect("sentinel link");
    let before = state(base);

    // Both ways of resolving paths: openat2, and the component walk that
    // stands in for it on kernels without it.
    for resolution in [PathResolution::Auto, PathResolution::ComponentWalk] {
        std::fs::create_dir(&target).expect("target");
        let mut options = UnpackOptions::default()
            .with_limits(Limits {
                max_expanded_bytes: 16 << 20,
                max_entries: 10_000,
                max_header_bytes: 1 << 20,
            })
            .with_path_resolution(resolution);
        // Device nodes are a policy question, not a containment one, and real
        // ones in a temp dir are better not made when fuzzing as root.
        options.devices = DevicePolicy::Skip;
        let unpacked = unpack(data, &target, &options);

        // Listing reads the stream through the same path: whatever unpack
        // read whole, list reads whole, with the same entries and diff ID.
        if let Ok(r) = &unpacked {
            let listed = image_overlay::list::list(
                data,
                &image_overlay::list::ListOptions::default().with_limits(options.limits),
                |_| {},
            )
            .expect("unpack read the layer, so list must");
            assert_eq!(listed.entries, r.entries);
            assert_eq!(listed.diff_id, r.diff_id);
        }

        unlock(&target);
        // std's remove_dir_all does not follow links out of the target.
        std::fs::remove_dir_all(&target).expect("remove target");
        assert_eq!(
            state(base),
            before,
            "something outside the target changed ({resolution:?})"
        );
        assert!(!Path::new("/pwned").exists(), "a file appeared at /pwned");
    }
}

/// Archive load: any bytes read as a `docker save` tarball (either layout)
/// or an OCI archive, loaded into a [`MemoryStore`]. Errors are fine;
/// panics are not, and neither is a load that succeeds with something
/// wrong in the store: no tag may carry a digest (`name@sha256:...` would
/// be looked up as a string and spoof the content it names), every tag set
/// must name a loaded image, the store must pass fsck, and every loaded
/// image must copy out (every blob of its closure there and verifying).
///
/// [`MemoryStore`]: image_store::MemoryStore
pub fn archive(data: &[u8]) {
    use image_store::archive::{load, LoadOptions};
    use image_store::{copy_image, FsckOptions, MemoryStore, TagStore};

    let store = MemoryStore::new();
    // A small expansion limit: the corpus holds bombs, and the replay runs
    // in a debug build.
    let options = LoadOptions::default().max_expanded_bytes(16 << 20);
    let Ok(report) = load(&store, data, &options) else {
        // A failed load tags nothing (names are checked first, tags set last).
        assert!(
            store.tags().expect("tags of a memory store").is_empty(),
            "a failed load tagged"
        );
        return;
    };
    let tags = store.tags().expect("tags of a memory store");
    for t in &tags {
        assert!(
            !t.name.contains('@'),
            "a tag with a digest was set: {:?}",
            t.name
        );
        assert!(
            report
                .images
                .iter()
                .any(|i| i.descriptor.digest() == t.descriptor.digest()),
            "tag {:?} names no loaded image",
            t.name
        );
    }
    let roots: Vec<_> = report.images.iter().map(|i| i.descriptor.clone()).collect();
    let fsck = image_store::fsck::fsck(&store, &roots, &[], &FsckOptions::default())
        .expect("fsck of a memory store");
    assert!(fsck.is_clean(), "fsck after a successful load: {fsck:?}");
    for image in &report.images {
        copy_image(&store, &MemoryStore::new(), &image.descriptor)
            .expect("a loaded image is complete and verifies");
    }
}

/// OCI layout read and copy: the input is a tar (plain, gzip or zstd)
/// that is unpacked, with small limits and no device nodes, into a fresh
/// directory (so it may hold symlinks to anywhere, hard links, FIFOs,
/// anything a hostile layout on disk can); next to that directory lies a
/// secret file the layout's links may point at. Each tag of the layout
/// (at most four) is then copied into a [`MemoryStore`] and into a fresh
/// on-disk layout.
///
/// Errors are fine; panics and hangs are not, and a copy that succeeds
/// must not have read through a link: `index.json`, `oci-layout` and
/// every blob it copied must be regular files of the layout (so a layout
/// without `oci-layout` is refused too), not symlinks (a link may
/// lead outside it, to `/dev/zero` or to a FIFO). Nothing outside the
/// layout and the destination may change.
///
/// [`MemoryStore`]: image_store::MemoryStore
pub fn layout(data: &[u8]) {
    use image_overlay::unpack::{unpack, DevicePolicy, Limits, UnpackOptions};
    use image_store::{copy_tag, MemoryStore, OciDir, TagStore};
    use std::path::Path;

    let parent = tempfile::tempdir().expect("temp parent");
    let base = parent.path();
    let src = base.join("layout");
    std::fs::create_dir(&src).expect("layout dir");
    std::fs::write(base.join("secret"), b"outside the layout").expect("secret");
    let mut options = UnpackOptions::default().with_limits(Limits {
        max_expanded_bytes: 4 << 20,
        max_entries: 1_000,
        ..Limits::default()
    });
    options.devices = DevicePolicy::Skip;
    if unpack(data, &src, &options).is_err() {
        return;
    }
    let listing = |p: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let before = listing(base);

    let Ok(layout) = OciDir::open(&src) else {
        return;
    };
    let Ok(tags) = layout.tags() else {
        return;
    };
    let is_regular =
        |rel: &str| std::fs::symlink_metadata(src.join(rel)).is_ok_and(|m| m.file_type().is_file());
    for (n, tag) in tags.iter().take(4).enumerate() {
        let mem = MemoryStore::new();
        if let Ok(report) = copy_tag(&layout, &tag.name, &mem, Some("fuzz.local/copy:1")) {
            for file in ["index.json", "oci-layout"] {
                assert!(
                    is_regular(file),
                    "copied from a layout whose {file} is not a regular file"
                );
            }
            for info in image_store::Manager::list(&mem).expect("list") {
                let rel = format!("blobs/{}/{}", info.digest.algorithm(), info.digest.hex());
                assert!(
                    is_regular(&rel),
                    "copied {rel} ({}), which is not a regular file of the layout",
                    report.descriptor.digest()
                );
            }
        }
        let dst = base.join(format!("dst{n}"));
        if let Ok(dst) = OciDir::open_or_create(&dst) {
            let _ = copy_tag(&layout, &tag.name, &dst, Some("fuzz.local/copy:1"));
        }
    }
    let mut after = listing(base);
    after.retain(|n| !n.starts_with("dst"));
    assert_eq!(
        after, before,
        "something appeared or vanished next to the layout"
    );
    assert_eq!(
        std::fs::read(base.join("secret")).expect("secret"),
        b"outside the layout",
        "the file next to the layout changed"
    );
    assert!(!Path::new("/pwned").exists(), "a file appeared at /pwned");
}

/// Spec generation: the input is a JSON object
/// `{"image": <image config>, "run": {...}, "passwd": "...", "group": "..."}`
/// whose `run` holds `docker run`'s choices (`user`, `groupAdd`, `env`,
/// `workdir`, `hostname`, `entrypoint`, `cmd`, `tty`, `readOnly`,
/// `volumes`); the user is resolved against the given `/etc/passwd` and
/// `/etc/group` texts and the spec generated as `create` does. Errors are
/// fine; panics are not, and a generated spec must never name a uid or
/// gid (primary or supplementary) above 2^31-1, which the kernel reads as
/// -1 ("unchanged", so root), must have an absolute `cwd` and a command.
pub fn spec(data: &[u8]) {
    use image_core::config::RunConfig;
    use image_runtime::spec::{generate, SpecContext};
    use image_runtime::user::{parse_group, parse_passwd, resolve_in};
    use image_runtime::{RunOptions, Volume};
    use serde_json::Value;

    let Ok(input) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Some(image) = input.get("image") else {
        return;
    };
    let Ok(config) = ImageConfig::from_bytes(serde_json::to_vec(image).expect("re-encode")) else {
        return;
    };
    let run_config: RunConfig = config.file().config.clone().unwrap_or_default();
    let run = input.get("run").cloned().unwrap_or(Value::Null);
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.as_array().map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap_or_default().to_owned())
                .collect()
        })
    };
    let mut opts = RunOptions::new();
    opts.user = run.get("user").and_then(Value::as_str).map(str::to_owned);
    opts.additional_gids = run
        .get("groupAdd")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_u64)
                .map(|g| u32::try_from(g).unwrap_or(u32::MAX))
                .collect()
        })
        .unwrap_or_default();
    opts.env = run.get("env").and_then(strings).unwrap_or_default();
    opts.working_dir = run
        .get("workdir")
        .and_then(Value::as_str)
        .map(str::to_owned);
    opts.hostname = run
        .get("hostname")
        .and_then(Value::as_str)
        .map(str::to_owned);
    opts.entrypoint = run.get("entrypoint").and_then(strings);
    opts.cmd = run.get("cmd").and_then(strings);
    opts.tty = run.get("tty").and_then(Value::as_bool).unwrap_or(false);
    opts.read_only = run
        .get("readOnly")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    for v in run.get("volumes").and_then(strings).unwrap_or_default() {
        match v.parse::<Volume>() {
            Ok(v) => opts.volumes.push(v),
            Err(_) => return,
        }
    }
    let text = |k: &str| input.get(k).and_then(Value::as_str).unwrap_or_default();
    let passwd = parse_passwd(text("passwd"));
    let group = parse_group(text("group"));
    let user_spec = opts
        .user
        .as_deref()
        .or(run_config.user.as_deref())
        .unwrap_or("");
    let Ok(user) = resolve_in(&passwd, &group, user_spec) else {
        return;
    };
    let ctx = SpecContext {
        id: "f".repeat(64),
        root_path: "rootfs".into(),
        user,
        etc_files: None,
        host_hard_limits: Vec::new(),
        cgroups_path: None,
        swap_limit: false,
    };
    let Ok(spec) = generate(&run_config, &opts, &ctx) else {
        return;
    };
    let process = spec.process().as_ref().expect("a spec has a process");
    let user = process.user();
    let max = u32::try_from(i32::MAX).expect("fits");
    assert!(user.uid() <= max, "uid {} above 2^31-1", user.uid());
    assert!(user.gid() <= max, "gid {} above 2^31-1", user.gid());
    for g in user.additional_gids().iter().flatten() {
        assert!(*g <= max, "supplementary gid {g} above 2^31-1");
    }
    assert!(
        process.cwd().is_absolute(),
        "cwd {:?} is not absolute",
        process.cwd()
    );
    assert!(
        process.args().as_ref().is_some_and(|a| !a.is_empty()),
        "a spec without a command"
    );
    // Every mount (the volumes') reads back as image-overlay's one mount
    // type, below the root, and converts back to itself.
    for m in spec.mounts().iter().flatten() {
        let read = image_runtime::spec::mounts::from_oci(m).expect("a generated mount reads");
        assert!(
            read.target.iter().all(|t| t.is_relative()
                && t.components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)))),
            "mount target {:?} leaves the root",
            read.target
        );
        let back = image_runtime::spec::mounts::to_oci(&read);
        assert_eq!(
            image_runtime::spec::mounts::from_oci(&back).expect("reads again"),
            read
        );
    }
}

/// Dockerfiles: parsing never panics; a parsed file prints to text that
/// parses to the same directives and instructions, printing is a fixed
/// point, RUN mounts parse the same twice, and expanding every step never
/// panics.
pub fn dockerfile(data: &[u8]) {
    use image_build::dockerfile::{parse, print, BuildInputs, Expander};
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(df) = parse("fuzz", s) else {
        return;
    };
    let printed = print(&df);
    let again = parse("printed", &printed).expect("a printed Dockerfile parses");
    assert_eq!(again.directives, df.directives, "directives of {s:?}");
    assert_eq!(again.commands(), df.commands(), "instructions of {s:?}");
    assert_eq!(print(&again), printed, "printing is a fixed point");
    // RUN --mount values: parsing one never panics, and a parsed spec's
    // key is that of the same value parsed again.
    for c in df.commands() {
        if let image_build::dockerfile::Command::Run(r) = c {
            if let Ok(specs) = image_build::mounts::parse_all(&r.mounts, "/w") {
                let again = image_build::mounts::parse_all(&r.mounts, "/w").expect("parses again");
                assert_eq!(specs, again, "mounts of {s:?}");
            }
        }
    }
    let platform: Platform = "linux/amd64".parse().expect("a platform");
    let inputs = BuildInputs {
        build_args: Default::default(),
        target: platform.clone(),
        build: platform,
    };
    if let Ok(ex) = Expander::new("fuzz", &df, &inputs) {
        for stage in &df.stages {
            let _ = ex.stage(stage, Default::default());
        }
    }
}

/// Seccomp profiles in Docker's format: a parsed profile is within its
/// limits, prints and parses back to itself, resolves for every
/// capability set with no more rules than it has, and compiles for the
/// native backend to programs the kernel takes (at most 4096
/// instructions each) or to a typed refusal.
pub fn seccomp(data: &[u8]) {
    use image_runtime::spec::seccomp::{Profile, Target};

    let Ok(profile) = Profile::from_slice(data) else {
        return;
    };
    profile
        .check_limits()
        .expect("a parsed profile is within limits");
    let again = serde_json::to_vec(&profile).expect("encode");
    assert_eq!(
        Profile::from_slice(&again).expect("reparse"),
        profile,
        "round trip"
    );
    let rules = profile.syscalls.as_ref().map_or(0, Vec::len);
    for caps in [&[][..], &["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"][..]] {
        let target = Target {
            arch: "amd64".into(),
            caps: caps.iter().map(|c| (*c).to_owned()).collect(),
            kernel: Some((6, 1)),
        };
        let spec = profile.resolve(&target);
        assert!(spec.syscalls().as_ref().map_or(0, Vec::len) <= rules);
        if let Ok(programs) = image_runtime::native::compile_seccomp(&spec) {
            assert!(programs.iter().all(|p| !p.is_empty() && p.len() <= 4096));
        }
    }
}
