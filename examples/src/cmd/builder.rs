//! `imagectl builder prune`: drops the build cache's records, as
//! `docker builder prune` does; `imagectl gc` then frees their blobs.
//!
//! The cache keeps each record as an image tagged in the repository
//! `image-build.local/cache` of the store (image-build's `cache` module), so gc
//! keeps what a record names and `imagectl images` hides them.

use super::store::StoreArgs;

/// `imagectl builder` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BuilderCommand {
    /// Remove every build cache record (`imagectl gc` then frees the blobs
    /// that nothing else uses).
    Prune(PruneArgs),
}

/// Arguments of `imagectl builder prune`.
#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs an `imagectl builder` subcommand.
pub fn builder(store: &StoreArgs, command: BuilderCommand) -> anyhow::Result<()> {
    match command {
        BuilderCommand::Prune(args) => prune(store, args),
    }
}

/// Drops every cache record in one update of `index.json`.
fn prune(store: &StoreArgs, args: PruneArgs) -> anyhow::Result<()> {
    let s = store.open()?;
    let removed = image_build::cache::prune(&s)?;
    if args.json {
        println!("{}", serde_json::json!({ "removed": removed }));
    } else {
        println!("removed {removed} build cache records (`imagectl gc` frees their blobs)");
    }
    Ok(())
}
