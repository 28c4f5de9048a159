//! `geminst run`: the whole pipeline on defaults. (Being built; see issue 5.)

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct RunArgs {}

pub fn command(_args: RunArgs) -> Result<ExitCode> {
    anyhow::bail!("geminst run is not built yet")
}
