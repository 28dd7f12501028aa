//! `tcpviz generate-assets --out DIR` (hidden): the manual pages and shell completions,
//! made from the same clap definitions the binary parses, so they cannot drift from it.
//! `cargo xtask package` runs it to fill the Debian package.

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use super::args::Cli;

/// Writes `DIR/man/tcpviz.1` and one page per command (`tcpviz-live.1`, ...), and
/// `DIR/completions/` for bash, zsh and fish under the names those shells look for.
pub fn generate(out: &Path) -> Result<()> {
    let man = out.join("man");
    let completions = out.join("completions");
    for dir in [&man, &completions] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    clap_mangen::generate_to(Cli::command(), &man)
        .with_context(|| format!("cannot write the manual pages into {}", man.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "tcpviz", &completions)
            .with_context(|| format!("cannot write the {shell} completion into {}", completions.display()))?;
    }
    Ok(())
}
