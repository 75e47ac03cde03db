//! `imagectl`: the command line over the image crate family, as crane sits
//! on go-containerregistry. Each subcommand is a thin shell over one library
//! call; errors go to stderr with their class and a non-zero exit status.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// The exit statuses, shown by `--help`.
const EXIT_STATUS: &str = "\
Exit status: 0 on success; 1 on a failure, reported on stderr as
`imagectl: <class>: <message>`; 75 when a peer is unavailable for now
(retry later), 77 when it refused the credentials, 130 when cancelled.
run, start, exec and attach exit with the container's own status.";

/// Work with OCI and Docker images: digests, references, platforms, stores, layers.
#[derive(Debug, Parser)]
#[command(name = "imagectl", version, about, long_about = None, after_help = EXIT_STATUS)]
struct Cli {
    #[command(flatten)]
    store: cmd::store::StoreArgs,
    #[command(flatten)]
    ui: cmd::progress::UiArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the digest of a file, or of standard input with `-`.
    Digest(cmd::digest::Args),
    /// Parse an image reference and print its normalised parts.
    Ref(cmd::reference::Args),
    /// Print the host platform, or parse and normalise a platform string.
    Platform(cmd::platform::Args),
    /// List the images in the store.
    Images(cmd::store::ImagesArgs),
    /// Show an image's manifest, config and IDs, or its history.
    Inspect(cmd::store::InspectArgs),
    /// Show an image's history, as `docker history` does (= `inspect --history`).
    History(cmd::store::HistoryArgs),
    /// Give an image another name.
    Tag(cmd::store::TagArgs),
    /// Remove image names (blobs are freed by `gc`).
    Rmi(cmd::store::RmiArgs),
    /// Remove blobs that no tag or lease reaches.
    ///
    /// Like `docker rmi`, `imagectl rmi x && imagectl gc` frees x's blobs
    /// at once: the default grace period is seconds, not minutes, because
    /// concurrent writers do not depend on it. Every writer of imagectl
    /// (load, copy, append, commit) holds a lease
    /// on its blobs from the first one until it has tagged them, so gc
    /// never removes them, at any grace. The grace (10 s by default) only
    /// keeps blobs just written by tools that take no lease (skopeo,
    /// umoci), which land a moment before their index.json names them;
    /// `--grace 0` frees those too. Ingests and leases whose writer is gone
    /// are removed at once.
    Gc(cmd::store::GcArgs),
    /// Re-hash every blob and check every image's blobs are present.
    Fsck(cmd::store::FsckArgs),
    /// Import a `docker save` tarball or an OCI archive into the store.
    Load(cmd::archive::LoadArgs),
    /// Export images as a `docker save` tarball or an OCI archive.
    Save(cmd::archive::SaveArgs),
    /// Copy an image between the store, OCI layouts (oci:DIR:REF), OCI archives (oci-archive:PATH[:REF]) and registries (docker://REF), skipping blobs already there.
    Copy(cmd::archive::CopyArgs),
    /// Make a new image: a base (or nothing) plus a layer, with config changes.
    Append(cmd::layer::AppendArgs),
    /// Flatten an image's layers onto a directory (a root filesystem).
    Unpack(cmd::layer::UnpackArgs),
    /// Pack, apply or list layer tarballs.
    #[command(subcommand)]
    Layer(cmd::layer::LayerCommand),
    /// Write the layer that turns one directory tree into another.
    Diff(cmd::layer::DiffArgs),
    /// Run a command in a new container from an image (attached; exits with its code).
    Run(cmd::run::RunArgs),
    /// Create a container from an image; print its ID.
    Create(cmd::run::CreateArgs),
    /// Start a created or stopped container, attached; exit with its code.
    Start(cmd::run::StartArgs),
    /// List containers (with `-q`, only their IDs).
    Ps(cmd::run::PsArgs),
    /// Send a signal to a running container.
    Kill(cmd::run::KillArgs),
    /// Remove containers (their writable snapshots too).
    Rm(cmd::run::RmArgs),
    /// Print a detached container's output (its JSON log).
    Logs(cmd::detach::LogsArgs),
    /// Wait for containers to stop; print their exit codes.
    Wait(cmd::detach::WaitArgs),
    /// Stop running containers: SIGTERM, then SIGKILL after a grace.
    Stop(cmd::detach::StopArgs),
    /// Follow a detached container's output until it exits; exit with its code.
    Attach(cmd::detach::AttachArgs),
    /// Stop and start detached containers again.
    Restart(cmd::detach::RestartArgs),
    /// Manage volumes: ls, create, inspect, rm.
    #[command(subcommand)]
    Volume(cmd::volume::VolumeCommand),
    /// Make a new image from a container's changes.
    Commit(cmd::run::CommitArgs),
    /// Write an OCI bundle (config.json + flattened rootfs) of an image.
    Bundle(cmd::run::BundleArgs),
    /// Run another command in a running container; exit with its code.
    Exec(cmd::run::ExecArgs),
    /// Mount an image's root (read-only, or with a writable layer) on a directory.
    Mount(cmd::snapshot::MountArgs),
    /// Unmount a directory mounted by `mount` and remove its snapshot.
    Umount(cmd::snapshot::UmountArgs),
    /// List snapshots: kind, name, parent, disk usage.
    Snapshots(cmd::snapshot::SnapshotsListArgs),
    /// Print a Dockerfile's instructions as JSON (parsed; with `--expand`,
    /// expanded too): the form docs/dockerfile-json.md documents.
    Dockerfile(cmd::dockerfile::Args),
    /// Manage the build cache.
    #[command(subcommand)]
    Builder(cmd::builder::BuilderCommand),
    /// Build an image from a Dockerfile (RUN steps run in containers).
    Build(cmd::build::BuildArgs),
    /// Pull an image from a registry into the store.
    Pull(cmd::registry::PullArgs),
    /// Push an image of the store to a registry.
    Push(cmd::registry::PushArgs),
    /// List the tags of a repository on a registry.
    Tags(cmd::registry::TagsArgs),
    /// Print a manifest or index from a registry.
    Manifest(cmd::registry::ManifestArgs),
    /// Keep credentials for a registry in the Docker config file.
    Login(cmd::registry::LoginArgs),
    /// Remove a registry's credentials from the Docker config file.
    Logout(cmd::registry::LogoutArgs),
    /// Merge an image's layers (all, or those above a base) into one.
    Squash(cmd::surgery::SquashArgs),
    /// Swap an image's base layers for another base's (crane rebase).
    Rebase(cmd::surgery::RebaseArgs),
    /// Make a new image with config changes, a layer appended or a path removed.
    Mutate(cmd::surgery::MutateArgs),
    /// Write an image's final filesystem as one tar stream (crane export).
    Export(cmd::surgery::ExportArgs),
    /// Report an image's size efficiency (as dive computes it) and wasted
    /// bytes; optionally an HTML page and CI thresholds.
    Analyze(cmd::analyze::AnalyzeArgs),
    /// Find secrets leaked into an image's layers, history or config.
    Secrets(cmd::analyze::SecretsArgs),
    /// Print what each layer adds, modifies and deletes.
    Layers(cmd::analyze::LayersArgs),
    /// Run a program (default: $SHELL) in the user namespace an
    /// unprivileged user's commands run in, as `podman unshare`.
    Unshare(cmd::unshare::Args),
}

impl Command {
    /// Whether the command works on the store, snapshots, containers or a
    /// tree whose owners matter, so that an unprivileged user runs it in a
    /// user namespace (`cmd::unshare`); the others read or print only.
    fn wants_user_namespace(&self) -> bool {
        !matches!(
            self,
            Command::Digest(_)
                | Command::Ref(_)
                | Command::Platform(_)
                | Command::Dockerfile(_)
                | Command::Tags(_)
                | Command::Manifest(_)
                | Command::Login(_)
                | Command::Logout(_)
        )
    }
}

fn main() -> ExitCode {
    // First, while single-threaded: a re-executed rootless command moves
    // into its user namespace here, and the pause process lives here.
    let mut entered = match image_runtime::rootless::finish_entry() {
        Ok(entered) => entered,
        Err(e) => return fail(anyhow::Error::new(e)),
    };
    // A detached container's monitor is imagectl run again: it never
    // returns from here.
    image_runtime::monitor::run_if_requested();
    let cli = Cli::parse();
    if cli.command.wants_user_namespace() && image_runtime::rootless::wants_user_namespace() {
        // Still single-threaded: parsing starts no thread.
        if let Err(e) = cmd::unshare::join(&cli.store) {
            return fail(e);
        }
        entered = true;
    }
    if entered && matches!(cli.command, Command::Mount(_)) {
        // The mount would live in the pause process's mount namespace,
        // which the user's shell is not in: refused, as podman does.
        return fail(anyhow::anyhow!(
            "mount as an unprivileged user works only inside `imagectl unshare`: \
             the mount is made in the rootless mount namespace, which this shell is not in"
        ));
    }
    let result = match cli.command {
        Command::Digest(a) => cmd::digest::run(a),
        Command::Ref(a) => cmd::reference::run(a),
        Command::Platform(a) => cmd::platform::run(a),
        Command::Images(a) => cmd::store::images(&cli.store, a),
        Command::Inspect(a) => cmd::store::inspect(&cli.store, a),
        Command::History(a) => cmd::store::history(&cli.store, a),
        Command::Tag(a) => cmd::store::tag(&cli.store, a),
        Command::Rmi(a) => cmd::store::rmi(&cli.store, a),
        Command::Gc(a) => cmd::store::gc(&cli.store, a),
        Command::Fsck(a) => cmd::store::fsck(&cli.store, a),
        Command::Load(a) => cmd::archive::load(&cli.store, &cli.ui, a),
        Command::Save(a) => cmd::archive::save(&cli.store, &cli.ui, a),
        Command::Copy(a) => cmd::archive::copy(&cli.store, &cli.ui, a),
        Command::Append(a) => cmd::layer::append(&cli.store, a),
        Command::Unpack(a) => cmd::layer::unpack_image(&cli.store, &cli.ui, a),
        Command::Layer(c) => cmd::layer::layer(c),
        Command::Diff(a) => cmd::layer::diff(a),
        Command::Run(a) => cmd::run::run(&cli.store, a),
        Command::Create(a) => cmd::run::create(&cli.store, a),
        Command::Start(a) => cmd::run::start(&cli.store, a),
        Command::Ps(a) => cmd::run::ps(&cli.store, &cli.ui, a),
        Command::Kill(a) => cmd::run::kill(&cli.store, a),
        Command::Rm(a) => cmd::run::rm(&cli.store, a),
        Command::Logs(a) => cmd::detach::logs(&cli.store, a),
        Command::Wait(a) => cmd::detach::wait(&cli.store, a),
        Command::Stop(a) => cmd::detach::stop(&cli.store, a),
        Command::Attach(a) => cmd::detach::attach(&cli.store, a),
        Command::Restart(a) => cmd::detach::restart(&cli.store, a),
        Command::Volume(c) => cmd::volume::volume(&cli.store, &cli.ui, c),
        Command::Commit(a) => cmd::run::commit(&cli.store, a),
        Command::Bundle(a) => cmd::run::bundle(&cli.store, a),
        Command::Exec(a) => cmd::run::exec(&cli.store, a),
        Command::Mount(a) => cmd::snapshot::mount(&cli.store, a),
        Command::Umount(a) => cmd::snapshot::umount(&cli.store, a),
        Command::Snapshots(a) => cmd::snapshot::snapshots(&cli.store, a),
        Command::Dockerfile(a) => cmd::dockerfile::run(a),
        Command::Builder(c) => cmd::builder::builder(&cli.store, c),
        Command::Build(a) => cmd::build::run(&cli.store, a),
        Command::Pull(a) => cmd::registry::pull(&cli.store, &cli.ui, a),
        Command::Push(a) => cmd::registry::push(&cli.store, &cli.ui, a),
        Command::Tags(a) => cmd::registry::tags(a),
        Command::Manifest(a) => cmd::registry::manifest(a),
        Command::Login(a) => cmd::registry::login(a),
        Command::Logout(a) => cmd::registry::logout(a),
        Command::Squash(a) => cmd::surgery::squash_cmd(&cli.store, a),
        Command::Rebase(a) => cmd::surgery::rebase_cmd(&cli.store, a),
        Command::Mutate(a) => cmd::surgery::mutate_cmd(&cli.store, a),
        Command::Export(a) => cmd::surgery::export_cmd(&cli.store, a),
        Command::Analyze(a) => cmd::analyze::analyze_cmd(&cli.store, a),
        Command::Secrets(a) => cmd::analyze::secrets_cmd(&cli.store, a),
        Command::Layers(a) => cmd::analyze::layers_cmd(&cli.store, a),
        Command::Unshare(a) => cmd::unshare::unshare(a),
    };
    result.map_or_else(fail, |()| ExitCode::SUCCESS)
}

/// Reports a failure on stderr; its exit status.
fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("imagectl: {}", cmd::describe(&e));
    ExitCode::from(cmd::exit_code(cmd::classify(&e)))
}
