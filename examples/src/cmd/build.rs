//! `imagectl build`: a Dockerfile into an image of the store, with
//! BuildKit-like progress on standard error and the image ID on standard
//! output.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use image_build::build::{
    BuildError, BuildEvent, BuildOptions, BuildResult, Builder, OutputStream,
};
use image_build::run::{Network, RunError};
use image_store::archive::{save_docker, save_oci, SaveImage, SaveOptions};

use super::archive::write_file;
use super::cache;
use super::registry::ReachArgs;
use super::run::{PlaceArgs, RuntimeArg};
use super::store::StoreArgs;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressArg {
    /// Every step, its output lines and its time, as BuildKit's plain progress.
    Plain,
    /// Every step and its time, without the output of RUN.
    Tty,
    /// Nothing but the image ID.
    Quiet,
}

/// The network of RUN steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetworkArg {
    /// No network (a loopback device only).
    None,
    /// The host's network.
    Host,
}

/// Arguments of `imagectl build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The build context directory; `-` reads the Dockerfile from standard
    /// input, with no context.
    pub context: PathBuf,
    /// The Dockerfile. Default: <CONTEXT>/Dockerfile.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// A name to give the image (repeatable).
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// A build argument NAME=VALUE (repeatable); NAME alone takes the
    /// value of the environment variable NAME.
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    pub build_args: Vec<String>,
    /// The stage to build (default: the last).
    #[arg(long)]
    pub target: Option<String>,
    /// A label KEY=VALUE for the image (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Run every step, using no cached layer.
    #[arg(long)]
    pub no_cache: bool,
    /// A stage whose steps run whatever the cache holds (repeatable).
    #[arg(long = "no-cache-filter", value_name = "STAGE")]
    pub no_cache_filter: Vec<String>,
    /// Write the image ID to this file.
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Also write the image as an archive: type=oci|docker,dest=PATH.
    #[arg(long, value_name = "type=oci|docker,dest=PATH")]
    pub output: Option<String>,
    /// How to show progress.
    #[arg(long, value_enum, default_value = "plain")]
    pub progress: ProgressArg,
    /// The network of RUN steps without --network.
    #[arg(long, value_enum, default_value = "none")]
    pub network: NetworkArg,
    /// Print the parsed and expanded instructions as JSON (the form
    /// docs/dockerfile-json.md documents, as `imagectl dockerfile --expand`)
    /// instead of building.
    #[arg(long)]
    pub print: bool,
    /// Export the build cache: type=local,dest=DIR (an OCI layout) or
    /// type=registry,ref=REF, with mode=min (the final image's steps, the
    /// default) or mode=max (every step of every stage). Repeatable.
    #[arg(long = "cache-to", value_name = "type=local,dest=DIR[,mode=max]")]
    pub cache_to: Vec<String>,
    /// Import a build cache first: type=local,src=DIR or
    /// type=registry,ref=REF (repeatable; one that cannot be read is a
    /// warning).
    #[arg(long = "cache-from", value_name = "type=local,src=DIR")]
    pub cache_from: Vec<String>,
    /// An annotation KEY=VALUE of the image's manifest (repeatable).
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Fill the OCI annotations org.opencontainers.image.created,
    /// .base.name, .base.digest, and .source/.revision from the labels of
    /// those names, as BuildKit does.
    #[arg(long)]
    pub oci_annotations: bool,
    /// Attach a provenance record (SLSA provenance in an in-toto
    /// statement: base images by digest, build args, the Dockerfile's
    /// digest, the target) to the image as an OCI referrer; see `imagectl
    /// inspect --referrers`.
    #[arg(long)]
    pub provenance: bool,
    #[command(flatten)]
    pub reach: ReachArgs,
    #[command(flatten)]
    pub places: PlaceArgs,
}

/// `--output type=...,dest=...`.
#[derive(Debug, PartialEq, Eq)]
struct Output {
    docker: bool,
    dest: PathBuf,
}

fn parse_output(spec: &str) -> anyhow::Result<Output> {
    let mut kind = None;
    let mut dest = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("type", t)) => kind = Some(t.to_owned()),
            Some(("dest", d)) => dest = Some(PathBuf::from(d)),
            _ => bail!("--output {spec:?}: expected type=oci|docker,dest=PATH"),
        }
    }
    let docker = match kind.as_deref() {
        Some("oci") => false,
        Some("docker") => true,
        _ => bail!("--output {spec:?}: expected type=oci or type=docker"),
    };
    let dest = dest.with_context(|| format!("--output {spec:?}: expected dest=PATH"))?;
    Ok(Output { docker, dest })
}

/// `--label` or `--annotation` (`flag`) pairs: each `KEY=VALUE` with a key.
fn key_values(flag: &str, items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_owned(), v.to_owned());
            }
            _ => bail!("{flag} {item:?}: expected KEY=VALUE"),
        }
    }
    Ok(out)
}

/// Builds the Dockerfile.
pub fn run(store: &StoreArgs, a: BuildArgs) -> anyhow::Result<()> {
    if a.print {
        let file = match (&a.file, a.context.as_os_str() == "-") {
            (_, true) => PathBuf::from("-"),
            (Some(f), false) => f.clone(),
            (None, false) => a.context.join("Dockerfile"),
        };
        return super::dockerfile::print(&file, &a.build_args, a.target.as_deref(), true);
    }
    let output = a.output.as_deref().map(parse_output).transpose()?;
    let cache_to = (a.cache_to.iter())
        .map(|c| cache::parse(c, true))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cache_from = (a.cache_from.iter())
        .map(|c| cache::parse(c, false))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut options = BuildOptions::default();
    if a.context.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .lock()
            .take(image_build::dockerfile::MAX_BYTES as u64 + 1)
            .read_to_string(&mut text)
            .context("reading the Dockerfile from standard input")?;
        options.dockerfile_text = Some(text);
        options.dockerfile = PathBuf::from("Dockerfile");
    } else {
        options.context = Some(a.context.clone());
        options.dockerfile = a.file.clone().unwrap_or_default();
    }
    options.build_args = super::dockerfile::parse_build_args(&a.build_args)?;
    options.labels = key_values("--label", &a.labels)?;
    options.annotations = key_values("--annotation", &a.annotations)?;
    options.oci_annotations = a.oci_annotations;
    options.provenance = a.provenance;
    options.target = a.target.clone();
    options.tags = a.tags.clone();
    options.no_cache = a.no_cache;
    options.no_cache_filter = a.no_cache_filter.clone();
    options.network = match a.network {
        NetworkArg::None => Network::None,
        NetworkArg::Host => Network::Host,
    };
    let s = store.open()?;
    let runtime = a.places.runtime(store, RuntimeArg::Native)?;
    let mount_root = cache::mount_root(runtime.root());
    cache::import_all(&s, &cache_from, &a.reach, &mount_root);
    let builder = Builder::new(&s, &runtime);
    let mut display = Display::new(a.progress, std::io::stderr());
    let started = Instant::now();
    let result = match builder.build(&options, &mut |e: &BuildEvent| display.event(e)) {
        Ok(r) => r,
        Err(e) => {
            display.failed(&e);
            return Err(e.into());
        }
    };
    display.summary(&result, started.elapsed());
    for c in &cache_to {
        cache::export_to(&s, &result, c, &a.reach, &mount_root)?;
    }
    if let Some(path) = &a.iidfile {
        std::fs::write(path, result.image_id.to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(o) = output {
        let image = SaveImage::new(result.manifest.descriptor(), result.tags.clone());
        write_file(&o.dest, |out| {
            if o.docker {
                save_docker(&s, &[image], out, &SaveOptions::default())?;
            } else {
                save_oci(&s, &[image], out)?;
            }
            Ok(())
        })?;
    }
    println!("{}", result.image_id);
    Ok(())
}

/// The progress display: BuildKit's plain form.
///
/// ```text
/// #2 [2/3] RUN echo hi
/// #2 0.112 hi
/// #2 DONE 0.3s
/// ```
struct Display<W: Write> {
    mode: ProgressArg,
    out: W,
    started: BTreeMap<usize, Instant>,
}

impl<W: Write> Display<W> {
    fn new(mode: ProgressArg, out: W) -> Self {
        Display {
            mode,
            out,
            started: BTreeMap::new(),
        }
    }

    fn event(&mut self, e: &BuildEvent) {
        if self.mode == ProgressArg::Quiet {
            return;
        }
        // Progress is best effort: a closed stderr does not stop a build.
        let _ = self.write(e);
    }

    fn write(&mut self, e: &BuildEvent) -> std::io::Result<()> {
        match e {
            BuildEvent::StepStarted {
                step,
                stage,
                index,
                total,
                text,
            } => {
                self.started.insert(*step, Instant::now());
                let at = if stage == "stage-0" {
                    format!("{index}/{total}")
                } else {
                    format!("{stage} {index}/{total}")
                };
                writeln!(self.out, "#{step} [{at}] {text}")
            }
            BuildEvent::StepCached { step } => writeln!(self.out, "#{step} CACHED"),
            BuildEvent::Output { step, line, stream } => {
                if self.mode != ProgressArg::Plain {
                    return Ok(());
                }
                let t = self
                    .started
                    .get(step)
                    .map_or(Duration::ZERO, Instant::elapsed);
                let mark = if *stream == OutputStream::Stderr {
                    " !"
                } else {
                    ""
                };
                writeln!(self.out, "#{step} {:.3}{mark} {line}", t.as_secs_f64())
            }
            BuildEvent::StepDone {
                step,
                elapsed,
                layer_size,
            } => {
                if let Some(size) = layer_size {
                    writeln!(self.out, "#{step} layer {size} bytes")?;
                }
                writeln!(self.out, "#{step} DONE {:.1}s\n", elapsed.as_secs_f64())
            }
            BuildEvent::StageSkipped { stage } => writeln!(self.out, "skipping stage {stage}"),
            BuildEvent::Warning { message } => writeln!(self.out, "WARNING: {message}"),
            _ => Ok(()),
        }
    }

    /// The last lines of a failed RUN's output, which the error itself
    /// does not repeat.
    fn failed(&mut self, e: &BuildError) {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = source {
            let run = err
                .downcast_ref::<RunError>()
                .or_else(|| err.downcast_ref::<Box<RunError>>().map(|b| &**b));
            if let Some(RunError::Failed { last_lines, .. }) = run {
                for line in last_lines {
                    let _ = writeln!(self.out, "> {line}");
                }
                return;
            }
            source = err.source();
        }
    }

    fn summary(&mut self, r: &BuildResult, elapsed: Duration) {
        if self.mode == ProgressArg::Quiet {
            return;
        }
        let _ = writeln!(
            self.out,
            "Built {} in {:.1}s: {} steps, {} cached",
            r.image_id,
            elapsed.as_secs_f64(),
            r.steps,
            r.cached
        );
        for t in &r.tags {
            let _ = writeln!(self.out, "Tagged {t}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_specs() {
        assert_eq!(
            parse_output("type=oci,dest=/tmp/x.tar").unwrap(),
            Output {
                docker: false,
                dest: "/tmp/x.tar".into()
            }
        );
        assert!(parse_output("dest=/x,type=docker").unwrap().docker);
        for bad in ["type=tar,dest=/x", "type=oci", "type=oci,dest=/x,push=true"] {
            assert!(parse_output(bad).is_err(), "{bad}");
        }
    }
}
