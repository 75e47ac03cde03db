//! `imagectl volume ls|create|inspect|rm`: the volumes of the container
//! state directory (image-runtime's `volume` module), as `docker volume`
//! shows them. Named volumes are made by `run -v NAME:/path` or `volume
//! create`; anonymous ones (64 hex digits) by `run` for an image's
//! VOLUME paths, removed with their container by `rm -v`.

use image_runtime::volume::{VolumeInfo, VolumeStore};

use super::run::PlaceArgs;
use super::store::StoreArgs;

/// `imagectl volume` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum VolumeCommand {
    /// List volumes (with `-q`, only their names).
    Ls(VolumeLsArgs),
    /// Create a named volume (nothing changes if it exists); print its name.
    Create(VolumeNameArgs),
    /// Print volumes as JSON: name, mountpoint, anonymous, containers.
    Inspect(VolumeNamesArgs),
    /// Remove volumes; one a container uses is refused unless --force.
    Rm(VolumeRmArgs),
}

/// Arguments of `imagectl volume ls`.
#[derive(Debug, clap::Args)]
pub struct VolumeLsArgs {
    #[command(flatten)]
    pub place: PlaceArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments naming one volume.
#[derive(Debug, clap::Args)]
pub struct VolumeNameArgs {
    #[command(flatten)]
    pub place: PlaceArgs,
    /// The name: [a-zA-Z0-9][a-zA-Z0-9_.-]+.
    pub name: String,
}

/// Arguments naming volumes.
#[derive(Debug, clap::Args)]
pub struct VolumeNamesArgs {
    #[command(flatten)]
    pub place: PlaceArgs,
    /// The names.
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// Arguments of `imagectl volume rm`.
#[derive(Debug, clap::Args)]
pub struct VolumeRmArgs {
    /// Remove volumes that containers use too.
    #[arg(short, long)]
    pub force: bool,
    #[command(flatten)]
    pub volumes: VolumeNamesArgs,
}

fn store_of(store: &StoreArgs, place: &PlaceArgs) -> anyhow::Result<VolumeStore> {
    Ok(VolumeStore::new(&place.state_dir(store)?))
}

/// Runs an `imagectl volume` subcommand.
pub fn volume(
    store: &StoreArgs,
    ui: &super::progress::UiArgs,
    command: VolumeCommand,
) -> anyhow::Result<()> {
    match command {
        VolumeCommand::Ls(a) => {
            let list = store_of(store, &a.place)?.list()?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if ui.quiet {
                list.iter().for_each(|v| println!("{}", v.name));
            } else {
                println!("{:<9} {:<64} CONTAINERS", "KIND", "NAME");
                for v in &list {
                    let kind = if v.anonymous { "anonymous" } else { "named" };
                    println!("{kind:<9} {:<64} {}", v.name, v.containers.len());
                }
            }
            Ok(())
        }
        VolumeCommand::Create(a) => {
            store_of(store, &a.place)?.create(&a.name)?;
            println!("{}", a.name);
            Ok(())
        }
        VolumeCommand::Inspect(a) => {
            let vs = store_of(store, &a.place)?;
            let infos = a
                .names
                .iter()
                .map(|n| vs.inspect(n))
                .collect::<Result<Vec<VolumeInfo>, _>>()?;
            println!("{}", serde_json::to_string_pretty(&infos)?);
            Ok(())
        }
        VolumeCommand::Rm(a) => {
            let vs = store_of(store, &a.volumes.place)?;
            let mut failed = 0;
            for n in &a.volumes.names {
                match vs.remove(n, a.force) {
                    Ok(()) => println!("{n}"),
                    Err(e) => {
                        eprintln!("imagectl: {}", super::describe(&e.into()));
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                anyhow::bail!("{failed} of {} volumes not removed", a.volumes.names.len());
            }
            Ok(())
        }
    }
}
