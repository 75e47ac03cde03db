//! Times the plan (what a cached COPY step costs: one walk that hashes
//! everything it reads) and the copy of `COPY <source> /dest/` from a
//! context directory into a fresh destination directory.
//!
//! `cargo run --release -p image-build --example copy_plan -- CONTEXT SOURCE [RUNS]`

use std::path::Path;
use std::time::Instant;

use image_build::context::Context;
use image_build::copy::{apply, plan, CopySource, CopySpec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, ctx, source, rest @ ..] = args.as_slice() else {
        return Err("usage: copy_plan CONTEXT SOURCE [RUNS]".into());
    };
    let runs: usize = rest.first().map_or(Ok(5), |r| r.parse())?;
    let spec = CopySpec::new(vec![source.clone()], "/dest/", "/");
    for run in 0..runs {
        let t = Instant::now();
        let context = Context::open(Path::new(ctx), None)?;
        let src = CopySource::Context(&context);
        let p = plan(&src, &spec)?;
        let planned = t.elapsed();
        let dest = tempfile::tempdir()?;
        let t = Instant::now();
        let report = apply(&p, &src, &spec, dest.path())?;
        let copied = t.elapsed();
        println!(
            "run {run}: {} entries, plan {:.2} ms, copy {:.2} ms ({} files, {} bytes), {}",
            p.entries(),
            planned.as_secs_f64() * 1e3,
            copied.as_secs_f64() * 1e3,
            report.files,
            report.bytes,
            p.created_by_source
        );
    }
    Ok(())
}
