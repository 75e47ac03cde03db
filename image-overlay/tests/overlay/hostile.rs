//! The hostile-layer suite: one test per class, each asserting the exact
//! outcome and that the sentinels beside the target and at an absolute path
//! are untouched.
//!
//! The suite runs three times: flattened (whiteouts applied, the tests at
//! this level), in overlay form (`overlay_form::*`: whiteouts converted to
//! overlayfs' 0/0 devices and `trusted.overlay.opaque`, as each layer of an
//! overlay snapshot is unpacked into a directory of its own), and flattened
//! with paths resolved by the component walk instead of `openat2`
//! (`component_walk::*`, what runs on kernels before 5.6). The cases are
//! written once, inside [`hostile_cases!`], against [`opts`] and
//! [`overlay_form`]; where the two forms legitimately differ, a case states
//! the exact outcome of each. Cases of several layers apply them to the same
//! directory in both forms: harsher than overlay, where a later layer never
//! sees an earlier one's symlinks.

use image_core::{Classify, Compression, Digest, ErrorKind};
use image_overlay::unpack::{
    unpack, DevicePolicy, Limits, ReservedXattrs, SkipReason, UnpackError, UnpackOptions,
    UnpackReport,
};
use image_overlay::{OverlayXattrs, WhiteoutMode};

use crate::common::{gzip, Raw, Sandbox, TarBuf};

fn run(sb: &Sandbox, layer: &[u8], opts: &UnpackOptions) -> Result<UnpackReport, UnpackError> {
    unpack(layer, &sb.target(), opts)
}

/// The options of the flattened run.
fn opts() -> UnpackOptions {
    UnpackOptions::default()
}

/// Whether this is the overlay-form run.
fn overlay_form() -> bool {
    false
}

fn unsafe_err(r: Result<UnpackReport, UnpackError>) -> UnpackError {
    let e = r.expect_err("hostile layer must fail");
    image_testsupport::chain::assert_said_once(&e);
    e
}

/// Defines every case at this level and again in `overlay_form`, where
/// [`opts`] unpacks in overlay form.
macro_rules! hostile_cases {
    ($($case:tt)*) => {
        $($case)*

        /// The same cases, each layer unpacked in overlay form.
        mod overlay_form {
            use super::*;

            /// The options of the overlay-form run: whiteouts become
            /// overlayfs markers in the `trusted.overlay.*` namespace.
            fn opts() -> UnpackOptions {
                UnpackOptions::default()
                    .with_whiteouts(WhiteoutMode::Overlay(OverlayXattrs::Trusted))
            }

            fn overlay_form() -> bool {
                true
            }

            $($case)*
        }

        /// The same cases, flattened, with paths resolved by the component
        /// walk that stands in for `openat2` on kernels without it.
        mod component_walk {
            use super::*;
            use image_overlay::PathResolution;

            fn opts() -> UnpackOptions {
                UnpackOptions::default().with_path_resolution(PathResolution::ComponentWalk)
            }

            fn overlay_form() -> bool {
                false
            }

            $($case)*
        }
    };
}

hostile_cases! {
#[test]
fn dotdot_path_is_rejected() {
    let sb = Sandbox::new();
    let layer = TarBuf::new().file("../sentinel/pwned", b"x").end();
    let e = unsafe_err(run(&sb, &layer, &opts()));
    assert!(matches!(e, UnpackError::PathTraversal { .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Unsafe);
    sb.assert_untouched();
}

#[test]
fn dotdot_in_the_middle_is_rejected() {
    let sb = Sandbox::new();
    let layer = TarBuf::new().file("a/b/../../../pwned", b"x").end();
    let e = unsafe_err(run(&sb, &layer, &opts()));
    assert!(matches!(e, UnpackError::PathTraversal { .. }), "{e:?}");
    sb.assert_untouched();
}

#[test]
fn absolute_path_is_contained() {
    let sb = Sandbox::new();
    let name = format!("{}/pwned", sb.abs_path());
    let layer = TarBuf::new().file(&name, b"x").end();
    run(&sb, &layer, &opts()).expect("contained");
    let inside = sb.target().join(name.trim_start_matches('/'));
    assert_eq!(std::fs::read(inside).expect("inside"), b"x");
    sb.assert_untouched();
}

#[test]
fn symlink_to_outside_then_write_through_it_same_layer() {
    let sb = Sandbox::new();
    let layer = TarBuf::new()
        .symlink("evil", &sb.abs_path())
        .file("evil/pwned", b"x")
        .end();
    let e = unsafe_err(run(&sb, &layer, &opts()));
    // The link resolves inside the target, where that path does not exist.
    assert!(matches!(e, UnpackError::ParentNotDirectory { .. }), "{e:?}");
    sb.assert_untouched();
}

#[test]
fn symlink_to_outside_then_write_through_it_across_layers() {
    let sb = Sandbox::new();
    let l1 = TarBuf::new().symlink("evil", &sb.abs_path()).end();
    run(&sb, &l1, &opts()).expect("layer 1");
    // The target happens to have the same path: the write lands there.
    std::fs::create_dir_all(sb.target().join(sb.abs_path().trim_start_matches('/')))
        .expect("mkdir");
    let l2 = TarBuf::new().file("evil/pwned", b"x").end();
    run(&sb, &l2, &opts()).expect("layer 2 contained");
    let landed = sb
        .target()
        .join(sb.abs_path().trim_start_matches('/'))
        .join("pwned");
    assert_eq!(std::fs::read(landed).expect("landed inside"), b"x");
    sb.assert_untouched();
}

#[test]
fn relative_symlink_climbing_out_is_clamped_at_the_root() {
    let sb = Sandbox::new();
    let layer = TarBuf::new()
        .symlink("up", "../../../../../../..")
        .file("up/sentinel/pwned", b"x")
        .end();
    // `up` resolves to the target itself, which has no `sentinel`: created inside.
    run(&sb, &layer, &opts()).expect("contained");
    assert_eq!(
        std::fs::read(sb.target().join("sentinel/pwned")).expect("inside"),
        b"x"
    );
    sb.assert_untouched();
}

#[test]
fn symlink_loop_as_parent() {
    let sb = Sandbox::new();
    let layer = TarBuf::new()
        .symlink("a", "b")
        .symlink("b", "a")
        .file("a/pwned", b"x")
        .end();
    let e = unsafe_err(run(&sb, &layer, &opts()));
    assert!(
        matches!(
            e,
            UnpackError::ParentNotDirectory { .. } | UnpackError::Fs { .. }
        ),
        "{e:?}"
    );
    sb.assert_untouched();
}

#[test]
fn file_replaces_symlink_without_writing_through() {
    let sb = Sandbox::new();
    let keep = format!("{}/keep", sb.abs_path());
    let l1 = TarBuf::new().symlink("f", &keep).end();
    run(&sb, &l1, &opts()).expect("layer 1");
    let l2 = TarBuf::new().file("f", b"replaced").end();
    run(&sb, &l2, &opts()).expect("layer 2");
    let md = std::fs::symlink_metadata(sb.target().join("f")).expect("f");
    assert!(md.is_file());
    assert_eq!(
        std::fs::read(sb.target().join("f")).expect("f"),
        b"replaced"
    );
    sb.assert_untouched();
}

#[test]
fn file_replaces_directory() {
    let sb = Sandbox::new();
    let l1 = TarBuf::new().dir("d/").file("d/inner", b"1").end();
    run(&sb, &l1, &opts()).expect("layer 1");
    let l2 = TarBuf::new().file("d", b"file now").end();
    run(&sb, &l2, &opts()).expect("layer 2");
    assert!(std::fs::symlink_metadata(sb.target().join("d"))
        .expect("d")
        .is_file());
    sb.assert_untouched();
}

#[test]
fn directory_replaces_symlink_to_outside() {
    let sb = Sandbox::new();
    let l1 = TarBuf::new().symlink("d", &sb.abs_path()).end();
    run(&sb, &l1, &opts()).expect("layer 1");
    let l2 = TarBuf::new().dir("d/").file("d/pwned", b"x").end();
    run(&sb, &l2, &opts()).expect("layer 2");
    assert!(std::fs::symlink_metadata(sb.target().join("d"))
        .expect("d")
        .is_dir());
    assert!(sb.target().join("d/pwned").is_file());
    sb.assert_untouched();
}

#[test]
fn hardlink_to_absolute_outside_path_resolves_inside() {
    let sb = Sandbox::new();
    let keep = format!("{}/keep", sb.abs_path());
    let layer = TarBuf::new().hardlink("h", &keep).end();
    let e = unsafe_err(run(&sb, &layer, &opts()));
    assert!(
        matches!(e, UnpackError::HardlinkTargetMissing { .. }),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::NotFound);
    sb.assert_untouched();
}

#[test]
fn hardlink_with_dotdot_target_is_rejected() {
    let sb = Sandbox::new();
    let layer = TarBuf::new().hardlink("h", "../sentinel/keep").end();
    let e = unsafe_err(run(&sb, &layer, &opts()));
    assert!(matches!(e, UnpackError::PathTraversal { .. }), "{e:?}");
    sb.assert_untouched();
}

#[test]
fn hardlink_through_symlink_to_outside_resolves_inside() {
    let sb = Sandbox::new();
    let layer = TarBuf::new()
        .symlink("evil", &sb.abs_path())
        .hardlink("h", "evil/keep")
        .end();
    let e = unsafe_err(run(&sb, &layer, &opts()));
    assert!(
        matches!(e, UnpackError::HardlinkTargetMissing { .. }),
        "{e:?}"
    );
    sb.assert_untouched();
}

#[test]
fn hardlink_to_symlink_links_the_symlink_itself() {
    let sb = Sandbox::new();
    let keep = format!("{}/keep", sb.abs_path());
    let layer = TarBuf::new().symlink("s", &keep).hardlink("h", "s").end();
    run(&sb, &layer, &opts()).expect("contained");
    let md = std::fs::symlink_metadata(sb.target().join("h")).expect("h");
    assert!(
        md.file_type().is_symlink(),
        "h must be the symlink, not its target"
    );
    // And a later file entry at `h` replaces the link rather than writing through.
    let l2 = TarBuf::new().file("h", b"x").end();
    run(&sb, &l2, &opts()).expect("layer 2");
    sb.assert_untouched();
}

#[test]
fn hardlink_to_directory_is_rejected() {
    let sb = Sandbox::new();
    let layer = TarBuf::new().dir("d/").hardlink("h", "d").end();
    let e = unsafe_err(run(&sb, &layer, &opts()));
    assert!(
        matches!(e, UnpackError::HardlinkToDirectory { .. }),
        "{e:?}"
    );
    sb.assert_untouched();
}

#[test]
fn rewriting_a_hardlink_does_not_change_its_target() {
    let sb = Sandbox::new();
    let layer = TarBuf::new()
        .file("a", b"original")
        .hardlink("b", "a")
        .file("b", b"changed")
        .end();
    run(&sb, &layer, &opts()).expect("ok");
    assert_eq!(
        std::fs::read(sb.target().join("a")).expect("a"),
        b"original"
    );
    assert_eq!(std::fs::read(sb.target().join("b")).expect("b"), b"changed");
    sb.assert_untouched();
}

#[test]
fn whiteout_with_dotdot_is_rejected() {
    let sb = Sandbox::new();
    let layer = TarBuf::new().file("../.wh.sentinel", b"").end();
    let e = unsafe_err(run(&sb, &layer, &opts()));
    assert!(matches!(e, UnpackError::PathTraversal { .. }), "{e:?}");
    sb.assert_untouched();
}

#[test]
fn whiteout_through_symlink_to_outside_is_contained() {
    let sb = Sandbox::new();
    let layer = TarBuf::new()
        .symlink("evil", &sb.abs_path())
        .file("evil/.wh.keep", b"")
        .end();
    let r = run(&sb, &layer, &opts());
    if overlay_form() {
        // The marker would have to be made in `evil`, which is a symlink
        // (resolving inside the target, where the path does not exist).
        let e = unsafe_err(r);
        assert!(matches!(e, UnpackError::ParentNotDirectory { .. }), "{e:?}");
    } else {
        r.expect("contained (nothing to delete inside)");
    }
    sb.assert_untouched();
}

#[test]
fn opaque_whiteout_through_symlink_to_outside_is_contained() {
    let sb = Sandbox::new();
    let layer = TarBuf::new()
        .symlink("evil", &sb.abs_path())
        .file("evil/.wh..wh..opq", b"")
        .end();
    let e = unsafe_err(run(&sb, &layer, &opts()));
    assert!(matches!(e, UnpackError::ParentNotDirectory { .. }), "{e:?}");
    sb.assert_untouched();
}

#[test]
fn whiteout_named_wh_dot_is_rejected() {
    for name in [".wh.", "d/.wh..", "d/.wh..."] {
        let sb = Sandbox::new();
        let layer = TarBuf::new().dir("d/").file(name, b"").end();
        let e = unsafe_err(run(&sb, &layer, &opts()));
        assert!(
            matches!(e, UnpackError::InvalidWhiteout { .. }),
            "{name}: {e:?}"
        );
        assert!(sb.target().join("d").is_dir() || name == ".wh.");
        sb.assert_untouched();
    }
}

#[test]
fn whiteout_as_a_directory_component_is_rejected() {
    let sb = Sandbox::new();
    let layer = TarBuf::new().file("x/.wh.y/z", b"").end();
    let e = unsafe_err(run(&sb, &layer, &opts()));
    assert!(matches!(e, UnpackError::InvalidWhiteout { .. }), "{e:?}");
    sb.assert_untouched();
}

#[test]
fn device_node_rejected_by_policy() {
    let sb = Sandbox::new();
    let mut h = Raw::new("null", b'3');
    h.major = 1;
    h.minor = 3;
    let layer = TarBuf::new().raw(&h, b"").end();
    let mut opts = opts();
    opts.devices = DevicePolicy::Reject;
    let e = unsafe_err(run(&sb, &layer, &opts));
    assert!(matches!(e, UnpackError::DeviceRejected { .. }), "{e:?}");
    assert!(!sb.target().join("null").exists());
    sb.assert_untouched();
}

#[test]
fn device_node_when_unprivileged_is_skipped() {
    let sb = Sandbox::new();
    let mut h = Raw::new("sda", b'4');
    h.major = 8;
    h.minor = 0;
    let layer = TarBuf::new().raw(&h, b"").end();
    let mut opts = opts();
    // What CreateOrSkip does when mknod is refused, forced by policy.
    opts.devices = DevicePolicy::Skip;
    let r = run(&sb, &layer, &opts).expect("skipped");
    assert_eq!(r.skipped[0].reason, SkipReason::Device);
    assert!(std::fs::symlink_metadata(sb.target().join("sda")).is_err());
    sb.assert_untouched();
}

#[test]
fn entry_claiming_a_huge_size() {
    let sb = Sandbox::new();
    let h = Raw::new("big", b'0').size(1 << 40);
    let mut layer = TarBuf::new();
    layer.raw(&h, b"tiny");
    let layer = layer.end();
    let mut opts = opts();
    opts.limits = Limits {
        max_expanded_bytes: 1 << 30,
        ..Limits::default()
    };
    let e = unsafe_err(run(&sb, &layer, &opts));
    assert!(
        matches!(e, UnpackError::TooLarge { path: Some(_), .. }),
        "{e:?}"
    );
    assert!(!sb.target().join("big").exists());
    sb.assert_untouched();
}

#[test]
fn entry_claiming_more_than_the_stream_has() {
    let sb = Sandbox::new();
    let h = Raw::new("short", b'0').size(10 << 20);
    let mut v = h.block().to_vec();
    v.extend_from_slice(&[7u8; 4096]);
    let e = unsafe_err(run(&sb, &v, &opts()));
    assert!(matches!(e, UnpackError::Truncated { .. }), "{e:?}");
    sb.assert_untouched();
}

#[test]
fn decompression_bomb_hits_the_expanded_limit() {
    let sb = Sandbox::new();
    let zeros = vec![0u8; 64 << 20];
    let layer = gzip(&TarBuf::new().file("bomb", &zeros).end());
    assert!(layer.len() < 1 << 20, "a bomb is small: {}", layer.len());
    let mut opts = opts();
    opts.limits = Limits {
        max_expanded_bytes: 8 << 20,
        ..Limits::default()
    };
    let e = unsafe_err(run(&sb, &layer, &opts));
    assert!(matches!(e, UnpackError::TooLarge { .. }), "{e:?}");
    sb.assert_untouched();
}

#[test]
fn too_many_entries() {
    let sb = Sandbox::new();
    let mut t = TarBuf::new();
    for i in 0..50 {
        t.file(&format!("f{i}"), b"");
    }
    let layer = t.end();
    let mut opts = opts();
    opts.limits = Limits {
        max_entries: 10,
        ..Limits::default()
    };
    let e = unsafe_err(run(&sb, &layer, &opts));
    assert!(
        matches!(e, UnpackError::TooManyEntries { limit: 10 }),
        "{e:?}"
    );
    sb.assert_untouched();
}

#[test]
fn truncated_gzip_stream() {
    let sb = Sandbox::new();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let layer = gzip(&TarBuf::new().file("f", &data).end());
    let cut = &layer[..layer.len() / 2];
    let e = unsafe_err(run(&sb, cut, &opts()));
    assert!(matches!(e, UnpackError::Truncated { .. }), "{e:?}");
    sb.assert_untouched();
}

#[test]
fn corrupt_gzip_crc_after_the_end_marker_is_detected() {
    let sb = Sandbox::new();
    let mut layer = gzip(&TarBuf::new().file("f", b"hello").end());
    let n = layer.len();
    layer[n - 8] ^= 0xff; // CRC32 of the gzip trailer
    let e = unsafe_err(run(&sb, &layer, &opts()));
    assert!(matches!(e, UnpackError::Decompress { .. }), "{e:?}");
    sb.assert_untouched();
}

#[test]
fn corrupt_header_checksum() {
    let sb = Sandbox::new();
    let mut h = Raw::new("f", b'0');
    h.bad_checksum = true;
    let layer = TarBuf::new().raw(&h, b"").end();
    let e = unsafe_err(run(&sb, &layer, &opts()));
    assert!(matches!(e, UnpackError::Corrupt { .. }), "{e:?}");
    sb.assert_untouched();
}

#[test]
fn header_cut_short_is_truncation() {
    // An end at an entry boundary without the end-of-archive marker is a
    // complete layer (see `ending`); an end inside the next header is not.
    let sb = Sandbox::new();
    let mut layer = TarBuf::new();
    layer.file("f", b"x");
    let mut cut = layer.0.clone();
    cut.extend_from_slice(&Raw::new("g", b'0').block()[..300]);
    let e = unsafe_err(run(&sb, &cut, &opts()));
    assert!(matches!(e, UnpackError::Truncated { .. }), "{e:?}");
    sb.assert_untouched();
}

#[test]
fn pax_path_overrides_the_header_name() {
    let sb = Sandbox::new();
    let layer = TarBuf::new()
        .pax(&[("path", b"from-pax")])
        .file("from-header", b"x")
        .end();
    run(&sb, &layer, &opts()).expect("ok");
    assert!(sb.target().join("from-pax").is_file());
    assert!(!sb.target().join("from-header").exists());
    sb.assert_untouched();
}

#[test]
fn pax_path_with_dotdot_is_rejected() {
    let sb = Sandbox::new();
    let layer = TarBuf::new()
        .pax(&[("path", b"../sentinel/pwned")])
        .file("benign", b"x")
        .end();
    let e = unsafe_err(run(&sb, &layer, &opts()));
    assert!(matches!(e, UnpackError::PathTraversal { .. }), "{e:?}");
    sb.assert_untouched();
}

#[test]
fn pax_size_wins_over_the_header_size() {
    let sb = Sandbox::new();
    // The header says 3 bytes, PAX says 600: 600 bytes are the file, and the
    // next header is found after them.
    let data = vec![b'p'; 600];
    let mut t = TarBuf::new();
    t.pax(&[("size", b"600")]);
    t.raw(&Raw::new("f", b'0').size(3), &data);
    t.file("next", b"n");
    let layer = t.end();
    run(&sb, &layer, &opts()).expect("ok");
    assert_eq!(std::fs::read(sb.target().join("f")).expect("f"), data);
    assert_eq!(std::fs::read(sb.target().join("next")).expect("next"), b"n");
    sb.assert_untouched();
}

#[test]
fn pax_path_with_nul_is_rejected() {
    let sb = Sandbox::new();
    let layer = TarBuf::new()
        .pax(&[("path", b"a\0b")])
        .file("benign", b"x")
        .end();
    let e = unsafe_err(run(&sb, &layer, &opts()));
    assert!(matches!(e, UnpackError::InvalidPath { .. }), "{e:?}");
    sb.assert_untouched();
}

#[test]
fn gnu_long_name_is_honoured_and_checked() {
    let sb = Sandbox::new();
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(120));
    let layer = TarBuf::new()
        .gnu_longname(long.as_bytes())
        .file("short", b"x")
        .end();
    run(&sb, &layer, &opts()).expect("ok");
    assert!(sb.target().join(&long).is_file());

    let evil = TarBuf::new()
        .gnu_longname(format!("{}/../../../sentinel/pwned", "d".repeat(120)).as_bytes())
        .file("short", b"x")
        .end();
    let e = unsafe_err(run(&sb, &evil, &opts()));
    assert!(matches!(e, UnpackError::PathTraversal { .. }), "{e:?}");
    sb.assert_untouched();
}

#[test]
fn overlay_xattrs_in_the_image_are_never_applied() {
    let sb = Sandbox::new();
    let layer = TarBuf::new()
        .pax(&[
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ("SCHILY.xattr.user.overlay.whiteout", b"y"),
        ])
        .dir("d/")
        .end();
    let r = run(&sb, &layer, &opts()).expect("skipped");
    let reserved = r
        .skipped
        .iter()
        .filter(|s| s.reason == SkipReason::ReservedXattr)
        .count();
    assert_eq!(reserved, 2);
    let xs = crate::common::user_xattrs(&sb.target().join("d"));
    assert!(xs.is_empty(), "{xs:?}");

    let mut opts = opts();
    opts.xattrs.reserved = ReservedXattrs::Reject;
    let sb2 = Sandbox::new();
    let e = unsafe_err(run(&sb2, &layer, &opts));
    assert!(matches!(e, UnpackError::ReservedXattr { .. }), "{e:?}");
    sb.assert_untouched();
    sb2.assert_untouched();
}

#[test]
fn forged_whiteout_device_in_overlay_mode() {
    let sb = Sandbox::new();
    let h = Raw::new("looks-deleted", b'3'); // 0/0
    let layer = TarBuf::new().raw(&h, b"").end();
    let opts = opts().with_whiteouts(WhiteoutMode::Overlay(Default::default()));
    let e = unsafe_err(run(&sb, &layer, &opts));
    assert!(matches!(e, UnpackError::ForgedWhiteout { .. }), "{e:?}");
    sb.assert_untouched();
}

#[test]
fn uid_beyond_32_bits() {
    let sb = Sandbox::new();
    let mut h = Raw::new("f", b'0');
    h.uid = 1 << 33;
    let layer = TarBuf::new().raw(&h, b"").end();
    let e = unsafe_err(run(&sb, &layer, &opts()));
    assert!(
        matches!(e, UnpackError::IdOutOfRange { id, .. } if id == 1 << 33),
        "{e:?}"
    );
    sb.assert_untouched();
}

#[test]
fn gid_minus_one_from_pax() {
    let sb = Sandbox::new();
    let layer = TarBuf::new()
        .pax(&[("gid", b"4294967295")])
        .file("f", b"")
        .end();
    let e = unsafe_err(run(&sb, &layer, &opts()));
    assert!(
        matches!(e, UnpackError::IdOutOfRange { id: 4294967295, .. }),
        "{e:?}"
    );
    sb.assert_untouched();
}

#[test]
fn device_number_beyond_32_bits() {
    let sb = Sandbox::new();
    let mut h = Raw::new("dev", b'3');
    h.major = 1 << 36;
    h.minor = 1;
    let layer = TarBuf::new().raw(&h, b"").end();
    let e = unsafe_err(run(&sb, &layer, &opts()));
    assert!(
        matches!(e, UnpackError::DeviceOutOfRange { value, .. } if value == 1 << 36),
        "{e:?}"
    );
    sb.assert_untouched();
}

#[test]
fn zero_padding_after_the_end_marker_is_read_and_hashed() {
    let sb = Sandbox::new();
    let mut layer = TarBuf::new().file("f", b"x").end();
    layer.extend_from_slice(&[0u8; 8192]);
    let r = run(&sb, &layer, &opts()).expect("ok");
    assert_eq!(r.trailing_bytes, 512 + 8192);
    assert_eq!(r.diff_id, Digest::sha256(&layer));
    sb.assert_untouched();
}

#[test]
fn data_after_the_end_marker_is_rejected_after_hashing() {
    let sb = Sandbox::new();
    let mut tar = TarBuf::new().file("f", b"x").end();
    // A whole hidden entry after the marker: GNU tar -i would extract it.
    tar.extend_from_slice(&TarBuf::new().file("hidden", b"y").end());
    let layer = gzip(&tar);
    let verified = opts()
        .with_digest(Digest::sha256(&layer))
        .with_diff_id(Digest::sha256(&tar));
    let e = unsafe_err(run(&sb, &layer, &verified));
    assert!(matches!(e, UnpackError::TrailingData { .. }), "{e:?}");
    assert!(!sb.target().join("hidden").exists());
    // With a wrong diff ID the digest check (which covers those bytes) fires first.
    let wrong = opts().with_diff_id(Digest::sha256(b"other"));
    let e = unsafe_err(run(&sb, &layer, &wrong));
    assert!(matches!(e, UnpackError::DiffIdMismatch { .. }), "{e:?}");
    sb.assert_untouched();
}

#[test]
fn digest_and_diff_id_mismatch() {
    let sb = Sandbox::new();
    let tar = TarBuf::new().file("f", b"x").end();
    let layer = gzip(&tar);
    let e = unsafe_err(run(
        &sb,
        &layer,
        &opts().with_digest(Digest::sha256(b"no")),
    ));
    assert!(matches!(e, UnpackError::DigestMismatch { .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::DigestMismatch);
    let e = unsafe_err(run(
        &sb,
        &layer,
        &opts().with_diff_id(Digest::sha256(b"no")),
    ));
    assert!(matches!(e, UnpackError::DiffIdMismatch { .. }), "{e:?}");
    sb.assert_untouched();
}

/// Past the first MiB both digests are computed on helper threads: a
/// large layer still verifies, and a mismatch of either still fails.
#[test]
fn large_layer_digests_are_verified_off_thread() {
    let sb = Sandbox::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..(3 << 20))
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let tar = TarBuf::new()
        .file("noise", &noise)
        .file("zeros", &vec![0u8; 2 << 20])
        .end();
    let layer = gzip(&tar);
    assert!(layer.len() > 2 << 20, "incompressible enough");
    for (digest, diff_id) in [
        (Digest::sha256(b"no"), Digest::sha256(&tar)),
        (Digest::sha256(&layer), Digest::sha256(&tar[..tar.len() - 1])),
    ] {
        let e = unsafe_err(run(
            &sb,
            &layer,
            &opts().with_digest(digest).with_diff_id(diff_id),
        ));
        assert!(
            matches!(
                e,
                UnpackError::DigestMismatch { .. } | UnpackError::DiffIdMismatch { .. }
            ),
            "{e:?}"
        );
        sb.assert_untouched();
        std::fs::remove_dir_all(sb.target()).expect("clean");
        std::fs::create_dir(sb.target()).expect("target");
    }
    let report = run(
        &sb,
        &layer,
        &opts()
            .with_digest(Digest::sha256(&layer))
            .with_diff_id(Digest::sha256(&tar)),
    )
    .expect("a verified layer unpacks");
    assert_eq!(report.digest, Digest::sha256(&layer));
    assert_eq!(report.diff_id, Digest::sha256(&tar));
    assert_eq!(report.compressed_size, layer.len() as u64);
    assert_eq!(std::fs::read(sb.target().join("noise")).expect("noise"), noise);
}

#[test]
fn declared_compression_contradicted_by_the_bytes() {
    let sb = Sandbox::new();
    let tar = TarBuf::new().file("f", b"x").end();
    let e = unsafe_err(run(
        &sb,
        &tar,
        &opts().with_compression(Compression::Gzip),
    ));
    assert!(
        matches!(
            e,
            UnpackError::CompressionMismatch {
                declared: Compression::Gzip,
                found: Compression::None
            }
        ),
        "{e:?}"
    );
    sb.assert_untouched();
}

#[test]
fn symlink_with_empty_target_is_rejected() {
    let sb = Sandbox::new();
    let layer = TarBuf::new().symlink("s", "").end();
    let e = unsafe_err(run(&sb, &layer, &opts()));
    assert!(matches!(e, UnpackError::InvalidPath { .. }), "{e:?}");
    sb.assert_untouched();
}

#[test]
fn file_entry_for_the_root_is_rejected() {
    let sb = Sandbox::new();
    let layer = TarBuf::new().file("./", b"x").end();
    let e = unsafe_err(run(&sb, &layer, &opts()));
    assert!(matches!(e, UnpackError::InvalidPath { .. }), "{e:?}");
    sb.assert_untouched();
}

#[test]
fn unknown_entry_type_is_unsupported() {
    let sb = Sandbox::new();
    let layer = TarBuf::new().raw(&Raw::new("vol", b'V'), b"").end();
    let e = unsafe_err(run(&sb, &layer, &opts()));
    assert!(
        matches!(
            e,
            UnpackError::UnsupportedEntry {
                entry_type: 'V',
                ..
            }
        ),
        "{e:?}"
    );
    sb.assert_untouched();
}

/// A replay of fuzz-style inputs on stable: byte flips, truncations and
/// splices of a layer full of links never panic and never escape.
#[test]
fn mutated_layers_never_escape() {
    let sb = Sandbox::new();
    let keep = format!("{}/keep", sb.abs_path());
    let base = TarBuf::new()
        .dir("d/")
        .symlink("d/out", &sb.abs_path())
        .symlink("up", "../../..")
        .file("d/out/pwned", b"x")
        .hardlink("h", &keep)
        .file("up/sentinel/keep", b"overwrite")
        .file(".wh.d", b"")
        .pax(&[("path", b"../sentinel/pwned")])
        .file("p", b"x")
        .end();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..400 {
        let mut data = if i % 2 == 0 {
            base.clone()
        } else {
            gzip(&base)
        };
        match next() % 3 {
            0 => {
                for _ in 0..(1 + next() % 8) {
                    let at = (next() as usize) % data.len();
                    data[at] ^= 1 << (next() % 8);
                }
            }
            1 => data.truncate((next() as usize) % data.len()),
            _ => {
                let from = (next() as usize) % data.len();
                let to = (next() as usize) % data.len();
                let len = ((next() as usize) % 600).min(data.len() - from.max(to));
                let chunk = data[from..from + len].to_vec();
                data[to..to + len].copy_from_slice(&chunk);
            }
        }
        let target = sb.target();
        let _ = std::fs::remove_dir_all(&target);
        std::fs::create_dir(&target).expect("mkdir");
        let _ = unpack(&data[..], &target, &opts());
        sb.assert_untouched();
    }
}
}

/// Where a seccomp filter refuses `openat2` (with `EPERM`, as older Docker
/// profiles answer a call they do not know, or `ENOSYS`, as newer ones
/// do), the unpack resolves by the component walk instead of failing every
/// entry: a layer unpacks, an entry made through a link inside the target
/// lands inside it, and a link out of the target is still kept inside it.
/// Each errno in a child process of its own, as the fallback, once taken,
/// is remembered for the process.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[test]
fn where_a_seccomp_filter_refuses_openat2_layers_unpack_contained() {
    const NAME: &str = "hostile::where_a_seccomp_filter_refuses_openat2_layers_unpack_contained";
    image_testsupport::process::with_openat2_refused(NAME, || {
        let sb = Sandbox::new();
        // etc/self -> /etc: the root's etc, so etc/self/motd is etc/motd.
        let plain = TarBuf::new()
            .dir("etc")
            .file("etc/hostname", b"box\n")
            .symlink("etc/self", "/etc")
            .file("etc/self/motd", b"hi\n")
            .end();
        run(&sb, &gzip(&plain), &opts()).expect("a plain layer unpacks");
        let hostname = std::fs::read(sb.target().join("etc/hostname")).expect("unpacked");
        assert_eq!(hostname, b"box\n");
        let motd = std::fs::read(sb.target().join("etc/motd")).expect("made through the link");
        assert_eq!(motd, b"hi\n");
        let l1 = TarBuf::new().symlink("evil", &sb.abs_path()).end();
        run(&sb, &l1, &opts()).expect("layer 1");
        let l2 = TarBuf::new().file("evil/pwned", b"x").end();
        let e = unsafe_err(run(&sb, &l2, &opts()));
        assert!(matches!(e, UnpackError::ParentNotDirectory { .. }), "{e:?}");
        sb.assert_untouched();
    });
}
