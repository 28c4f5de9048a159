//! `geminst load`: the load generator. (Being built; see issue 4.)

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct LoadArgs {}

pub fn command(_args: LoadArgs) -> Result<ExitCode> {
    anyhow::bail!("geminst load is not built yet")
}
