//! `imagectl platform [PLATFORM]`

use image_core::Platform;

/// Arguments of `imagectl platform`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A platform such as `linux/arm64/v8` or `linux/x86_64` to normalise;
    /// the host's platform when omitted.
    pub platform: Option<String>,
    /// Print JSON (the OCI platform object) instead of `os/arch[/variant]`.
    #[arg(long)]
    pub json: bool,
}

/// Prints the normalised platform.
pub fn run(args: Args) -> anyhow::Result<()> {
    let p = match &args.platform {
        Some(s) => s.parse::<Platform>()?,
        None => Platform::host(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        println!("{p}");
    }
    Ok(())
}
