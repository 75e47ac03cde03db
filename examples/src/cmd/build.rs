//! `imagectl build`: a Dockerfile into an image of the store, with
//! BuildKit-like progress on standard error and the image ID on standard
//! output.

mod tty;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use image_build::build::{
    BuildError, BuildEvent, BuildOptions, BuildResult, Builder, OutputStream,
};
use image_build::mounts::Secret;
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
    /// `tty` when standard error is a terminal, `plain` otherwise.
    Auto,
    /// Every step, its output lines and its time, as BuildKit's plain progress.
    Plain,
    /// The running steps with their time and last output lines, redrawn in
    /// place; each step settles as one line when done (BuildKit's tty).
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
    /// Also write the image as an archive: type=oci|docker,dest=PATH
    /// (a multi-platform build's index needs type=oci: a Docker archive
    /// holds images only, and is refused before the build).
    #[arg(long, value_name = "type=oci|docker,dest=PATH")]
    pub output: Option<String>,
    /// How to show progress.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressArg,
    /// The network of RUN steps without --network.
    #[arg(long, value_enum, default_value = "none")]
    pub network: NetworkArg,
    /// Print the parsed and expanded instructions as JSON (the form
    /// docs/dockerfile-json.md documents, as `imagectl dockerfile --expand`)
    /// instead of building.
    #[arg(long)]
    pub print: bool,
    /// A secret for `RUN --mount=type=secret`, as buildx takes it:
    /// `id=ID,src=FILE` (or `source=`) or `id=ID,env=VAR`; `id=ID` alone
    /// reads the variable ID.
    #[arg(long = "secret", value_name = "id=ID,src=FILE|env=VAR")]
    pub secrets: Vec<String>,
    /// An entitlement: `security.insecure` lets `RUN --security=insecure`
    /// through (`network.host` is accepted: host networking needs none).
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    pub allow: Vec<String>,
    /// How many stages build at once, the platforms' stages together
    /// (default: the number of cores).
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub jobs: usize,
    /// Stamp every timestamp of the image with this time (seconds since
    /// the Unix epoch) and clamp the files' mtimes to it, for a
    /// reproducible image. Default: the build arg or environment variable
    /// SOURCE_DATE_EPOCH.
    #[arg(long, value_name = "SECONDS")]
    pub source_date_epoch: Option<i64>,
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
    /// An annotation (repeatable): KEY=VALUE of the image's manifest, or
    /// TYPE:KEY=VALUE as buildx spells it, TYPE one of manifest,
    /// manifest-descriptor, index, index-descriptor (the index ones for a
    /// multi-platform build), a manifest type narrowed to one platform as
    /// manifest[linux/arm64]:KEY=VALUE.
    #[arg(long = "annotation", value_name = "[TYPE:]KEY=VALUE")]
    pub annotations: Vec<String>,
    /// The platforms to build for, comma-separated or repeated
    /// (linux/amd64,linux/arm64): the Dockerfile is built once per
    /// platform (the platforms at once), and two or more give an OCI image
    /// index of their images.
    /// A stage for a platform not the host's may not RUN (no emulation).
    /// Default: the host's.
    #[arg(
        long = "platform",
        value_name = "OS/ARCH[/VARIANT],...",
        value_delimiter = ','
    )]
    pub platforms: Vec<String>,
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

/// `--secret` values: each read from its file (at most
/// [`image_build::mounts::MAX_SECRET`] bytes) or environment variable.
/// The value is never part of an error message.
fn secrets(items: &[String]) -> anyhow::Result<BTreeMap<String, Secret>> {
    let mut out = BTreeMap::new();
    for item in items {
        let (mut id, mut src, mut env, mut typ) = (None, None, None, None);
        for part in item.split(',') {
            match part.split_once('=') {
                Some(("id", v)) if !v.is_empty() => id = Some(v.to_owned()),
                Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
                Some(("env", v)) => env = Some(v.to_owned()),
                Some(("type", t @ ("file" | "env"))) => typ = Some(t),
                _ => bail!("--secret {item:?}: expected id=ID,src=FILE or id=ID,env=VAR"),
            }
        }
        let id = id.with_context(|| format!("--secret {item:?}: expected id=ID"))?;
        let bytes = match (src, env) {
            (Some(path), None) if typ != Some("env") => {
                let mut data = Vec::new();
                std::fs::File::open(&path)
                    .and_then(|f| {
                        f.take(image_build::mounts::MAX_SECRET as u64 + 1)
                            .read_to_end(&mut data)
                    })
                    .with_context(|| format!("--secret id={id}: reading {}", path.display()))?;
                if data.len() > image_build::mounts::MAX_SECRET {
                    bail!(
                        "--secret id={id}: {} is larger than 500 KiB",
                        path.display()
                    );
                }
                data
            }
            (None, env) if typ != Some("file") => {
                let var = env.unwrap_or_else(|| id.clone());
                std::env::var_os(&var)
                    .with_context(|| format!("--secret id={id}: the variable {var} is not set"))?
                    .into_encoded_bytes()
            }
            _ => bail!("--secret {item:?}: expected one of src=FILE or env=VAR"),
        };
        out.insert(id, Secret::new(bytes));
    }
    Ok(out)
}

/// Whether `--allow` grants `security.insecure` (others are refused).
fn allow_insecure(items: &[String]) -> anyhow::Result<bool> {
    let mut insecure = false;
    for item in items {
        match item.as_str() {
            "security.insecure" => insecure = true,
            "network.host" => {}
            other => bail!("--allow {other:?}: expected security.insecure or network.host"),
        }
    }
    Ok(insecure)
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
    options.platforms = (a.platforms.iter())
        .map(|p| {
            p.parse::<image_core::Platform>()
                .with_context(|| format!("--platform {p:?}: expected os/arch[/variant]"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    options.provenance = a.provenance;
    options.docker_archive = output.as_ref().is_some_and(|o| o.docker);
    options.target = a.target.clone();
    options.tags = a.tags.clone();
    options.no_cache = a.no_cache;
    options.no_cache_filter = a.no_cache_filter.clone();
    options.secrets = secrets(&a.secrets)?;
    options.allow_insecure = allow_insecure(&a.allow)?;
    // Ctrl-C stops the build between steps and a RUN's container at once.
    options.tracker =
        Some(image_core::Tracker::default().with_interrupt(super::progress::interrupt()));
    options.jobs = a.jobs;
    options.source_date_epoch = a.source_date_epoch;
    options.network = match a.network {
        NetworkArg::None => Network::None,
        NetworkArg::Host => Network::Host,
    };
    // A build is a batch of blobs followed by its tags: they are synced in
    // one pass before each `index.json` write (see
    // image_store::durability), not twice each as they are written.
    let s = store.open()?.deferring_sync();
    let state = a.places.state_dir(store)?;
    let runtime = cache::import_beside(
        &s,
        &cache_from,
        &a.reach,
        || a.places.runtime(store, RuntimeArg::Native),
        &state,
    )?;
    let mount_root = image_build::mounts::cache_dir_root(runtime.root());
    let builder = Builder::new(&s, &runtime);
    let mode = match a.progress {
        ProgressArg::Auto if std::io::stderr().is_terminal() => ProgressArg::Tty,
        ProgressArg::Auto => ProgressArg::Plain,
        mode => mode,
    };
    let started = Instant::now();
    let built = if mode == ProgressArg::Tty {
        let width = console::Term::stderr()
            .size_checked()
            .map_or(80, |(_, cols)| usize::from(cols));
        let mut live = tty::Live::start(std::io::stderr(), width);
        let built = builder.build(&options, &mut |e: &BuildEvent| live.event(e));
        live.finish(|out| {
            let mut display = Display::new(mode, out);
            match &built {
                Ok(r) => display.summary(r, started.elapsed()),
                Err(e) => display.failed(e),
            }
        });
        built
    } else {
        let mut display = Display::new(mode, std::io::stderr());
        let built = builder.build(&options, &mut |e: &BuildEvent| display.event(e));
        match &built {
            Ok(r) => display.summary(r, started.elapsed()),
            Err(e) => display.failed(e),
        }
        built
    };
    let result = built?;
    // Tagged, the image's blobs were synced before the tag; untagged, they
    // are synced now: either way durable when the command returns.
    s.sync_deferred()
        .context("syncing the image's blobs to the disk")?;
    for c in &cache_to {
        cache::export_to(&s, &result, c, &a.reach, &mount_root)?;
    }
    // A multi-platform build's ID is its index's digest, as buildx gives it.
    let id = match &result.index {
        Some(index) => index.digest().clone(),
        None => result.image_id.clone(),
    };
    if let Some(path) = &a.iidfile {
        std::fs::write(path, id.to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(o) = output {
        let image = SaveImage::new(result.descriptor(), result.tags.clone());
        write_file(&o.dest, |out| {
            if o.docker {
                save_docker(&s, &[image], out, &SaveOptions::default())?;
            } else {
                save_oci(&s, &[image], out)?;
            }
            Ok(())
        })?;
    }
    println!("{id}");
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
        if let Some((step, title)) = tty::started(e) {
            self.started.insert(step, Instant::now());
            return writeln!(self.out, "{title}");
        }
        match e {
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
            r.index.as_ref().map_or(&r.image_id, |i| i.digest()),
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

    #[test]
    fn secret_specs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s");
        std::fs::write(&file, b"file value").unwrap();
        std::env::set_var("IMAGECTL_TEST_SECRET", "env value");
        let got = secrets(&[
            format!("id=a,src={}", file.display()),
            "id=b,env=IMAGECTL_TEST_SECRET".to_owned(),
            "id=IMAGECTL_TEST_SECRET".to_owned(),
        ])
        .unwrap();
        assert_eq!(got["a"].bytes(), b"file value");
        assert_eq!(got["b"].bytes(), b"env value");
        assert_eq!(got["IMAGECTL_TEST_SECRET"].bytes(), b"env value");
        std::fs::write(&file, vec![b'x'; image_build::mounts::MAX_SECRET + 1]).unwrap();
        for bad in [
            format!("id=a,src={}", file.display()),
            "src=/x".to_owned(),
            "id=a,env=IMAGECTL_NOT_SET_ANYWHERE".to_owned(),
            "id=a,colour=red".to_owned(),
        ] {
            let e = secrets(std::slice::from_ref(&bad)).unwrap_err();
            assert!(!format!("{e:#}").contains("xxxx"), "{bad}: {e:#}");
        }
        assert!(allow_insecure(&["security.insecure".into()]).unwrap());
        assert!(!allow_insecure(&["network.host".into()]).unwrap());
        assert!(allow_insecure(&["device".into()]).is_err());
    }
}
