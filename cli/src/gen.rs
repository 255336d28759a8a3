//! Shell completions and man pages, generated from the clap definitions so they never drift
//! from the real flags (`rbd-relay completions SHELL`, `rbd-relay man [--out DIR]`).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::args::Cli;

/// Write the completion script of `shell` for every subcommand and flag.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "rbd-relay", out);
}

/// Write `rbd-relay.1` to `out`.
pub fn man(out: &mut dyn Write) -> Result<()> {
    clap_mangen::Man::new(Cli::command())
        .render(out)
        .context("writing the man page")
}

/// Write `rbd-relay.1` and one page per subcommand into `dir` (created if missing).
pub fn man_pages(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("--out {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    let mut pages: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    pages.sort();
    Ok(pages)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Every subcommand (and every nested one) by name.
    fn subcommands() -> Vec<String> {
        fn walk(c: &clap::Command, out: &mut Vec<String>) {
            for s in c.get_subcommands() {
                out.push(s.get_name().to_string());
                walk(s, out);
            }
        }
        let mut out = Vec::new();
        walk(&Cli::command(), &mut out);
        out
    }

    #[test]
    fn completions_mention_every_subcommand() {
        let names = subcommands();
        for want in [
            "resume",
            "abort",
            "cleanup",
            "completions",
            "man",
            "delete-source",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing in {names:?}"
            );
        }
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            completions(shell, &mut out);
            let text = String::from_utf8(out).unwrap();
            for n in &names {
                assert!(text.contains(n.as_str()), "{shell}: no '{n}'");
            }
            assert!(text.contains("parallel") && text.contains("discard-verified-copy"));
        }
    }

    #[test]
    fn man_page_mentions_every_subcommand_and_the_exit_codes() {
        let mut out = Vec::new();
        man(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for n in subcommands() {
            assert!(text.contains(&n.replace('-', "\\-")), "man: no '{n}'");
        }
        assert!(text.contains("Exit codes"), "{text}");

        let dir = tempfile::tempdir().unwrap();
        let pages = man_pages(dir.path()).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "rbd-relay.1",
            "rbd-relay-abort.1",
            "rbd-relay-resume.1",
            "rbd-relay-cleanup.1",
            "rbd-relay-migrate-volume.1",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
    }
}
