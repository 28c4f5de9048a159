//! `geminst serve` and `geminst import`: the built-in Gemini server. (Being built; see issue 3.)

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {}

pub fn command(_args: ServeArgs) -> Result<ExitCode> {
    anyhow::bail!("geminst serve is not built yet")
}

pub fn import_command(_args: ImportArgs) -> Result<ExitCode> {
    anyhow::bail!("geminst import is not built yet")
}
