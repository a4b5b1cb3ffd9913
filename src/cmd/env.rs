use anyhow::Result;
use baddiffusion::matrix::Profile;

#[derive(clap::Args)]
pub struct Args {
    /// Also check that this profile's cells can run here (name or TOML path): add the device
    /// they would use as `profile_device`, or fail with the reason (how `cargo xtask reproduce`
    /// refuses a GPU profile on a machine without a usable GPU before it fetches anything).
    #[arg(long)]
    profile: Option<String>,
    /// With --profile: the device `--device` would pass to its cells (cpu, cuda, cuda:N).
    #[arg(long, requires = "profile")]
    device: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let mut info = baddiffusion::runtime_info();
    if let Some(name) = &args.profile {
        let profile = Profile::load(&std::env::current_dir()?, name)?;
        let device = super::cell::profile_device(&profile, args.device.as_deref())?;
        info["profile_device"] = format!("{device:?}").into();
    }
    println!("{}", serde_json::to_string_pretty(&info)?);
    Ok(())
}
