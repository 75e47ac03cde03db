//! A small driver for the snapshot benchmarks (bench/overlay/snapshots.sh).
//!
//! ```text
//! snapshots gen LAYOUT LAYERS FILES MB   # generate image "bench" (gzip layers) in an OCI layout
//! snapshots overlay LAYOUT ROOT [PAR [REF]]  # unpack image REF (default "bench") into overlay
//!                                        # snapshots (PAR threads, 0 = cores;
//!                                        # SNAPSHOTS_SYNC=0: no syncfs before commits)
//! snapshots copy LAYOUT ROOT [PAR [REF]]  # unpack it into copy snapshots
//! snapshots flatten LAYOUT DIR           # flattened unpack onto DIR
//! snapshots mount ROOT [RUNS]            # time mount + unmount of the root of the top snapshot
//! ```

use std::error::Error;
use std::path::Path;
use std::time::{Duration, Instant};

use image_core::{Compression, MediaType};
use image_overlay::image_unpack::{unpack_image, ImageUnpackOptions};
use image_overlay::mount::{MountGuard, SysMounter};
use image_overlay::snapshot::{
    CopySnapshotter, Kind, OverlayOptions, OverlaySnapshotter, Snapshotter,
};
use image_overlay::{flatten_image, pack_overlay_upper, OverlayXattrs, PackOptions, UnpackOptions};
use image_store::{Ingester, OciDir, TagStore};

fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn generate(layout: &Path, layers: usize, files: usize, mb: usize) -> Result<(), Box<dyn Error>> {
    let store = OciDir::open_or_create(layout)?;
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let sizes = [0usize, 100, 1000, 4000, 16000, 64000];
    for l in 0..layers {
        let src = std::env::temp_dir().join(format!("snapshots-gen-{}-{l}", std::process::id()));
        let _ = std::fs::remove_dir_all(&src);
        for i in 0..files / layers {
            let d = src.join(format!("l{l}/d{:03}/s{}", i % 100, i % 7));
            std::fs::create_dir_all(&d)?;
            let size = sizes[(rng(&mut seed) % 6) as usize];
            let mut data = vec![0u8; size];
            for b in data.iter_mut().take(size / 2) {
                *b = rng(&mut seed) as u8;
            }
            std::fs::write(d.join(format!("f{i}")), data)?;
        }
        if l == 0 {
            std::fs::create_dir_all(src.join("etc"))?;
            for i in 0..layers {
                std::fs::write(src.join(format!("etc/conf{i}")), b"base")?;
            }
            let mut big = Vec::with_capacity(mb << 20);
            for i in 0..mb {
                if i % 2 == 0 {
                    big.extend(std::iter::repeat_n(0u8, 1 << 20));
                } else {
                    big.extend((0..1 << 20).map(|_| rng(&mut seed) as u8));
                }
            }
            std::fs::write(src.join("large.bin"), big)?;
        } else {
            // Overwrite one file of the base and delete another (a whiteout).
            std::fs::create_dir_all(src.join("etc"))?;
            std::fs::write(src.join(format!("etc/conf{l}")), format!("layer {l}"))?;
            if l + 1 < layers {
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    src.join(format!("etc/conf{}", l + 1)),
                    rustix::fs::FileType::CharacterDevice,
                    rustix::fs::Mode::empty(),
                    0,
                )?;
            }
        }
        let mut blob = Vec::new();
        let opts = PackOptions::new(Compression::Gzip).with_source_date_epoch(1_600_000_000);
        let r = pack_overlay_upper(&src, &mut blob, &opts, OverlayXattrs::Trusted)?;
        std::fs::remove_dir_all(&src)?;
        let d = store.write_blob(&blob)?;
        descs.push(serde_json::json!({"mediaType": MediaType::OciLayerGzip.as_str(), "digest": d.to_string(), "size": blob.len()}));
        diff_ids.push(r.diff_id.to_string());
    }
    let host = image_core::platform::Platform::host();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": host.architecture, "os": host.os,
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))?;
    let cd = store.write_blob(&config)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": descs,
    }))?;
    let md = store.write_blob(&manifest)?;
    let desc =
        image_core::manifest::descriptor(&MediaType::OciManifest, &md, manifest.len() as u64);
    store.set_tag("bench", &desc)?;
    println!("generated {layers} layers, {files} files, {mb} MiB large file");
    Ok(())
}

fn top_committed<S: Snapshotter>(sn: &S) -> Result<String, Box<dyn Error>> {
    // The committed snapshot that no other committed one has as parent.
    let all = sn.list()?;
    let committed: Vec<_> = all.iter().filter(|i| i.kind == Kind::Committed).collect();
    committed
        .iter()
        .find(|i| {
            !committed
                .iter()
                .any(|j| j.parent.as_deref() == Some(i.name.as_str()))
        })
        .map(|i| i.name.clone())
        .ok_or_else(|| "no committed snapshot".into())
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let start = Instant::now();
    match args.first().map(String::as_str) {
        Some("gen") if args.len() == 5 => {
            generate(
                Path::new(&args[1]),
                args[2].parse()?,
                args[3].parse()?,
                args[4].parse()?,
            )?;
        }
        Some("overlay") | Some("copy") if args.len() >= 3 => {
            let store = OciDir::open(&args[1])?;
            let reference = args.get(4).map_or("bench", String::as_str);
            let image = image_store::resolve_image(&store, reference, None)?;
            let par: usize = args.get(3).map_or(Ok(0), |p| p.parse())?;
            let opts = ImageUnpackOptions::default().with_parallelism(par);
            let r = if args[0] == "overlay" {
                // SNAPSHOTS_SYNC=0 skips the syncfs before each commit.
                let sync = std::env::var("SNAPSHOTS_SYNC").map_or(true, |v| v != "0");
                let sn = OverlaySnapshotter::open_with(
                    &args[2],
                    OverlayOptions::default().with_sync_on_commit(sync),
                )?;
                unpack_image(&store, &image, &sn, &opts)?
            } else {
                let sn = CopySnapshotter::open(&args[2])?;
                unpack_image(&store, &image, &sn, &opts)?
            };
            println!(
                "unpacked {} layers ({} reused), top {}",
                r.unpacked.len(),
                r.reused.len(),
                r.top().unwrap_or_default()
            );
        }
        Some("flatten") if args.len() == 3 => {
            let store = OciDir::open(&args[1])?;
            let image = image_store::resolve_image(&store, "bench", None)?;
            let r = flatten_image(
                &store,
                &image,
                Path::new(&args[2]),
                &UnpackOptions::default(),
            )?;
            println!("flattened {} layers", r.len());
        }
        Some("mount") if args.len() >= 2 => {
            let sn = OverlaySnapshotter::open(&args[1])?;
            let top = top_committed(&sn)?;
            let runs: usize = args.get(2).map_or(Ok(20), |r| r.parse())?;
            let target = std::env::temp_dir().join(format!("snapshots-mnt-{}", std::process::id()));
            std::fs::create_dir_all(&target)?;
            let mut mount_times = Vec::new();
            let mut total_times = Vec::new();
            let mut layers = 0;
            for i in 0..runs {
                let key = format!("bench-mount-{}-{i}", std::process::id());
                let t0 = Instant::now();
                let mounts = sn.prepare(&key, Some(&top))?;
                let t1 = Instant::now();
                let guard = MountGuard::mount(SysMounter, &mounts, &target)?;
                let t2 = Instant::now();
                guard.unmount()?;
                sn.remove(&key)?;
                layers = mounts[0].lowerdirs().len();
                mount_times.push(t2 - t1);
                total_times.push(t2 - t0);
            }
            std::fs::remove_dir(&target)?;
            mount_times.sort();
            total_times.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            println!(
                "mount of a {layers}-layer root: median {:.3} ms (min {:.3}, max {:.3}); prepare+mount median {:.3} ms; {runs} runs",
                ms(mount_times[runs / 2]),
                ms(mount_times[0]),
                ms(mount_times[runs - 1]),
                ms(total_times[runs / 2]),
            );
        }
        _ => {
            eprintln!("usage: see the doc comment of examples/snapshots.rs");
            std::process::exit(2);
        }
    }
    eprintln!("elapsed {:.3}s", start.elapsed().as_secs_f64());
    Ok(())
}
