use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_: Args) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(&baddiffusion::runtime_info())?);
    Ok(())
}
