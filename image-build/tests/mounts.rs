//! `RUN --mount` and the RUN options end to end, as root, on a real store,
//! real snapshots, mounts and containers (the native executor) of a
//! busybox-static base made in the test (no network). A missing tool or
//! privilege skips a test loudly unless CI=true, where it fails.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use image_build::build::{BuildError, BuildEvent, BuildOptions, BuildResult, StepError};
use image_build::mounts::{cache_dir_root, CacheMountId, Secret};
use image_build::run::RunError;
use image_core::{Classify, Compression, ErrorKind};

mod support;
use support::{fixture, Fixture, BASE};

/// Builds `body` after `FROM BASE`, recording events.
fn build(
    f: &Fixture,
    body: &str,
    change: impl FnOnce(&mut BuildOptions),
) -> (Result<BuildResult, BuildError>, Vec<BuildEvent>) {
    f.build(&format!("FROM {BASE}\n{body}"), change)
}

/// The output lines of a build of `body` that must succeed.
fn output(f: &Fixture, body: &str, change: impl FnOnce(&mut BuildOptions)) -> Vec<String> {
    let (r, events) = build(f, body, change);
    r.unwrap_or_else(|e| panic!("{}", chain(&e)));
    lines(&events)
}

/// The RUN error of a build of `body` that must fail in a RUN step.
fn run_error(f: &Fixture, body: &str, change: impl FnOnce(&mut BuildOptions)) -> RunError {
    let (r, _) = build(f, body, change);
    match r.expect_err("the build fails") {
        BuildError::Step {
            source: StepError::Run(run),
            ..
        } => *run,
        e => panic!("{}", chain(&e)),
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn lines(events: &[BuildEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::Output { line, .. } => Some(line.clone()),
            _ => None,
        })
        .collect()
}

fn cached(events: &[BuildEvent]) -> usize {
    support::count_events(events, |e| matches!(e, BuildEvent::StepCached { .. }))
}

/// No mount is left under the fixture's directory.
fn no_mounts_left(f: &Fixture) {
    let mounts = image_runtime::mountinfo::mounts_under(f.tmp.path()).unwrap();
    assert!(mounts.is_empty(), "{mounts:?}");
}

/// 32 random bytes written as letters and digits.
fn token() -> Vec<u8> {
    let mut raw = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut raw)
        .unwrap();
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    raw.iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()])
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir` (links not followed) whose bytes, as stored or
/// decompressed (gzip, zstd), hold `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ty = e.file_type().unwrap();
            seen += 1;
            if ty.is_dir() {
                stack.push(e.path());
            } else if ty.is_file() {
                let data = std::fs::read(e.path()).unwrap();
                let decompressed = match Compression::sniff(&data) {
                    Compression::None => Vec::new(),
                    c => {
                        let mut out = Vec::new();
                        image_core::codec::decoder(c, &data[..])
                            .and_then(|mut d| d.read_to_end(&mut out))
                            .unwrap_or_else(|e| panic!("{}: {e}", e_path(&e, &d)));
                        out
                    }
                };
                if contains(&data, needle) || contains(&decompressed, needle) {
                    found.push(e.path());
                }
            }
        }
    }
    assert!(seen > 10, "only {seen} entries under {}", dir.display());
    found
}

/// A process holding an exclusive `flock` on `path` until its stdin is
/// closed (flock(1) running cat): a descriptor of this process would be
/// copied by the forks of the tests running beside it, and outlive its
/// drop.
fn hold_lock(path: &Path) -> std::process::Child {
    let mut holder = std::process::Command::new("flock")
        .arg("-x")
        .arg(path)
        .args(["-c", "echo held; exec cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("flock(1) (util-linux)");
    let mut held = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut held,
    )
    .unwrap();
    assert_eq!(held, "held\n");
    holder
}

fn e_path(_: &std::io::Error, d: &Path) -> String {
    d.display().to_string()
}

/// Builds with a secret mounted as a file and given as a variable, read
/// but copied nowhere: its bytes are in no blob of the store (as stored
/// and decompressed), not in the config or its history, in no file under
/// the store, the runtime's state or the snapshots, in no output line;
/// another value of the secret is the same cache key. Then a RUN that
/// writes it into a file: it is found (the search works).
#[test]
fn a_secret_reaches_no_blob_file_config_history_key_or_line() {
    let Some(f) = fixture() else { return };
    let secret = token();
    let secrets = |s: &[u8]| {
        let s = Secret::new(s.to_vec());
        move |o: &mut BuildOptions| {
            o.secrets = BTreeMap::from([("x".to_owned(), s)]);
        }
    };
    let body = "RUN --mount=type=secret,id=x --mount=type=secret,id=x,env=TOK,target=/s/x \
                sh -c 'test -s /run/secrets/x && cat /run/secrets/x > /dev/null && test -n \"$TOK\" \
                && test \"$TOK\" = \"$(cat /s/x)\" && touch /done'\n";
    let (r, events) = build(&f, body, secrets(&secret));
    let r = r.unwrap_or_else(|e| panic!("{}", chain(&e)));
    no_mounts_left(&f);
    let found = files_holding(f.tmp.path(), &secret);
    assert!(found.is_empty(), "the secret is in {found:?}");
    let config = serde_json::to_vec(r.config.file()).unwrap();
    assert!(!contains(&config, &secret));
    assert!(!format!("{events:?}")
        .as_bytes()
        .windows(secret.len())
        .any(|w| w == secret));
    // The mount points are not in the layer: /run/secrets and /s are gone.
    let out = output(
        &f,
        &format!(
            "{body}RUN --mount=type=secret,id=x sh -c 'cat /run/secrets/x; echo'\n\
             RUN test -e /done && test ! -e /s && test ! -e /run/secrets && echo clean\n"
        ),
        |o| {
            o.secrets = BTreeMap::from([("x".to_owned(), Secret::new(b"v".to_vec()))]);
        },
    );
    assert_eq!(out, ["v", "clean"]);
    // Another value of the secret: the same key, the step is cached.
    let (r2, events) = build(&f, body, secrets(b"another value"));
    assert_eq!(r2.unwrap().image_id, r.image_id);
    assert_eq!(cached(&events), 1);

    // The negative control: a RUN writing the secret into the layer.
    let (r, _) = build(
        &f,
        "RUN --mount=type=secret,id=x cp /run/secrets/x /leak\n",
        secrets(&secret),
    );
    r.unwrap_or_else(|e| panic!("{}", chain(&e)));
    let found = files_holding(&f.tmp.path().join("store"), &secret);
    assert!(
        !found.is_empty(),
        "the search does not find a leaked secret"
    );
}

#[test]
fn a_required_secret_that_is_missing_is_a_clear_error() {
    let Some(f) = fixture() else { return };
    let e = run_error(&f, "RUN --mount=type=secret,id=tok,required true\n", |_| {});
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(chain(&e).contains("\"tok\" is required"), "{}", chain(&e));
    // Not required: the RUN runs without it.
    let out = output(
        &f,
        "RUN --mount=type=secret,id=tok sh -c 'test ! -e /run/secrets/tok && echo none'\n",
        |_| {},
    );
    assert_eq!(out, ["none"]);
    // Given: a read-only file of its mode and owner.
    let out = output(
        &f,
        "RUN --mount=type=secret,id=tok,target=/etc/tok,mode=0440,uid=5,gid=6 \
         sh -c 'ls -ln /etc/tok; echo x > /etc/tok || echo read-only'\n",
        |o| o.secrets = BTreeMap::from([("tok".to_owned(), Secret::new(b"v".to_vec()))]),
    );
    // stdout and stderr lines come in no fixed order between them.
    let ls = out.iter().find(|l| l.ends_with("/etc/tok")).expect("ls");
    let fields: Vec<&str> = ls.split_whitespace().collect();
    assert_eq!(
        (fields[0], fields[2], fields[3]),
        ("-r--r-----", "5", "6"),
        "{out:?}"
    );
    assert!(out.iter().any(|l| l == "read-only"), "{out:?}");
    no_mounts_left(&f);
}

const APPEND: &str = "RUN --mount=type=cache,target=/var/c,id=shared-c sh -c 'echo {LINE} >> /var/c/log; cat /var/c/log'\n";

/// A cache mount is kept between builds (the second sees the first's
/// line), is in no layer, lives under `cache_dir_root`.
#[test]
fn a_cache_mount_is_kept_between_builds_and_in_no_layer() {
    let Some(f) = fixture() else { return };
    let out = output(&f, &APPEND.replace("{LINE}", "first"), |_| {});
    assert_eq!(out, ["first"]);
    let out = output(
        &f,
        &format!(
            "{}RUN test ! -e /var/c && echo absent\n",
            APPEND.replace("{LINE}", "second")
        ),
        |_| {},
    );
    assert_eq!(out, ["first", "second", "absent"]);
    let id = CacheMountId::new("shared-c").unwrap();
    let dir = cache_dir_root(f.runtime.root()).join(id.escaped());
    assert_eq!(
        std::fs::read_to_string(dir.join("log")).unwrap(),
        "first\nsecond\n"
    );
    let found = files_holding(&f.tmp.path().join("store"), b"second\n");
    assert!(found.is_empty(), "the cache's content is in {found:?}");
    // The cache's content (changed since) keys nothing: the first build
    // again is cached.
    let (r, events) = build(&f, &APPEND.replace("{LINE}", "first"), |_| {});
    r.unwrap();
    assert_eq!(cached(&events), 1);
    no_mounts_left(&f);
}

/// Two builds in threads append under `sharing=locked`: the lines of one
/// are never between those of the other.
#[test]
fn a_locked_cache_mount_serialises_concurrent_builds() {
    let Some(f) = fixture() else { return };
    let body = |tag: &str| {
        format!(
            "RUN --mount=type=cache,target=/c,sharing=locked sh -c \
             'for i in 1 2 3 4 5 6; do echo {tag} >> /c/log; sleep 0.1; done'\n"
        )
    };
    std::thread::scope(|s| {
        let a = s.spawn(|| output(&f, &body("A"), |_| {}));
        let b = s.spawn(|| output(&f, &body("B"), |_| {}));
        a.join().unwrap();
        b.join().unwrap();
    });
    let dir = cache_dir_root(f.runtime.root()).join(CacheMountId::new("/c").unwrap().escaped());
    let log = std::fs::read_to_string(dir.join("log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 12, "{log}");
    let changes = lines.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(changes, 1, "interleaved: {log}");
    no_mounts_left(&f);
}

/// A bind mount of the context is read-only; with `rw` its writes are
/// thrown away; a link in the context resolves inside it; a stage's root
/// can be bound; none of it is in the layer.
#[test]
fn bind_mounts_are_read_only_in_root_and_rw_writes_are_discarded() {
    let Some(f) = fixture() else { return };
    std::fs::write(f.context().join("hello"), "hello\n").unwrap();
    std::os::unix::fs::symlink("../../..", f.context().join("up")).unwrap();
    std::os::unix::fs::symlink("/", f.context().join("abs")).unwrap();
    let out = output(
        &f,
        "RUN --mount=target=/src cat /src/hello\n\
         RUN --mount=target=/src sh -c 'touch /src/new 2>/dev/null && echo wrote || echo read-only'\n\
         RUN --mount=target=/src,rw sh -c 'echo changed > /src/hello && touch /src/new && cat /src/hello'\n\
         RUN --mount=source=up,target=/u --mount=source=abs,target=/a cat /u/hello /a/hello\n\
         RUN test ! -e /src && test ! -e /u && echo clean\n",
        |_| {},
    );
    assert_eq!(
        out,
        ["hello", "read-only", "changed", "hello", "hello", "clean"]
    );
    assert_eq!(
        std::fs::read_to_string(f.context().join("hello")).unwrap(),
        "hello\n"
    );
    assert!(!f.context().join("new").exists());
    // A stage's root, and its key follows the stage's content.
    let stage = |v: &str| {
        format!(
            "RUN echo {v} > /made\nFROM {BASE}\nRUN --mount=from=0,source=/made,target=/m cat /m\n"
        )
    };
    assert_eq!(output(&f, &stage("one"), |_| {}), ["one"]);
    assert_eq!(output(&f, &stage("two"), |_| {}), ["two"]);
    // The context's content keys the step: a change runs it again.
    std::fs::write(f.context().join("hello"), "hi again\n").unwrap();
    let out = output(&f, "RUN --mount=target=/src cat /src/hello\n", |_| {});
    assert_eq!(out, ["hi again"]);
    // A source missing from the context.
    let e = run_error(&f, "RUN --mount=source=nope,target=/n true\n", |_| {});
    assert!(
        chain(&e).contains("\"nope\" does not exist"),
        "{}",
        chain(&e)
    );
    no_mounts_left(&f);
}

/// A bind of the context shows the context as the build has it: what
/// `.dockerignore` leaves out is not there (BuildKit's context holds only
/// what the ignore file lets through). The raw directory was bound, so a
/// RUN read, and could copy into its layer, the files the user kept out
/// of the build (an `.env`, credentials), and they keyed the step.
#[test]
fn a_context_bind_shows_no_file_the_ignore_file_leaves_out() {
    let Some(f) = fixture() else { return };
    let ctx = f.context();
    std::fs::write(ctx.join(".dockerignore"), "secret.env\nsub/*.key\n").unwrap();
    std::fs::write(ctx.join("secret.env"), "TOKEN=1\n").unwrap();
    std::fs::write(ctx.join("kept"), "kept\n").unwrap();
    std::fs::create_dir(ctx.join("sub")).unwrap();
    std::fs::write(ctx.join("sub/id.key"), "KEY\n").unwrap();
    std::fs::write(ctx.join("sub/code"), "code\n").unwrap();
    let out = output(
        &f,
        "RUN --mount=target=/src find /src | sort\n\
         RUN --mount=target=/s,source=sub,rw find /s | sort\n\
         RUN --mount=target=/k,source=kept cat /k\n",
        |_| {},
    );
    assert_eq!(
        out,
        [
            "/src",
            "/src/.dockerignore",
            "/src/kept",
            "/src/sub",
            "/src/sub/code",
            "/s",
            "/s/code",
            "kept"
        ]
    );
    // An ignored source is not in the context, as for a COPY.
    let (r, _) = build(
        &f,
        "RUN --mount=target=/x,source=secret.env cat /x\n",
        |_| {},
    );
    let e = r.expect_err("an ignored source");
    assert!(
        chain(&e).contains("\"secret.env\" not found"),
        "{}",
        chain(&e)
    );
    // An ignored file keys nothing: changed, the step is cached.
    std::fs::write(ctx.join("secret.env"), "TOKEN=2\n").unwrap();
    let (r, events) = build(&f, "RUN --mount=target=/src find /src | sort\n", |_| {});
    r.unwrap();
    assert_eq!(cached(&events), 1);
    no_mounts_left(&f);
}

/// A RUN bind of the context whose source the ignore file leaves whole is
/// the context's directory itself (its inode in the container), not a
/// copy; where the ignore file excludes something under the source, every
/// bind of it in the build shows one filtered copy (one inode, across
/// RUNs and within one), not a copy per RUN; a `rw` bind's writes to it
/// reach no other RUN. Before, each RUN copied the whole source as soon
/// as the ignore file had any pattern.
#[test]
fn context_binds_copy_only_what_the_ignore_file_changes_once_per_build() {
    let Some(f) = fixture() else { return };
    let ctx = f.context();
    std::fs::write(ctx.join(".dockerignore"), "secret.env\n").unwrap();
    std::fs::write(ctx.join("secret.env"), "TOKEN=1\n").unwrap();
    std::fs::create_dir(ctx.join("sub")).unwrap();
    std::fs::write(ctx.join("sub/code"), "code\n").unwrap();
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let sub = ino(&ctx.join("sub")).to_string();
    let out = output(
        &f,
        "RUN --mount=target=/s,source=sub stat -c %i /s\n\
         RUN --mount=target=/t,source=sub,rw sh -c 'touch /t/new; cat /t/code'\n\
         RUN --mount=target=/u,source=sub stat -c %i /u\n",
        |_| {},
    );
    assert_eq!(out, [sub.as_str(), "code", sub.as_str()]);
    assert!(
        !ctx.join("sub/new").exists(),
        "a rw bind wrote to the context"
    );
    let out = output(
        &f,
        "RUN --mount=target=/a --mount=target=/b stat -c %i /a /b\n\
         RUN --mount=target=/c,rw sh -c 'touch /c/new; ls -A /c'\n\
         RUN --mount=target=/d sh -c 'stat -c %i /d; ls -A /d'\n",
        |_| {},
    );
    let root = ino(&ctx).to_string();
    assert_eq!(out.len(), 8, "{out:?}");
    assert_eq!(out[0], out[1], "two copies in one RUN: {out:?}");
    assert_eq!(out[0], out[5], "a copy per RUN: {out:?}");
    assert_ne!(out[0], root, "the context is bound: {out:?}");
    assert_eq!(out[2..5], [".dockerignore", "new", "sub"]);
    assert_eq!(out[6..], [".dockerignore", "sub"]);
    // The build's copy went with it.
    let work = f.runtime.root().join("build");
    let left: Vec<_> = std::fs::read_dir(&work).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    no_mounts_left(&f);
}

/// A tmpfs mount takes no more than its size, and is in no layer.
#[test]
fn a_tmpfs_mount_honours_its_size() {
    let Some(f) = fixture() else { return };
    let out = output(
        &f,
        "RUN --mount=type=tmpfs,target=/t,size=1m sh -c \
         'dd if=/dev/zero of=/t/a bs=1024 count=512 2>/dev/null && echo fits; \
          dd if=/dev/zero of=/t/b bs=1024 count=2048 2>/dev/null || echo full'\n\
         RUN test ! -e /t && echo clean\n",
        |_| {},
    );
    assert_eq!(out, ["fits", "full", "clean"]);
    no_mounts_left(&f);
}

#[test]
fn ssh_insecure_and_unknown_keys_are_refused_by_name() {
    let Some(f) = fixture() else { return };
    for (body, want) in [
        ("RUN --mount=type=ssh true\n", "type=ssh is not supported"),
        (
            "RUN --mount=type=cache,target=/c,colour=red true\n",
            "unknown key \"colour\"",
        ),
    ] {
        let (r, _) = build(&f, body, |_| {});
        let e = r.expect_err(body);
        image_testsupport::chain::assert_said_once(&e);
        assert!(chain(&e).contains(want), "{}", chain(&e));
    }
    // A variable makes the check wait for the expansion: same error.
    let (r, _) = build(&f, "ARG T=ssh\nRUN --mount=type=$T true\n", |_| {});
    let e = r.expect_err("ssh");
    image_testsupport::chain::assert_said_once(&e);
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(chain(&e).contains("type=ssh"), "{}", chain(&e));

    let insecure = "RUN --security=insecure true\n";
    let e = run_error(&f, insecure, |_| {});
    assert!(matches!(e, RunError::InsecureNotAllowed), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    let out = output(
        &f,
        "RUN --security=sandbox --network=none echo ok\n",
        |_| {},
    );
    assert_eq!(out, ["ok"]);
}

/// `sharing=private` finds the directory busy (the test holds its lock):
/// the RUN gets a new empty directory, thrown away; once free, the kept
/// one. A new cache directory is seeded from `from`/`source` and given
/// its mode and owner.
#[test]
fn private_cache_mounts_get_a_fresh_directory_when_busy_and_seeds_fill_new_ones() {
    let Some(f) = fixture() else { return };
    let body =
        "RUN --mount=type=cache,target=/p,sharing=private sh -c 'ls /p; echo {V} > /p/{V}'\n";
    assert!(output(&f, &body.replace("{V}", "kept"), |_| {}).is_empty());
    let root = cache_dir_root(f.runtime.root());
    let name = CacheMountId::new("/p").unwrap().escaped();
    let mut holder = hold_lock(&root.join(format!("{name}.lock")));
    assert!(output(&f, &body.replace("{V}", "busy"), |_| {}).is_empty());
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    assert_eq!(output(&f, &body.replace("{V}", "free"), |_| {}), ["kept"]);
    let mut kept: Vec<String> = std::fs::read_dir(root.join(&name))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept, ["free", "kept"]);

    let out = output(
        &f,
        &format!(
            "RUN mkdir -p /seed/sub && echo seeded > /seed/sub/file\n\
             FROM {BASE}\n\
             RUN --mount=type=cache,target=/s,from=0,source=/seed,mode=0750,uid=7,gid=8 \
             sh -c 'cat /s/sub/file; ls -ldn /s'\n"
        ),
        |_| {},
    );
    assert_eq!(out[0], "seeded");
    let fields: Vec<&str> = out[1].split_whitespace().collect();
    assert_eq!(
        (fields[0], fields[2], fields[3]),
        ("drwxr-x---", "7", "8"),
        "{out:?}"
    );
    no_mounts_left(&f);
}

/// `rw` on a bind of a stage's root: the writes are seen by the RUN and
/// gone after it, from the stage and from the layer.
#[test]
fn a_rw_bind_of_a_stage_discards_its_writes() {
    let Some(f) = fixture() else { return };
    let out = output(
        &f,
        &format!(
            "RUN mkdir /d && echo original > /d/file\n\
             FROM {BASE}\n\
             RUN --mount=from=0,source=/d,target=/m,rw sh -c 'echo changed > /m/file; touch /m/new; cat /m/file'\n\
             RUN --mount=from=0,source=/d,target=/m sh -c 'cat /m/file; test ! -e /m/new && echo no-new'\n\
             RUN test ! -e /m && echo clean\n"
        ),
        |_| {},
    );
    assert_eq!(out, ["changed", "original", "no-new", "clean"]);
    no_mounts_left(&f);
}

/// `--network=default` is the build's network, `none` and `host` are
/// themselves whatever the build's is (the namespace compared with ours).
#[test]
fn run_network_default_is_the_builds_network() {
    let Some(f) = fixture() else { return };
    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    let ours = ours.to_string_lossy();
    let body = "RUN --network=default readlink /proc/self/ns/net\n\
                RUN --network=none readlink /proc/self/ns/net\n\
                RUN readlink /proc/self/ns/net\n";
    let out = output(&f, body, |o| o.network = image_build::run::Network::Host);
    assert_eq!(out[0], ours, "{out:?}");
    assert_ne!(out[1], ours, "{out:?}");
    assert_eq!(out[2], ours, "{out:?}");
    let out = output(&f, "RUN --network=host readlink /proc/self/ns/net\n", |o| {
        o.no_cache = true
    });
    assert_eq!(out, [ours.as_ref()]);
}

/// `rw` on a bind whose source is neither a file nor a directory (a FIFO
/// or a device node in the context, or one a previous RUN made in a
/// stage): a clear error naming the source, before anything is read from
/// it (a FIFO without a writer would block the build forever, a
/// `/dev/zero` would be copied until the disk is full).
#[test]
fn a_rw_bind_of_a_fifo_or_device_is_refused_not_read() {
    let Some(f) = fixture() else { return };
    let fifo = f.context().join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    // Before the fix the build blocks reading the FIFO: a watchdog opens
    // it for writing after a generous wait, so the build goes on and the
    // test fails instead of hanging.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hung = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let (done, hung, fifo) = (done.clone(), hung.clone(), fifo.clone());
        std::thread::spawn(move || {
            for _ in 0..1800 {
                if done.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            hung.store(true, std::sync::atomic::Ordering::SeqCst);
            drop(std::fs::OpenOptions::new().write(true).open(&fifo));
        })
    };
    let (r, _) = build(&f, "RUN --mount=source=fifo,target=/p,rw true\n", |_| {});
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    watchdog.join().unwrap();
    assert!(
        !hung.load(std::sync::atomic::Ordering::SeqCst),
        "the build blocked on the FIFO"
    );
    let e = chain(&r.expect_err("a rw bind of a FIFO is refused"));
    assert!(
        e.contains("\"fifo\" is neither a regular file nor a directory"),
        "{e}"
    );
    // A device node made by a stage's RUN (mknod as root in the
    // container), bound from that stage (a null device: before the fix
    // it was copied, empty, and the RUN went on).
    let e = chain(&run_error(
        &f,
        &format!(
            "RUN mknod /null c 1 3\n\
             FROM {BASE}\n\
             RUN --mount=from=0,source=/null,target=/n,rw true\n"
        ),
        |_| {},
    ));
    assert!(
        e.contains("\"null\" is neither a regular file nor a directory"),
        "{e}"
    );
    no_mounts_left(&f);
}

/// A build killed in the middle of a RUN (kill -9) leaves the RUN's
/// throwaway directories mounted: a secret's tmpfs, holding the secret,
/// under the runtime's state directory. The next RUN with a mount sweeps
/// them (unmounted, removed), and leaves alone those a live build holds.
#[test]
fn a_killed_runs_secret_tmpfs_is_swept_by_the_next_run() {
    use image_overlay::mount::{Mount, Mounter, SysMounter};
    let Some(f) = fixture() else { return };
    let secret = token();
    let work = f.runtime.root().join("build");
    std::fs::create_dir_all(&work).unwrap();
    // As a killed build leaves it: a tmpfs with the secret, nobody's lock.
    let dead = work.join("run-mount-killed");
    std::fs::create_dir(&dead).unwrap();
    let tmpfs = Mount {
        fs_type: "tmpfs".into(),
        source: "tmpfs".into(),
        target: None,
        options: vec!["mode=700".into()],
    };
    SysMounter.mount(&[tmpfs], &dead).unwrap();
    std::fs::write(dead.join("secret"), &secret).unwrap();
    // One a live build holds, locked as it locks it.
    let live = work.join("run-mount-live");
    std::fs::create_dir(&live).unwrap();
    let held = std::fs::File::open(&live).unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).unwrap();

    let out = output(&f, "RUN --mount=type=tmpfs,target=/t echo ran\n", |_| {});
    assert_eq!(out, ["ran"]);
    assert!(!dead.exists(), "the killed RUN's directory is left");
    assert!(live.is_dir(), "a live RUN's directory was taken");
    let found = files_holding(f.tmp.path(), &secret);
    assert!(found.is_empty(), "the secret is in {found:?}");
    drop(held);
    std::fs::remove_dir(&live).unwrap();
    no_mounts_left(&f);
}

/// A build killed while it made a cache directory (seeding it, say)
/// left its `.new-*` directory in the cache mount root, which nothing
/// removed. The next RUN that makes a cache directory sweeps those no
/// process holds and leaves one a live build holds; the directory it makes
/// leaves nothing half-made behind.
#[test]
fn a_killed_builds_half_made_cache_directory_is_swept_by_the_next_one_made() {
    let Some(f) = fixture() else { return };
    let root = cache_dir_root(f.runtime.root());
    let dead = root.join(".new-apt-4242-0");
    std::fs::create_dir_all(dead.join("archives")).unwrap();
    std::fs::write(dead.join("archives/pkg.deb"), vec![7u8; 100_000]).unwrap();
    // One a live build holds, locked as it locks it.
    let live = root.join(".new-live");
    std::fs::create_dir(&live).unwrap();
    let held = std::fs::File::open(&live).unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).unwrap();

    let out = output(
        &f,
        "RUN --mount=type=cache,target=/var/c,id=fresh-c echo ran\n",
        |_| {},
    );
    assert_eq!(out, ["ran"]);
    let mut left: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [".new-live", "fresh-c"]);
    drop(held);
    std::fs::remove_dir(&live).unwrap();
    no_mounts_left(&f);
}

/// A stale `.new-*` directory (cache mount root) and a stale RUN
/// throwaway directory (work) that cannot be removed (an empty tmpfs left
/// mounted inside each: `rmdir` is `EBUSY`) are skipped with a warning;
/// before, the sweep's error failed that RUN and every later RUN with a
/// cache mount, for good.
#[test]
fn a_stale_directory_the_sweep_cannot_remove_is_skipped_with_a_warning() {
    use image_overlay::mount::{Mount, Mounter, SysMounter};
    let Some(f) = fixture() else { return };
    let root = cache_dir_root(f.runtime.root());
    let work = f.runtime.root().join("build");
    let stuck = [root.join(".new-stuck-1-0"), work.join("run-mount-stuck")];
    for dir in &stuck {
        std::fs::create_dir_all(dir.join("m")).unwrap();
        let tmpfs = Mount {
            fs_type: "tmpfs".into(),
            source: "tmpfs".into(),
            target: None,
            options: vec!["ro".into()],
        };
        SysMounter.mount(&[tmpfs], &dir.join("m")).unwrap();
    }
    let (r, events) = build(
        &f,
        "RUN --mount=type=cache,target=/var/c,id=fresh-c echo ran\n",
        |_| {},
    );
    let unmount = || {
        for dir in &stuck {
            SysMounter.unmount(&dir.join("m"), false).unwrap();
            std::fs::remove_dir_all(dir).unwrap();
        }
    };
    let r = r.map_err(|e| chain(&e));
    if r.is_err() {
        unmount();
    }
    r.unwrap();
    assert_eq!(lines(&events), ["ran"]);
    let warnings: Vec<&String> = events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::Warning { message } => Some(message),
            _ => None,
        })
        .collect();
    for dir in &stuck {
        assert!(dir.is_dir(), "{}", dir.display());
        let name = dir.display().to_string();
        assert!(
            warnings.iter().any(|w| w.contains(&name)),
            "{name}: {warnings:?}"
        );
    }
    assert!(root.join("fresh-c").is_dir());
    unmount();
    no_mounts_left(&f);
}

/// A mount target through a symlink of the image (`/run -> /etc`, a
/// relative `../etc`): the runtime makes its mount point where the link
/// leads, inside the root, and that stub is removed from the layer as any
/// other (before the fix, `/etc/secrets/x` and `/etc/tt` stayed in it).
#[test]
fn mount_points_made_through_an_image_symlink_are_not_left_in_the_layer() {
    let Some(f) = fixture() else { return };
    let out = output(
        &f,
        "RUN rm -rf /run && ln -s /etc /run && mkdir /a && ln -s ../etc /a/l\n\
         RUN --mount=type=secret,id=x --mount=type=tmpfs,target=/run/tt \
             --mount=type=tmpfs,target=/a/l/deep/er sh -c 'cat /run/secrets/x; echo'\n\
         RUN test ! -e /etc/secrets && test ! -e /etc/tt && test ! -e /etc/deep \
             && test -L /run && test -L /a/l && echo clean\n",
        |o| {
            o.secrets = BTreeMap::from([("x".to_owned(), Secret::new(b"v".to_vec()))]);
        },
    );
    assert_eq!(out, ["v", "clean"]);
    no_mounts_left(&f);
}

/// Ctrl-C while a RUN waits for a `sharing=locked` cache mount another
/// build holds: the wait ends, cancelled (before the fix the blocking
/// flock ignored the interrupt until the other build let go), and no
/// lock, mount or directory of the RUN is left.
#[test]
fn a_wait_for_a_locked_cache_mount_honours_the_interrupt() {
    let Some(f) = fixture() else { return };
    let root = cache_dir_root(f.runtime.root());
    std::fs::create_dir_all(&root).unwrap();
    let lock = root.join(format!(
        "{}.lock",
        CacheMountId::new("c").unwrap().escaped()
    ));
    let mut holder = hold_lock(&lock);
    let interrupt = image_core::Interrupt::new();
    let build_done = std::sync::atomic::AtomicBool::new(false);
    let hung = std::sync::atomic::AtomicBool::new(false);
    let (r, _) = std::thread::scope(|s| {
        let build = s.spawn(|| {
            let r = build(
                &f,
                "RUN --mount=type=cache,id=c,target=/c,sharing=locked true\n",
                |o| {
                    o.tracker =
                        Some(image_core::Tracker::default().with_interrupt(interrupt.clone()))
                },
            );
            build_done.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        });
        // The build has opened the lock file (a descriptor of this
        // process names it): it is waiting, or about to. Ctrl-C.
        let opened = || {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .any(|e| std::fs::read_link(e.unwrap().path()).is_ok_and(|l| l == lock))
        };
        let mut waited = 0;
        while !opened() && !build_done.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(20));
            waited += 1;
            assert!(waited < 15_000, "the build never opened the lock");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        interrupt.set();
        // A generous wait, then the holder lets go so a hung build ends.
        for _ in 0..1200 {
            if build_done.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if !build_done.load(std::sync::atomic::Ordering::SeqCst) {
            hung.store(true, std::sync::atomic::Ordering::SeqCst);
            drop(holder.stdin.take());
        }
        build.join().unwrap()
    });
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    assert!(
        !hung.load(std::sync::atomic::Ordering::SeqCst),
        "the interrupt did not end the wait for the lock"
    );
    let e = r.expect_err("the build is cancelled");
    image_testsupport::chain::assert_said_once(&e);
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{}", chain(&e));
    assert!(
        chain(&e).contains("interrupted waiting for the cache mount c"),
        "{}",
        chain(&e)
    );
    // The lock is free again, and nothing of the RUN is left.
    let fd = std::fs::File::open(&lock).unwrap();
    rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    drop(fd);
    no_mounts_left(&f);
}

/// `RUN --security=insecure`, allowed by the caller, runs privileged:
/// every capability of the kernel is effective and a tmpfs can be
/// mounted (CAP_SYS_ADMIN, no seccomp); the same RUN under the sandbox
/// fails, and without the caller's leave it is refused by name before
/// anything runs.
#[test]
fn an_allowed_insecure_run_is_privileged_and_the_sandbox_is_not() {
    let Some(f) = fixture() else { return };
    // Every capability the builder itself holds.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let all = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim()
        .to_owned();
    let body = |security: &str| {
        format!(
            "RUN --security={security} sh -c 'grep CapEff /proc/self/status; \\
             mkdir -p /m && mount -t tmpfs none /m && echo mounted && umount /m'\n"
        )
    };
    let out = output(&f, &body("insecure"), |o| o.allow_insecure = true);
    assert_eq!(out, [format!("CapEff:\t{all}"), "mounted".to_owned()]);

    let e = run_error(&f, &body("sandbox"), |o| o.allow_insecure = true);
    assert!(matches!(e, RunError::Failed { .. }), "{e:?}");
    let e = run_error(&f, &body("insecure"), |_| {});
    assert!(matches!(e, RunError::InsecureNotAllowed), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    assert!(e.to_string().contains("security.insecure"), "{e}");
}

/// A bind of the context is given to the container as the file it was
/// resolved to, not as a path resolved again when the runtime mounts it:
/// after `prepare`, the source's directory is swapped for a symlink to a
/// directory outside the context (the race a build's neighbour could
/// win), and the bind still reaches the original directory. A source
/// that is itself a link out of the context resolves inside the context
/// (here: to nothing), never to the link's target outside.
#[test]
fn a_context_bind_mounts_what_was_resolved_not_a_name_swapped_since() {
    use image_build::context::Context;
    use image_build::mounts::{MountSpec, Setup, SetupError};
    let tmp = tempfile::tempdir().unwrap();
    let (ctx, outside) = (tmp.path().join("ctx"), tmp.path().join("outside"));
    std::fs::create_dir_all(ctx.join("dir")).unwrap();
    std::fs::write(ctx.join("dir/inside"), "resolved\n").unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), "host file\n").unwrap();
    std::os::unix::fs::symlink(&outside, ctx.join("out")).unwrap();
    let context = Context::open(&ctx, None).unwrap();
    let (secrets, roots) = (BTreeMap::new(), BTreeMap::new());
    let setup = Setup {
        work: &tmp.path().join("work"),
        state: &tmp.path().join("state"),
        secrets: &secrets,
        context: &context,
        roots: &roots,
        interrupt: None,
        views: &[],
        copies: None,
    };
    let names = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    for rw in [false, true] {
        let flag = format!(
            "type=bind,source=dir,target=/d{}",
            if rw { ",rw" } else { "" }
        );
        let spec = MountSpec::parse(&flag, "/").unwrap();
        let prepared = setup.prepare(&[spec]).unwrap();
        // The swap: the directory moves away, a link to outside takes its name.
        std::fs::rename(ctx.join("dir"), ctx.join("moved")).unwrap();
        std::os::unix::fs::symlink(&outside, ctx.join("dir")).unwrap();
        let source = &prepared.binds[0].source;
        assert_eq!(names(source), ["inside"], "rw={rw}: {}", source.display());
        drop(prepared);
        std::fs::remove_file(ctx.join("dir")).unwrap();
        std::fs::rename(ctx.join("moved"), ctx.join("dir")).unwrap();
    }
    let spec = MountSpec::parse("type=bind,source=out,target=/o", "/").unwrap();
    match setup.prepare(&[spec]) {
        Err(SetupError::Source { path, reason }) => {
            assert_eq!((path.as_str(), reason), ("out", "does not exist"));
        }
        Err(e) => panic!("{e:?}"),
        Ok(p) => {
            let source = &p.binds[0].source;
            panic!("bound {} ({:?})", source.display(), names(source));
        }
    }
}
