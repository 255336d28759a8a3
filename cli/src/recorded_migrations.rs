//! The commands on a recorded migration (`resume`, `abort`, `cleanup`) and batches of
//! `migrate volume` (each of whose migrations is recorded): connect to what the state file
//! (or the flags) name, call the library, report. The logic is in `rbd-mirror-core` (`exec`, `abort`, `cleanup`, `batch`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use cinder_manage::Side;
use rbd_mirror_core::abort::{abort, plan_abort, AbortOptions};
use rbd_mirror_core::batch::{check_distinct, migrate_batch};
use rbd_mirror_core::cleanup::cleanup;
use rbd_mirror_core::cloud::CloudOps;
use rbd_mirror_core::event::EventSink;
use rbd_mirror_core::exec::{migrate, plan, Clouds, RunOptions};
use rbd_mirror_core::ops::CephOps;
use rbd_mirror_core::plan::{Origin, VolumeMigration};
use rbd_mirror_core::state;

use crate::args::VolumeArgs;
use crate::exit::{self, usage};
use crate::recorded_migration_args::{AbortArgs, CleanupArgs, CutoverArgs, ResumeArgs};
use crate::report::{Reporter, Tag, TaggedSink};
use rbd_mirror_openstack::OpenStackCloud;

/// The clouds a plan talks to, connected: the destination cloud it hands its copy to (none
/// for a Ceph-only plan) and the source cloud it uploads a bootable volume in. Both are
/// asked at once; when both fail, the error names both.
async fn plan_clouds(m: &VolumeMigration) -> Result<Clouds> {
    let wanted = m
        .adopt
        .as_ref()
        .map(|a| a.cloud.clone())
        .or_else(|| m.register.as_ref().map(|r| r.cloud.clone()));
    let destination = async {
        Ok(match wanted {
            Some(c) => Some(
                Arc::new(OpenStackCloud::connect(&c, Side::Destination).await?)
                    as Arc<dyn CloudOps>,
            ),
            None => None,
        })
    };
    let source = async {
        Ok(match &m.origin {
            Origin::Upload(u) => Some(Arc::new(
                OpenStackCloud::connect(&u.cloud, Side::Source).await?,
            ) as Arc<dyn CloudOps>),
            Origin::Image | Origin::InPlace => None,
        })
    };
    let (destination, source) = every_error2(tokio::join!(destination, source))?;
    Ok(Clouds {
        destination,
        source,
    })
}

/// The source and destination clusters of migration `m`, connected at once: when neither
/// can be reached (a missing conf or keyring on both sides), the error names both.
async fn clusters(m: &VolumeMigration) -> Result<(Arc<dyn CephOps>, Arc<dyn CephOps>)> {
    every_error2(tokio::join!(
        crate::connect(m.source.clone()),
        crate::connect(m.destination.clone())
    ))
}

/// The clouds and both clusters of migration `m`, connected at once, before anything is
/// read or changed. A refusal names every one that cannot be reached, not only the first,
/// so that one run shows all there is to fix.
pub async fn connect_all(
    m: &VolumeMigration,
) -> Result<(Clouds, Arc<dyn CephOps>, Arc<dyn CephOps>)> {
    let (clouds, clusters) = every_error2(tokio::join!(plan_clouds(m), clusters(m)))?;
    Ok((clouds, clusters.0, clusters.1))
}

/// Both results, or one error naming every failure among them (each once: an error that
/// already names several is not nested).
pub fn every_error2<A, B>((a, b): (Result<A>, Result<B>)) -> Result<(A, B)> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
        (Err(x), Err(y)) => {
            let mut lines = Vec::new();
            for e in [x, y] {
                match e.downcast_ref::<Unreachable>() {
                    Some(u) => lines.extend(u.0.iter().cloned()),
                    None => lines.push(exit::message(&e)),
                }
            }
            Err(Unreachable(lines).into())
        }
    }
}

/// Several things the command needs could not be reached; nothing was read or changed.
#[derive(Debug)]
pub struct Unreachable(pub Vec<String>);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} problems, nothing was changed; fix them and re-run:",
            self.0.len()
        )?;
        for line in &self.0 {
            write!(f, "\n  - {line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Unreachable {}

/// A migration id that is not a plain file name (a path, empty) is bad usage: refused with
/// exit 2 before anything is read, as `delete-source` does.
fn check_id(id: &str) -> Result<()> {
    state::check_migration_id(id).map_err(|e| usage(e.into()))
}

/// `resume ID`: the recorded plan, continued exactly (clusters and cloud from the plan).
pub async fn resume(
    args: ResumeArgs,
    state_dir: &Path,
    reporter: Arc<Reporter>,
) -> Result<ExitCode> {
    check_id(&args.id)?;
    let run = state::resumable(state_dir, &args.id)?;
    let m = run.plan.migration.clone();
    let clouds = plan_clouds(&m).await?;
    let (src, dst) = clusters(&m).await?;
    let mut opts = RunOptions::default();
    opts.wait.stall_after = std::time::Duration::from_secs(args.stall_timeout);
    opts.wait.on_daemon_down = args.on_daemon_down.into();
    crate::interrupt::continue_with(format!("rbd-relay resume {}", args.id));
    let summary = migrate(&m, src, dst, &clouds, state_dir, &opts, reporter.clone()).await;
    reporter.finish();
    reporter.summary(&summary?);
    Ok(ExitCode::SUCCESS)
}

/// `abort ID`.
pub async fn abort_cmd(
    args: AbortArgs,
    state_dir: &Path,
    reporter: Arc<Reporter>,
) -> Result<ExitCode> {
    check_id(&args.id)?;
    let run = state::recorded(state_dir, &args.id)?;
    let m = &run.plan.migration;
    let (src, dst) = clusters(m).await?;
    let opts = AbortOptions {
        discard_verified_copy: args.discard_verified_copy,
        ..Default::default()
    };
    if args.dry_run {
        reporter.undo_plan(&plan_abort(state_dir, &args.id, dst, opts).await?);
        return Ok(ExitCode::SUCCESS);
    }
    crate::interrupt::continue_with(format!("rbd-relay abort {}", args.id));
    let r = abort(state_dir, &args.id, src, dst, opts, reporter.clone()).await;
    reporter.finish();
    reporter.aborted(&r?);
    Ok(ExitCode::SUCCESS)
}

/// `cutover ID [--force]`: ask the running live migration to cut over now.
pub async fn cutover_cmd(args: CutoverArgs, state_dir: &Path) -> Result<ExitCode> {
    check_id(&args.id)?;
    let run = state::recorded(state_dir, &args.id)?;
    let m = &run.plan.migration;
    let (src, dst) = clusters(m).await?;
    let r =
        rbd_mirror_core::exec::request_cutover(state_dir, &args.id, src, dst, args.force).await?;
    if r.users.is_empty() {
        outln!(
            "cutover of {} requested; the running migration starts it within a second",
            args.id
        );
    } else {
        outln!(
            "cutover of {} requested with --force; these users lose write access at the demotion: {}",
            args.id,
            r.users
                .iter()
                .map(|u| u.describe())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `cleanup ID [--forget]`.
pub async fn cleanup_cmd(
    args: CleanupArgs,
    state_dir: &Path,
    reporter: Arc<Reporter>,
) -> Result<ExitCode> {
    check_id(&args.id)?;
    let run = state::recorded(state_dir, &args.id)?;
    let m = &run.plan.migration;
    let (src, dst) = clusters(m).await?;
    crate::interrupt::continue_with(format!("rbd-relay cleanup {}", args.id));
    let r = cleanup(state_dir, &args.id, src, dst, args.forget, reporter.clone()).await;
    reporter.finish();
    reporter.cleaned(&r?);
    Ok(ExitCode::SUCCESS)
}

/// `migrate volume A B ... [--from-file LIST] [--parallel N]`: every image validated before
/// anything connects (bad input changes nothing), then each image its own migration.
pub async fn batch(
    args: &VolumeArgs,
    images: Vec<String>,
    state_dir: &Path,
    reporter: Arc<Reporter>,
) -> Result<ExitCode> {
    let source_cloud = match &args.source_cloud {
        Some(name) => Some((name, OpenStackCloud::connect(name, Side::Source).await?)),
        None => None,
    };
    let mut ms = Vec::new();
    for image in &images {
        let source = match &source_cloud {
            Some((name, c)) => Some(
                c.source_volume(image)
                    .await
                    .map_err(|e| anyhow!("source cloud {name}: {e}"))?,
            ),
            None => None,
        };
        ms.push(
            args.to_migration(image, source.as_ref())
                .with_context(|| format!("'{image}'"))
                .map_err(usage)?,
        );
    }
    if ms.is_empty() {
        return Err(usage(anyhow!(
            "no image given; give POOL/IMAGE or --from-file LIST"
        )));
    }
    check_distinct(&ms).map_err(|e| usage(e.into()))?;
    let clouds = match ms.first() {
        Some(m) => plan_clouds(m).await?,
        None => Clouds::default(),
    };
    let (src, dst) = clusters(&ms[0]).await?;
    let tags: BTreeMap<String, String> = ms.iter().map(|m| (m.id(), m.image.to_string())).collect();
    let tag = |id: &str| Tag {
        id: id.to_string(),
        label: tags.get(id).cloned().unwrap_or_else(|| id.to_string()),
    };
    if args.dry_run {
        let mut failed = 0;
        for m in &ms {
            let sink: Arc<dyn EventSink> = Arc::new(TaggedSink {
                tag: tag(&m.id()),
                reporter: reporter.clone(),
            });
            match plan(m, src.clone(), dst.clone(), &clouds, state_dir, sink).await {
                Ok((p, recorded)) => reporter.plan(&p, recorded.as_ref()),
                Err(e) => {
                    failed += 1;
                    eprintln!(
                        "rbd-relay: error: {}: {}",
                        m.image,
                        exit::message(&e.into())
                    );
                }
            }
        }
        return Ok(ExitCode::from(if failed == 0 {
            exit::OK
        } else {
            exit::SOME_FAILED
        }));
    }
    let mut opts = RunOptions::default();
    opts.wait.stall_after = std::time::Duration::from_secs(args.stall_timeout);
    opts.wait.on_daemon_down = args.on_daemon_down.into();
    reporter.batch_start(ms.len());
    let items = migrate_batch(
        ms,
        src,
        dst,
        &clouds,
        state_dir,
        &opts,
        usize::from(args.parallel),
        |m| {
            crate::interrupt::continue_with(format!("rbd-relay resume {}", m.id()));
            Arc::new(TaggedSink {
                tag: tag(&m.id()),
                reporter: reporter.clone(),
            })
        },
        |item| reporter.batch_item(&tag(&item.id), item),
    )
    .await;
    reporter.batch_summary(&items);
    Ok(ExitCode::from(if items.iter().all(|i| i.ok()) {
        exit::OK
    } else {
        exit::SOME_FAILED
    }))
}
