//! Referrers lists: writers adding to one subject's list at once, from
//! threads of one process and from several processes, each keep their
//! entry (the list's tag moves by compare-and-set under the index lock).

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use image_core::{Descriptor, DescriptorExt, Digest, Document};
use image_store::referrers;
use image_store::{ContentStore, Ingester, MemoryStore, OciDir, TagStore};

use crate::common::{child_guard, kill_group, oci_dir, spawn_self, write_image};

const CHILD_ENV: &str = "IMAGE_STORE_REFERRERS_CHILD";
const PROCESSES: usize = 4;
const THREADS: usize = 4;
const EACH: usize = 4;

/// Writes a signature-like referrer of `subject` unique to `tag` and
/// returns its list entry. The empty config (`{}`) must be in the store
/// already: concurrent ingests of one blob are not what this tests.
fn write_referrer<S: Ingester + ?Sized>(store: &S, subject: &Descriptor, tag: &str) -> Descriptor {
    let empty = Digest::sha256(b"{}");
    let sig = store.write_blob(tag.as_bytes()).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/example.sig",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
        "layers": [{"mediaType": "application/example.sig", "digest": sig.to_string(), "size": tag.len()}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": subject.digest().to_string(), "size": subject.size()},
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    store.write_blob(&bytes).unwrap();
    referrers::entry(&Document::from_bytes(bytes, None).unwrap())
}

/// Each of `THREADS` threads adds `EACH` referrers of `subject` to the
/// store at `dir` (its own handle), all starting together; returns the
/// digests added.
fn add_from_threads(dir: &Path, subject: &Descriptor, who: &str) -> Vec<Digest> {
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (dir, subject, barrier) = (dir.to_owned(), subject.clone(), barrier.clone());
            let who = format!("{who}-t{t}");
            std::thread::spawn(move || {
                let store = OciDir::open(&dir).unwrap();
                // Every thread reaches the barrier, whatever happened.
                let entries = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    (0..EACH)
                        .map(|i| write_referrer(&store, &subject, &format!("{who}-{i}")))
                        .collect::<Vec<Descriptor>>()
                }));
                barrier.wait();
                let entries = entries.expect("writing the referrers");
                for e in &entries {
                    referrers::add(&store, &subject.checked_digest().unwrap(), e).unwrap();
                }
                entries
                    .iter()
                    .map(|e| e.checked_digest().unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

/// An adding process: runs only when started by
/// `concurrent_adders_in_threads_and_processes_all_keep_their_entries`.
#[test]
fn referrers_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    child_guard(120);
    let dir = Path::new(&dir);
    let subject: Descriptor = serde_json::from_str(&std::env::var("SUBJECT").unwrap()).unwrap();
    let who = std::env::var("ADDER").unwrap();
    // Start together with the others: the parent creates `go` once every
    // process is started.
    while !dir.join("go").exists() {
        std::thread::sleep(Duration::from_millis(2));
    }
    for d in add_from_threads(dir, &subject, &who) {
        println!("ADDED {d}");
    }
}

#[test]
fn concurrent_adders_in_threads_and_processes_all_keep_their_entries() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let (tmp, store) = oci_dir();
    let dir = tmp.path().join("layout");
    let subject = write_image(&store, &[b"subject layer".to_vec()], "subject").manifest;
    store.set_tag("subject:1", &subject).unwrap();
    store.write_blob(b"{}").unwrap();
    let mut children: Vec<_> = (0..PROCESSES)
        .map(|p| {
            spawn_self(
                "referrers::referrers_child",
                &[
                    (CHILD_ENV, dir.display().to_string()),
                    ("SUBJECT", serde_json::to_string(&subject).unwrap()),
                    ("ADDER", format!("p{p}")),
                ],
            )
        })
        .collect();
    std::fs::write(dir.join("go"), b"").unwrap();
    let mut expected: HashSet<Digest> = add_from_threads(&dir, &subject, "parent")
        .into_iter()
        .collect();
    for (child, lines) in &mut children {
        let status = child.wait().unwrap();
        assert!(status.success(), "an adding process failed: {status}");
        expected.extend(
            lines
                .iter()
                .filter_map(|l| l.strip_prefix("ADDED ").map(|d| d.parse().unwrap())),
        );
    }
    children.iter_mut().for_each(|(c, _)| kill_group(c));
    assert_eq!(expected.len(), (PROCESSES + 1) * THREADS * EACH);
    let listed: Vec<Digest> = referrers::referrers(&store, &subject.checked_digest().unwrap())
        .unwrap()
        .iter()
        .map(|d| d.checked_digest().unwrap())
        .collect();
    let unique: HashSet<Digest> = listed.iter().cloned().collect();
    assert_eq!(unique.len(), listed.len(), "an entry listed twice");
    let lost: Vec<&Digest> = expected.difference(&unique).collect();
    assert!(
        lost.is_empty(),
        "{} of {} entries lost, among them {:?}",
        lost.len(),
        expected.len(),
        &lost[..lost.len().min(3)]
    );
    assert_eq!(unique, expected);
}

#[test]
fn a_tag_moves_only_from_what_the_writer_read() {
    let (_tmp, dir) = oci_dir();
    let memory = MemoryStore::new();
    for store in [&dir as &dyn Check, &memory] {
        store.check();
    }
}

/// The compare-and-set, the same on disk and in memory.
trait Check {
    fn check(&self);
}

impl<S: ContentStore + TagStore> Check for S {
    fn check(&self) {
        let a = write_image(self, &[b"a".to_vec()], "a").manifest;
        let b = write_image(self, &[b"b".to_vec()], "b").manifest;
        let (da, db) = (a.checked_digest().unwrap(), b.checked_digest().unwrap());
        // No tag yet: only "from nothing" sets it.
        assert!(!self.replace_tag("cas:1", Some(&da), &b).unwrap());
        assert!(self.replace_tag("cas:1", None, &a).unwrap());
        // From a stale value: refused, and the tag is unchanged.
        assert!(!self.replace_tag("cas:1", None, &b).unwrap());
        assert!(!self.replace_tag("cas:1", Some(&db), &b).unwrap());
        assert_eq!(self.resolve_tag("cas:1").unwrap().digest(), a.digest());
        assert!(self.replace_tag("cas:1", Some(&da), &b).unwrap());
        assert_eq!(self.resolve_tag("cas:1").unwrap().digest(), b.digest());
    }
}

/// A layout's untagged entries are read by subject once, and bounded: an
/// entry claiming more bytes than the whole budget is refused, typed,
/// before anything is read.
#[test]
fn untagged_referrers_are_found_by_subject_and_bounded() {
    use image_core::{Classify, ErrorKind};
    let (_tmp, store) = oci_dir();
    let subject = write_image(&store, &[b"subject layer".to_vec()], "subject").manifest;
    store.write_blob(b"{}").unwrap();
    let sig = write_referrer(&store, &subject, "sig");
    assert!(store.list_untagged(&sig).unwrap());
    assert!(!store.list_untagged(&sig).unwrap(), "listed once");
    let found = referrers::in_index(&store).unwrap();
    let subject_digest = subject.checked_digest().unwrap();
    assert_eq!(found[&subject_digest].len(), 1);
    assert_eq!(found[&subject_digest][0].digest(), sig.digest());
    assert_eq!(
        found[&subject_digest][0]
            .artifact_type()
            .as_ref()
            .map(|a| a.to_string()),
        Some("application/example.sig".to_owned())
    );

    let mut huge = sig.clone();
    huge.set_digest(Digest::sha256(b"not here").to_string().parse().unwrap());
    huge.set_size(referrers::MAX_INDEX_BYTES + 1);
    store
        .update_index(|m| {
            m.push(huge);
            Ok(true)
        })
        .unwrap();
    let e = referrers::in_index(&store).unwrap_err();
    assert!(
        matches!(e, referrers::ReferrersError::TooManyEntries { .. }),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::Unsafe);
}

/// What a layout named without a reference means, over generated
/// layouts: images tagged or not, referrers (oras's untagged entries, or
/// tagged) whose subject is a listed image, a platform manifest of a
/// listed index, a manifest the layout holds that nothing listed names,
/// another referrer or a digest it lacks, and entries listed twice. The
/// one image is found exactly when the entries that are not referrers of
/// something held and listed or reachable from the index (a tagged entry
/// always counts) name one digest; otherwise the count is reported,
/// typed.
#[test]
fn the_only_image_of_generated_layouts_leaves_out_referrers_of_what_it_holds() {
    use image_core::{Classify, ErrorKind};
    let mut next = image_testsupport::xorshift(14);
    let mut below = |n: usize| (next() % n as u64) as usize;
    for round in 0..60 {
        let (_tmp, store) = oci_dir();
        store.write_blob(b"{}").unwrap();
        let mut candidates: HashSet<String> = HashSet::new();
        let mut referrers_held = 0usize;
        // Manifests a referrer may name: (descriptor, held by the store
        // and listed in its index or reachable from it).
        let mut subjects: Vec<(Descriptor, bool)> = Vec::new();
        // Listed as another tool may have written it: no closure checked
        // (a referrer of a manifest the layout lacks).
        let list = |d: &Descriptor, tag: Option<String>| {
            let mut d = d.clone();
            if let Some(t) = tag {
                let name = "org.opencontainers.image.ref.name".to_owned();
                d.set_annotations(Some([(name, t)].into_iter().collect()));
            }
            store
                .update_index(|m| {
                    m.push(d);
                    Ok(true)
                })
                .unwrap();
        };
        for i in 0..below(3) {
            let layer = format!("round {round} image {i}").into_bytes();
            let m = write_image(&store, &[layer], "img").manifest;
            let tag = (below(2) == 0).then(|| format!("img{i}:1"));
            list(&m, tag);
            // Listed twice sometimes (two names, or tagged and untagged):
            // still one image.
            if below(4) == 0 {
                list(&m, Some(format!("again{i}:1")));
            }
            candidates.insert(m.digest().to_string());
            subjects.push((m, true));
        }
        // A manifest the layout holds without listing it: a platform
        // manifest of a listed index, or one nothing listed names (its
        // referrers are images of their own); and one it lacks.
        let child = write_image(&store, &[format!("child {round}").into_bytes()], "c");
        let in_listed_index = below(2) == 0;
        if in_listed_index {
            let index = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [child.manifest],
            }))
            .unwrap();
            let digest = store.write_blob(&index).unwrap();
            let d = image_core::manifest::descriptor(
                &image_core::MediaType::OciIndex,
                &digest,
                index.len() as u64,
            );
            list(&d, (below(2) == 0).then(|| "index:1".to_owned()));
            candidates.insert(d.digest().to_string());
        }
        subjects.push((child.manifest, in_listed_index));
        let mut absent = subjects[subjects.len() - 1].0.clone();
        absent.set_digest(Digest::sha256(b"absent").to_string().parse().unwrap());
        subjects.push((absent, false));
        for r in 0..below(5) {
            let (subject, held) = subjects[below(subjects.len())].clone();
            let entry = write_referrer(&store, &subject, &format!("round {round} sig {r}"));
            let tagged = below(5) == 0;
            list(&entry, tagged.then(|| format!("sig{r}:1")));
            if tagged || !held {
                candidates.insert(entry.digest().to_string());
            } else {
                referrers_held += 1;
            }
            subjects.push((entry, true));
        }
        let entries = store.index_entries().unwrap().len();
        match (referrers::only_image(&store), candidates.len()) {
            (Ok(d), 1) => assert!(
                candidates.contains(&d.digest().to_string()),
                "round {round}"
            ),
            (Err(e @ referrers::OnlyImageError::NoImage { .. }), 0) => {
                assert_eq!(e.kind(), ErrorKind::NotFound);
            }
            (Err(e @ referrers::OnlyImageError::Several { images }), n) if images == n => {
                assert_eq!(e.kind(), ErrorKind::InvalidInput);
            }
            (got, n) => panic!(
                "round {round}: {n} candidates, {referrers_held} referrers held, \
                 {entries} entries: {got:?}"
            ),
        }
    }
}
