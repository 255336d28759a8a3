//! `rbd-relay bundle volume|bootable ... --out DIR`: the plan `migrate` would run, written as
//! one shell script per role plus a README (see `rbd_mirror_bundle`).
//!
//! The plan comes from the same read-only preflight as `migrate --dry-run`, so whoever
//! generates the bundle needs read access to both clusters (any cephx user that may read the
//! pools; no write cap). The destination cloud is not contacted: the tenant script checks its
//! own credentials when it runs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use rbd_mirror_bundle::{render, sh_quote, Bundle};
use rbd_mirror_core::exec::plan;
use rbd_mirror_core::exec::Clouds;
use rbd_mirror_core::plan::{Plan, VolumeMigration};
use rbd_mirror_core::state::StateFile;

use crate::args::{BootableArgs, OutputFormat, VolumeArgs};
use crate::report::Reporter;

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Scripts for a volume migration: takes the arguments of `migrate volume` (add --adopt
    /// --os-cloud CLOUD for the tenant admin's Cinder manage script). By clone (the default)
    /// the cutover is its own scripts (demote, promote, clone; with --live the cutover script
    /// waits until the source is idle); --handover copy copies and verifies first (not with
    /// --live: those scripts verify by the source's digest, which an image in use changes).
    Volume(BundleVolumeArgs),
    /// Scripts for a bootable volume through Glance: takes the arguments of `migrate
    /// bootable`. The upload-to-image is the prerequisite the source tenant admin does first
    /// (`openstack image create --volume VOLUME_ID ...`); the bundle starts from its image.
    Bootable(BundleBootableArgs),
}

#[derive(Debug, Args)]
pub struct BundleBootableArgs {
    #[command(flatten)]
    pub bootable: BootableArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

#[derive(Debug, Args)]
pub struct BundleVolumeArgs {
    #[command(flatten)]
    pub volume: VolumeArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

/// Where the bundle goes.
#[derive(Debug, Args)]
pub struct OutArgs {
    /// Directory to write the scripts and README.md into (created; must be empty unless
    /// --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Write into a non-empty directory, replacing files of the same names.
    #[arg(long)]
    pub force: bool,
    /// Plan from the source cluster alone (for a source admin without a destination key):
    /// the destination's pools, peer, daemon and names are checked by the destination
    /// script when it runs instead of now.
    #[arg(long)]
    pub source_only: bool,
}

/// The command line that made the bundle, for its README (flags only: rbd-relay takes no
/// secret on its command line). Read with `args_os`: an argument that is not UTF-8 (a path)
/// is shown with U+FFFD in place of its invalid bytes (the README is text; nothing runs it).
fn command_line() -> String {
    let mut parts = vec!["rbd-relay".to_string()];
    for a in std::env::args_os().skip(1) {
        let a = a.to_string_lossy();
        if a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@#".contains(c))
        {
            parts.push(a.into_owned());
        } else {
            parts.push(sh_quote(&a));
        }
    }
    parts.join(" ")
}

pub async fn run(
    cmd: BundleCommand,
    format: OutputFormat,
    state_dir: &Path,
    reporter: Arc<Reporter>,
) -> Result<ExitCode> {
    match cmd {
        BundleCommand::Volume(args) => {
            check_out_printable(&args.out, format)?;
            let v = &args.volume;
            if v.dry_run {
                return Err(crate::exit::usage(anyhow::anyhow!(
                    "bundle never changes anything; drop --dry-run"
                )));
            }
            if v.live && v.handover == Some(crate::args::HandoverArg::Copy) {
                return Err(crate::exit::usage(anyhow::anyhow!(
                    "a bundle that copies hands the source's sha256 from script to script, and an image in use keeps changing it: drop --handover copy (the handover by clone cuts over once the source is idle), or stop the instance using the image (or detach the volume) and drop --live"
                )));
            }
            if v.parallel != 1 {
                return Err(crate::exit::usage(anyhow::anyhow!(
                    "a bundle moves one image, so --parallel does not apply; make one bundle per image (each into its own --out DIR)"
                )));
            }
            if v.stall_timeout != 300 {
                return Err(crate::exit::usage(anyhow::anyhow!(
                    "--stall-timeout sets rbd-relay's own wait; the bundle's scripts wait up to RBD_RELAY_WAIT_TIMEOUT seconds (set it when running them), so drop --stall-timeout"
                )));
            }
            let images =
                crate::recorded_migration_args::image_list(v).map_err(crate::exit::usage)?;
            let [image] = images.as_slice() else {
                return Err(crate::exit::usage(anyhow::anyhow!(
                    "a bundle moves one image, {} were given; make one bundle per image (each into its own --out DIR)",
                    images.len()
                )));
            };
            check_out_dir(&args.out)?;
            // like `migrate volume`: the source may be a Cinder volume id of --source-cloud
            let source = match &v.source_cloud {
                Some(name) => {
                    use rbd_mirror_core::cloud::CloudOps;
                    let c = rbd_mirror_openstack::OpenStackCloud::connect(
                        name,
                        cinder_manage::Side::Source,
                    )
                    .await?;
                    Some(
                        c.source_volume(image)
                            .await
                            .map_err(|e| anyhow::anyhow!("source cloud {name}: {e}"))?,
                    )
                }
                None => None,
            };
            // like `migrate volume`: by clone unless --handover copy (images mirrored before
            // the migration are always copied)
            let m = v.to_migration(image, source.as_ref())?;
            let p = plan_for_bundle(m, args.out.source_only, state_dir, reporter).await?;
            if p.migration.live.is_some() && p.cutover_window().is_none() {
                anyhow::bail!(
                    "{} was mirrored before this migration, so its plan copies the replica (it is never demoted), and a copy is verified by the source's sha256, which an image in use keeps changing: stop the instance using it (or detach the volume) and drop --live",
                    p.migration.image
                );
            }
            let bundle = render(&p, &command_line())?;
            write(&args.out, &bundle)?;
            report(format, &args.out.out, &p, &bundle);
            Ok(ExitCode::SUCCESS)
        }
        BundleCommand::Bootable(args) => {
            check_out_printable(&args.out, format)?;
            let a = &args.bootable;
            if a.dry_run {
                return Err(crate::exit::usage(anyhow::anyhow!(
                    "bundle never changes anything; drop --dry-run"
                )));
            }
            if a.stall_timeout != 300 {
                return Err(crate::exit::usage(anyhow::anyhow!(
                    "--stall-timeout sets rbd-relay's own wait; the bundle's scripts wait up to RBD_RELAY_WAIT_TIMEOUT seconds (set it when running them), so drop --stall-timeout"
                )));
            }
            let (b, dest) = a.to_migration()?;
            check_out_dir(&args.out)?;
            let m = uploaded_image_request(a, &b, &dest).await?;
            let p = plan_for_bundle(m, args.out.source_only, state_dir, reporter).await?;
            let bundle = render(&p, &command_line())?;
            write(&args.out, &bundle)?;
            report(format, &args.out.out, &p, &bundle);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The plan `migrate` would run, from the read-only preflight (both clusters, or the source
/// alone with `source_only`). The destination cloud is not contacted (the tenant script
/// checks its own credentials when it runs), so the cloud part of the request is set aside
/// for the preflight and put back into the plan.
async fn plan_for_bundle(
    m: VolumeMigration,
    source_only: bool,
    state_dir: &Path,
    reporter: Arc<Reporter>,
) -> Result<Plan> {
    let recorded_path = StateFile::path_for(state_dir, &m.id());
    if rbd_mirror_core::state::load(&recorded_path)?.is_some() {
        anyhow::bail!(
            "migration {} is recorded in {} (rbd-relay started it); finish it with rbd-relay (re-run the same migrate command) rather than with a bundle",
            m.id(),
            state_dir.display()
        );
    }
    let mut ceph_only = m.clone();
    ceph_only.adopt = None;
    ceph_only.register = None;
    // with both clusters, both at once: a refusal names each that cannot be reached
    let (src, dst) = if source_only {
        (crate::connect(m.source.clone()).await?, None)
    } else {
        let (src, dst) = crate::recorded_migrations::every_error2(tokio::join!(
            crate::connect(m.source.clone()),
            crate::connect(m.destination.clone())
        ))?;
        (src, Some(dst))
    };
    let facts = if let Some(dst) = dst {
        plan(
            &ceph_only,
            src,
            dst,
            &Clouds::default(),
            state_dir,
            reporter,
        )
        .await?
        .0
        .facts
    } else {
        let events = reporter.clone();
        tokio::task::spawn_blocking(move || {
            rbd_mirror_core::preflight::check_source(&ceph_only, src.as_ref(), events.as_ref())
                .map_err(anyhow::Error::from)
        })
        .await??
    };
    Ok(Plan::volume(m, facts))
}

/// The request of a bootable migration from the image the source tenant admin uploaded
/// (read only: the source cloud is asked for the volume and the image of the expected name).
async fn uploaded_image_request(
    a: &BootableArgs,
    b: &rbd_mirror_core::exec::BootableMigration,
    dest: &str,
) -> Result<rbd_mirror_core::plan::VolumeMigration> {
    use rbd_mirror_core::cloud::CloudOps;
    let cloud =
        rbd_mirror_openstack::OpenStackCloud::connect(&a.source_cloud, cinder_manage::Side::Source)
            .await?;
    let vol = cloud
        .source_volume(&b.volume_id)
        .await
        .map_err(|e| anyhow::anyhow!("source cloud {}: {e}", a.source_cloud))?;
    // the name `migrate bootable` gives the image
    let name = b.name.clone().unwrap_or_else(|| {
        format!(
            "{}-image",
            vol.name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| vol.id.clone())
        )
    });
    let upload = format!(
        "the OpenStack source tenant admin first uploads the volume (Cinder upload-to-image):\n    openstack --os-cloud {} image create --volume {} --disk-format raw --container-format bare {}\nwaits until `openstack image show` says active, then the bundle is generated again",
        a.source_cloud,
        b.volume_id,
        sh_quote(&name)
    );
    let found: Vec<_> = cloud
        .images_named(&name)
        .await
        .map_err(|e| anyhow::anyhow!("source cloud {}: {e}", a.source_cloud))?
        .into_iter()
        .filter(|i| !matches!(i.status.as_str(), "killed" | "deleted" | "pending_delete"))
        .collect();
    let image = match found.as_slice() {
        [] => anyhow::bail!(
            "cloud {} has no image '{name}' yet: {upload}",
            a.source_cloud
        ),
        [one] if one.status == "active" => one.clone(),
        [one] => anyhow::bail!(
            "image {} ('{name}') in cloud {} is still '{}'; generate the bundle once it is active",
            one.id,
            a.source_cloud,
            one.status
        ),
        many => anyhow::bail!(
            "cloud {} has {} images named '{name}'; give the one to migrate a unique name (--name)",
            a.source_cloud,
            many.len()
        ),
    };
    Ok(rbd_mirror_core::exec::bootable_request(
        b,
        &image,
        &name,
        vol.size_gib,
        dest,
    )?)
}

/// `--output json` prints the bundle's paths as JSON strings, which cannot hold a path that
/// is not UTF-8: refuse such an `--out` before anything is read or written.
fn check_out_printable(out: &OutArgs, format: OutputFormat) -> Result<()> {
    if format == OutputFormat::Json && out.out.to_str().is_none() {
        return Err(crate::exit::usage(anyhow::anyhow!(
            "--out {}: the path is not valid UTF-8, and --output json prints it as a JSON string; give a UTF-8 path, or drop --output json",
            out.out.display()
        )));
    }
    Ok(())
}

fn check_out_dir(out: &OutArgs) -> Result<()> {
    match std::fs::read_dir(&out.out) {
        Ok(mut entries) => {
            if entries.next().is_some() && !out.force {
                anyhow::bail!(
                    "{} is not empty; give an empty or new directory, or --force to replace the bundle's files in it",
                    out.out.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", out.out.display())),
    }
}

fn write(out: &OutArgs, bundle: &Bundle) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(&out.out)
        .with_context(|| format!("cannot create {}", out.out.display()))?;
    for f in &bundle.files {
        let path = out.out.join(&f.name);
        let mode = if f.executable { 0o755 } else { 0o644 };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        file.write_all(f.contents.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        // an existing file keeps its old mode with OpenOptions::mode
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .with_context(|| format!("cannot chmod {}", path.display()))?;
    }
    Ok(())
}

fn report(format: OutputFormat, dir: &Path, p: &Plan, bundle: &Bundle) {
    match format {
        OutputFormat::Json => {
            let files: Vec<serde_json::Value> = bundle
                .files
                .iter()
                .map(|f| {
                    let role = bundle
                        .scripts
                        .iter()
                        .map(|(s, _)| s)
                        .chain(&bundle.rollback)
                        .find(|s| s.file_name() == f.name)
                        .map(|s| s.role().to_string());
                    serde_json::json!({
                        "name": f.name,
                        "path": dir.join(&f.name),
                        "role": role,
                        "steps": bundle.scripts.iter().find(|(s, _)| s.file_name() == f.name).map(|(_, st)| st.iter().map(|i| i + 1).collect::<Vec<_>>()),
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({"result": "bundle", "id": p.id, "out": dir, "files": files})
            );
        }
        OutputFormat::Text => {
            println!("bundle of migration {} written to {}:", p.id, dir.display());
            for (n, (s, _)) in bundle.scripts.iter().enumerate() {
                println!("  {}. {:<34} run by the {}", n + 1, s.file_name(), s.role());
            }
            for s in &bundle.rollback {
                println!(
                    "  -. {:<34} run by the {} (only to roll a failed cutover back)",
                    s.file_name(),
                    s.role()
                );
            }
            println!("  README.md: who runs what, in which order, and what each hands to the next");
            if let Some((first, _)) = bundle.scripts.first() {
                println!(
                    "first: the {} runs sh ./{} (each script prints the next role's command line)",
                    first.role(),
                    first.file_name()
                );
            }
        }
    }
}
