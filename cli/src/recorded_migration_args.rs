//! Flags of the commands on recorded migrations (`resume`, `abort`, `cleanup`, run by
//! `recorded_migrations`), of the generated documentation (`completions`, `man`), and the
//! batch image list of `migrate volume`. Kept apart from `args.rs` so each command's flags
//! stay small. (Not named `ops`: in `rbd-mirror-core`, `ops` is the `CephOps` trait.)

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::args::VolumeArgs;

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Migration id, as `rbd-relay list` shows it.
    pub id: String,
    /// Seconds without replication progress before giving up (a re-run continues).
    #[arg(long, default_value_t = 300, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_timeout: u64,
    /// While the destination's rbd-mirror daemon is down or not responding: fail at once, or
    /// keep waiting for it until --stall-timeout.
    #[arg(long, value_enum, default_value_t = crate::args::OnDaemonDownArg::Fail)]
    pub on_daemon_down: crate::args::OnDaemonDownArg,
}

#[derive(Debug, Args)]
pub struct AbortArgs {
    /// Migration id, as `rbd-relay list` shows it.
    pub id: String,
    /// Also remove a copy that was already verified (otherwise refused: keep it with
    /// `rbd-relay cleanup ID`).
    #[arg(long)]
    pub discard_verified_copy: bool,
    /// Print the undo plan (what abort would do, step by step) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct CutoverArgs {
    /// Migration id, as `rbd-relay list` shows it (a live migration waiting for its cutover).
    pub id: String,
    /// Cut over even though the source still has users: their writes fail from the
    /// demotion on (they are named first).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Migration id, as `rbd-relay list` shows it.
    pub id: String,
    /// Then drop the state record, if the migration is finished (`delete-source` needs the
    /// record: run it first).
    #[arg(long)]
    pub forget: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write rbd-relay.1 and one page per subcommand (rbd-relay-migrate-volume.1, ...) into
    /// this directory instead of printing rbd-relay.1 to stdout.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// The images of `migrate volume`: the positional ones, then those of `--from-file` (one
/// per line, `#` comments and blank lines skipped). Refuses an empty list and `--name` with
/// more than one image.
pub fn image_list(args: &VolumeArgs) -> Result<Vec<String>> {
    let mut images = args.images.clone();
    if let Some(path) = &args.from_file {
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("--from-file -: reading stdin")?
        } else {
            std::fs::read_to_string(path)
                .with_context(|| format!("--from-file {}: cannot read it", path.display()))?
        };
        images.extend(parse_list(&text));
        if images.is_empty() {
            anyhow::bail!(
                "--from-file {}: lists no image; give one POOL/IMAGE per line",
                path.display()
            );
        }
    }
    if let Some(cloud) = &args.source_cloud {
        // with --source-cloud the entries are Cinder volume ids, which go into URLs
        for id in &images {
            rbd_mirror_core::spec::check_volume_id(id)
                .with_context(|| format!("--source-cloud {cloud} takes volume ids"))?;
        }
    }
    if images.len() > 1 && args.name.is_some() {
        anyhow::bail!(
            "--name names one copy, but {} images were given; leave --name out (each copy keeps its image's name) or migrate that image alone",
            images.len()
        );
    }
    Ok(images)
}

/// The entries of a `--from-file` list.
fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_skip_comments_and_blank_lines() {
        let l = parse_list("# images\nvolumes/a\n\n  volumes/b  # the big one\n#volumes/c\n");
        assert_eq!(l, ["volumes/a", "volumes/b"]);
    }
}
