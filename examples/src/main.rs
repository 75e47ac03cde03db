//! `imagectl`: the command line over the image crate family, as crane sits
//! on go-containerregistry. Each subcommand is a thin shell over one library
//! call; errors go to stderr with their class and a non-zero exit status.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// Work with OCI and Docker images: digests, references, platforms, stores, layers.
#[derive(Debug, Parser)]
#[command(name = "imagectl", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    store: cmd::store::StoreArgs,
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
    /// Give an image another name.
    Tag(cmd::store::TagArgs),
    /// Remove image names (blobs are freed by `gc`).
    Rmi(cmd::store::RmiArgs),
    /// Remove blobs that no tag or lease reaches.
    Gc(cmd::store::GcArgs),
    /// Re-hash every blob and check every image's blobs are present.
    Fsck(cmd::store::FsckArgs),
    /// Make a new image: a base (or nothing) plus a layer, with config changes.
    Append(cmd::layer::AppendArgs),
    /// Flatten an image's layers onto a directory (a root filesystem).
    Unpack(cmd::layer::UnpackArgs),
    /// Pack, apply or list layer tarballs.
    #[command(subcommand)]
    Layer(cmd::layer::LayerCommand),
    /// Write the layer that turns one directory tree into another.
    Diff(cmd::layer::DiffArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Digest(a) => cmd::digest::run(a),
        Command::Ref(a) => cmd::reference::run(a),
        Command::Platform(a) => cmd::platform::run(a),
        Command::Images(a) => cmd::store::images(&cli.store, a),
        Command::Inspect(a) => cmd::store::inspect(&cli.store, a),
        Command::Tag(a) => cmd::store::tag(&cli.store, a),
        Command::Rmi(a) => cmd::store::rmi(&cli.store, a),
        Command::Gc(a) => cmd::store::gc(&cli.store, a),
        Command::Fsck(a) => cmd::store::fsck(&cli.store, a),
        Command::Append(a) => cmd::layer::append(&cli.store, a),
        Command::Unpack(a) => cmd::layer::unpack_image(&cli.store, a),
        Command::Layer(c) => cmd::layer::layer(c),
        Command::Diff(a) => cmd::layer::diff(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imagectl: {}", cmd::describe(&e));
            ExitCode::FAILURE
        }
    }
}
