//! Exit codes shared by every command, and the error that selects "bad input".

/// Exit code for a failure while working (a server that died, a write that failed).
pub const FAILURE: u8 = 1;
/// Exit code for bad input: an unknown pid, a malformed file, an impossible setting.
pub const BAD_INPUT: u8 = 2;

/// An error in what the user gave rather than in the work; the binary exits with `BAD_INPUT`.
/// Wrap it in anyhow errors as usual: `main` finds it anywhere in the chain.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Shorthand for `Err(BadInput(..).into())`.
pub fn bad_input<T>(message: impl Into<String>) -> anyhow::Result<T> {
    Err(BadInput(message.into()).into())
}

/// The exit code for an error: `BAD_INPUT` if any error in its chain is `BadInput`.
pub fn code_for(error: &anyhow::Error) -> u8 {
    if error.chain().any(|e| e.downcast_ref::<BadInput>().is_some()) { BAD_INPUT } else { FAILURE }
}
