//! Packet capture per connection and `geminst calc`. (Being built; see issue 6.)

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct CalcArgs {}

pub fn calc_command(_args: CalcArgs) -> Result<ExitCode> {
    anyhow::bail!("geminst calc is not built yet")
}
