//! `imagectl ref NAME`

use image_core::Reference;

/// Arguments of `imagectl ref`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The reference, e.g. `nginx:1.21.1-alpine` or `localhost:5000/a/b@sha256:...`.
    pub reference: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Parses, normalises and prints the parts of a reference.
pub fn run(args: Args) -> anyhow::Result<()> {
    let r: Reference = args.reference.parse()?;
    let digest = r.digest().map(ToString::to_string);
    if args.json {
        let v = serde_json::json!({
            "input": args.reference,
            "normalized": r.to_string(),
            "familiar": r.familiar(),
            "domain": r.domain(),
            "repository": r.repository(),
            "name": r.name(),
            "tag": r.tag(),
            "digest": digest,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("normalized: {r}");
        println!("familiar:   {}", r.familiar());
        println!("domain:     {}", r.domain());
        println!("repository: {}", r.repository());
        println!("tag:        {}", r.tag().unwrap_or(""));
        println!("digest:     {}", digest.unwrap_or_default());
    }
    Ok(())
}
