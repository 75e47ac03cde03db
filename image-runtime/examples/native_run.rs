//! Runs a bundle with the native backend (used by bench/runtime/start.sh).
//!
//! ```text
//! native_run bundle DIR [CMD...]   # busybox-static rootfs + config.json (root user)
//! native_run run DIR [N]           # start+wait N times in this process; prints ms each
//! ```
//! With N > 1 each line is the total, then its parts: create, start,
//! wait, delete (ms). `IMAGE_RUNTIME_START_TRACE=1` adds the child's own
//! timing of each start on stderr (see `image_runtime::native::TRACE_VAR`).
//! Needs root and /bin/busybox (busybox-static).

use std::path::Path;
use std::time::Instant;

use image_runtime::backend::{self, Backend};
use image_runtime::{NativeRuntime, RunOptions, Stdio};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("bundle") if args.len() >= 2 => {
            let dir = Path::new(&args[1]);
            let rootfs = dir.join("rootfs");
            for d in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
                std::fs::create_dir_all(rootfs.join(d))?;
            }
            std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))?;
            for a in ["sh", "true", "echo", "id", "ls", "cat"] {
                let l = rootfs.join("bin").join(a);
                if !l.exists() {
                    std::os::unix::fs::symlink("/bin/busybox", l)?;
                }
            }
            std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
            std::fs::write(rootfs.join("etc/group"), "root:x:0:\n")?;
            let mut opts = RunOptions::new();
            let cmd: Vec<String> = args[2..].to_vec();
            opts.cmd = Some(if cmd.is_empty() {
                vec!["true".into()]
            } else {
                cmd
            });
            opts.user = Some("0".into());
            let config = image_core::config::RunConfig {
                env: Some(vec!["PATH=/bin".into()]),
                ..Default::default()
            };
            image_runtime::bundle::export(dir, &config, &opts)?;
            Ok(())
        }
        Some("run") if args.len() >= 2 => {
            let dir = std::path::absolute(&args[1])?;
            let n: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1);
            let state = tempfile_dir()?;
            let be = NativeRuntime::new(&state)?;
            let mut code = 0;
            for i in 0..n {
                let id = format!("bench-{}-{i}", std::process::id());
                let t = Instant::now();
                let mut marks = Vec::with_capacity(4);
                let mut mark = || marks.push(t.elapsed().as_secs_f64() * 1000.0);
                be.create(&id, &dir)?;
                mark();
                let stdio = if n == 1 {
                    Stdio::inherit()
                } else {
                    Stdio::capture()
                };
                let mut p = be.start(&id, &dir, stdio)?;
                mark();
                let exit = backend::wait_timeout(&mut *p, std::time::Duration::from_secs(60))?
                    .ok_or("timed out")?;
                drop(p);
                mark();
                be.delete(&id, true)?;
                mark();
                code = exit.status.code();
                if n > 1 {
                    let parts: Vec<String> = marks
                        .iter()
                        .scan(0.0, |prev, m| {
                            let part = m - *prev;
                            *prev = *m;
                            Some(format!("{part:.3}"))
                        })
                        .collect();
                    println!("{:.3} {}", marks[3], parts.join(" "));
                }
            }
            let _ = std::fs::remove_dir_all(&state);
            std::process::exit(code);
        }
        _ => {
            eprintln!("usage: native_run bundle DIR [CMD...] | native_run run DIR [N]");
            std::process::exit(2);
        }
    }
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("native-run-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
