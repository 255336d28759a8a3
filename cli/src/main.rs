//! `rbd-relay`: move Ceph RBD volumes between clusters through rbd-mirror.
//!
//! The binary is thin: parse flags ([`args`]), validate them into library types, build the
//! plan, run it, report ([`report`]). All logic lives in `rbd-mirror-core`.

/// `print!` for stdout that never panics: std's `print!` panics ("failed printing to
/// stdout: Broken pipe", exit code 101) when the reader went away, as in
/// `rbd-relay list | head -1`. Write errors are dropped, like those of the JSON lines.
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = $crate::write_stdout(format!($($arg)*).as_bytes());
    }};
}

/// `println!` for stdout that never panics; see [`out!`].
macro_rules! outln {
    ($($arg:tt)*) => {{
        let _ = $crate::write_stdout(format!("{}\n", format_args!($($arg)*)).as_bytes());
    }};
}

mod args;
mod bundle;
mod exit;
mod gen;
mod interrupt;
mod progress;
mod recorded_migration_args;
mod recorded_migrations;
mod report;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use cinder_manage::Side;
use clap::Parser;
use rbd_mirror_ceph::real::RbdCeph;
use rbd_mirror_core::cloud::CloudOps;
use rbd_mirror_core::exec::{
    adopt_image, migrate, migrate_bootable, plan, plan_bootable, register_image, Clouds, RunOptions,
};
use rbd_mirror_core::ops::CephOps;
use rbd_mirror_core::spec::ClusterSpec;
use rbd_mirror_core::state;

use args::{AdoptCommand, Cli, Command, MigrateCommand, OutputFormat, RegisterCommand};
use rbd_mirror_openstack::OpenStackCloud;
use report::Reporter;

/// Write `bytes` to stdout. A reader that went away (`| head`) is not an error: there is
/// nobody left to tell. Other errors (a full disk behind `>`) are returned.
fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

/// Printed if the process is aborted (see [`librbd::explain_aborts`]).
const ABORT_EXPLAINED: &str = "\nrbd-relay: stopped by SIGABRT. If the lines above end in \"terminate called after throwing an instance of ...\", Ceph's client library (librados/librbd) aborted the process: Ceph 16.2 can do that while it closes an image on a loaded machine. Every finished step is recorded in the state file and the others repeat safely: run the same command again to continue (`rbd-relay list` shows where each migration stopped).\n";

fn main() {
    let code = run_to_the_end();
    // The Ceph connections were left open (`librbd::leave_connections_to_process_exit`);
    // a normal exit would run librados' static destructors under their threads, so the
    // process ends here, once what it printed is out.
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    librbd::exit_immediately(exit::status_of(code))
}

fn run_to_the_end() -> ExitCode {
    let cli = Cli::parse(); // bad usage: clap prints it and exits with 2 (exit::USAGE)
    librbd::leave_connections_to_process_exit();
    librbd::explain_aborts(ABORT_EXPLAINED);
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let json = cli.output == OutputFormat::Json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rbd-relay: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // SIGINT/SIGTERM stop any command at once with a word and the command that continues
    // it; `status --watch` treats Ctrl-C as its normal end instead
    let watching = matches!(&cli.command, Command::Status(a) if a.watch);
    let result = runtime.block_on(async {
        if watching {
            return Ok(run(cli).await);
        }
        tokio::select! {
            r = run(cli) => Ok(r),
            sig = interrupt::signal() => Err(sig),
        }
    });
    let result = match result {
        Ok(r) => r,
        Err(sig) => {
            // the work in flight is dropped at its next await. A blocking Ceph call in
            // flight (a promotion, a snapshot) gets up to 1.2 s to end and close its image:
            // cut off, it could leave the image's exclusive lock to a dead client, which
            // the next run would wait out (Ceph's watch timeout). Longer calls (a
            // verification's read, a flatten) end with the process, as after a kill.
            runtime.shutdown_timeout(std::time::Duration::from_millis(1200));
            let message = interrupt::message(sig);
            if json {
                outln!(
                    "{}",
                    serde_json::json!({"result": "interrupted", "signal": sig.name(), "error": message})
                );
            }
            eprintln!("\n{message}");
            // a Ceph call may still run on a blocking thread (a read of the verification,
            // a flatten): a normal exit would tear librados down under it and the process
            // could die by a signal instead of exiting 130/143, so end it at once
            use std::io::Write;
            let _ = std::io::stdout().flush();
            let _ = std::io::stderr().flush();
            librbd::exit_immediately(sig.exit_code());
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let next = interrupt::after_failure(&e);
            if json {
                outln!(
                    "{}",
                    serde_json::json!({"result": "error", "error": exit::message(&e), "next": next})
                );
            }
            eprintln!("rbd-relay: error: {}", exit::message(&e));
            if let Some(next) = next {
                eprintln!("rbd-relay: {next}");
            }
            exit::of_error(&e)
        }
    }
}

pub(crate) async fn connect(spec: ClusterSpec) -> Result<Arc<dyn CephOps>> {
    let name = spec.name.clone();
    let ops = tokio::task::spawn_blocking(move || RbdCeph::connect(&spec))
        .await?
        .with_context(|| format!("cannot connect to Ceph cluster '{name}'"))?;
    Ok(Arc::new(ops))
}

/// A raw connection for the commands that work on pools rather than through `CephOps`.
async fn connect_cluster(spec: ClusterSpec) -> Result<librbd::Cluster> {
    let name = spec.name.clone();
    let ops = tokio::task::spawn_blocking(move || RbdCeph::connect(&spec))
        .await?
        .with_context(|| format!("cannot connect to Ceph cluster '{name}'"))?;
    Ok(ops.cluster().clone())
}

/// `status POOL[/IMAGE] --cluster C [--watch]`.
async fn status(args: args::StatusArgs, reporter: Arc<Reporter>) -> Result<ExitCode> {
    let (spec, target) = args.validate()?;
    if !spec.conf.exists() {
        anyhow::bail!(
            "no conf file {} for cluster '{}'; pass --conf or install the conf and keyring under /etc/ceph",
            spec.conf.display(),
            spec.name
        );
    }
    let cluster = connect_cluster(spec).await?;
    let deadline = args
        .watch_seconds
        .map(|s| tokio::time::Instant::now() + std::time::Duration::from_secs(s));
    loop {
        // without a pool: every pool with mirroring enabled, listed anew on each refresh
        let pools = match &target {
            Some((pool, image)) => vec![(pool.pool.clone(), image.clone())],
            None => {
                let c = cluster.clone();
                let pools = tokio::task::spawn_blocking(move || {
                    rbd_mirror_ceph::pairing::mirrored_pools(&c).map_err(Box::new)
                })
                .await?
                .map_err(|e| *e)?;
                if pools.is_empty() {
                    reporter.no_mirrored_pools(cluster.name());
                }
                pools.into_iter().map(|p| (p, None)).collect()
            }
        };
        for (p, i) in pools {
            let c = cluster.clone();
            let st = tokio::task::spawn_blocking(move || {
                rbd_mirror_ceph::pairing::pool_status(&c, &p, i.as_deref()).map_err(Box::new)
            })
            .await?;
            match st.map_err(|e| *e) {
                Ok(st) => reporter.status(&st),
                // watching a migration: its image is mirror-enabled only from its first
                // seconds until its cleanup, so keep watching across both ends
                Err(rbd_mirror_ceph::pairing::PairError::NoImage {
                    cluster,
                    pool,
                    image,
                }) if args.watch => reporter.not_mirrored(&cluster, &pool, &image),
                Err(e) => return Err(e.into()),
            }
        }
        if !args.watch || deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return Ok(ExitCode::SUCCESS);
        }
        let mut wait = std::time::Duration::from_secs(2);
        if let Some(d) = deadline {
            wait = wait.min(d.saturating_duration_since(tokio::time::Instant::now()));
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    interrupt::set_state_dir(cli.state_dir.clone());
    let state_dir = cli
        .state_dir
        .clone()
        .unwrap_or_else(rbd_mirror_core::state::StateFile::default_dir);
    let logs = cli.verbose > 0 || std::env::var_os("RUST_LOG").is_some();
    let reporter = Arc::new(Reporter::new(cli.output, cli.quiet).with_bars(!logs));
    match cli.command {
        Command::Migrate(migrate_cmd) => match *migrate_cmd {
            MigrateCommand::Volume(args) => migrate_volume(args, &state_dir, reporter).await,
            MigrateCommand::Bootable(args) => {
                let (b, dest) = args.to_migration()?;
                // everything at once: a refusal names each that cannot be reached
                let (clouds, clusters) = recorded_migrations::every_error2(tokio::join!(
                    async {
                        let (source, destination) =
                            recorded_migrations::every_error2(tokio::join!(
                                async {
                                    Ok(OpenStackCloud::connect(&args.source_cloud, Side::Source)
                                        .await?)
                                },
                                async {
                                    Ok(OpenStackCloud::connect(&dest, Side::Destination).await?)
                                },
                            ))?;
                        Ok(Clouds {
                            source: Some(Arc::new(source)),
                            destination: Some(Arc::new(destination)),
                        })
                    },
                    async {
                        recorded_migrations::every_error2(tokio::join!(
                            connect(b.source.clone()),
                            connect(b.destination.clone())
                        ))
                    }
                ))?;
                let (src, dst) = clusters;
                if args.dry_run {
                    let (p, recorded) =
                        plan_bootable(&b, src, dst, &clouds, &state_dir, reporter.clone()).await?;
                    reporter.plan(&p, recorded.as_ref());
                    return Ok(ExitCode::SUCCESS);
                }
                let mut opts = RunOptions::default();
                opts.wait.stall_after = std::time::Duration::from_secs(args.stall_timeout);
                opts.wait.on_daemon_down = args.on_daemon_down.into();
                let summary =
                    migrate_bootable(&b, src, dst, &clouds, &state_dir, &opts, reporter.clone())
                        .await;
                reporter.finish();
                reporter.summary(&summary?);
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Register(RegisterCommand::Image(args)) => {
            let (image, cluster, r) = args.to_request()?;
            let cloud: Arc<dyn CloudOps> =
                Arc::new(OpenStackCloud::connect(&r.cloud, Side::Destination).await?);
            let dst = connect(cluster).await?;
            let i = register_image(cloud, dst, &image, &r, reporter.clone()).await?;
            reporter.registered(&r.cloud, &i);
            Ok(ExitCode::SUCCESS)
        }
        Command::Adopt(AdoptCommand::Volume(args)) => {
            let (image, adoption) = args.to_request()?;
            let cloud: Arc<dyn CloudOps> =
                Arc::new(OpenStackCloud::connect(&adoption.cloud, Side::Destination).await?);
            let v = adopt_image(cloud, &image, &adoption, reporter.clone()).await?;
            reporter.adopted(&adoption.cloud, &image.pool.to_string(), &v);
            Ok(ExitCode::SUCCESS)
        }
        Command::DeleteSource(args) => delete_source(args, &state_dir, reporter).await,
        Command::Pair(args) => {
            let (from, to, pool) = args.validate()?;
            let direction = args.direction.peer();
            let from = connect_cluster(from).await?;
            let to = connect_cluster(to).await?;
            let (f, t, p) = (from.clone(), to.clone(), pool.pool.clone());
            let report = tokio::task::spawn_blocking(move || {
                rbd_mirror_ceph::pairing::pair(&f, &t, &p, direction).map_err(anyhow::Error::from)
            })
            .await??;
            reporter.paired(&report);
            if !args.no_wait {
                let timeout = std::time::Duration::from_secs(args.wait_timeout);
                let r = reporter.clone();
                let waited = tokio::task::spawn_blocking(move || {
                    let mut tick = |w: std::time::Duration| r.waiting_for_daemon(&to, &from, w);
                    rbd_mirror_ceph::pairing::wait_daemon_connected(
                        &from, &to, &pool.pool, timeout, &mut tick,
                    )
                    .map_err(anyhow::Error::from)
                })
                .await??;
                reporter.daemon_connected(&report, waited);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(args) => status(args, reporter).await,
        Command::Bundle(cmd) => bundle::run(*cmd, cli.output, &state_dir, reporter).await,
        Command::Resume(args) => recorded_migrations::resume(args, &state_dir, reporter).await,
        Command::Abort(args) => recorded_migrations::abort_cmd(args, &state_dir, reporter).await,
        Command::Cutover(args) => recorded_migrations::cutover_cmd(args, &state_dir).await,
        Command::Cleanup(args) => {
            recorded_migrations::cleanup_cmd(args, &state_dir, reporter).await
        }
        Command::Completions(args) => {
            // generated into memory first: clap_complete panics on a write error
            let mut text = Vec::new();
            gen::completions(args.shell, &mut text);
            write_stdout(&text).context("writing the completions")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man(args) => {
            match &args.out {
                Some(dir) => {
                    for p in gen::man_pages(dir)? {
                        outln!("{}", p.display());
                    }
                }
                None => {
                    let mut page = Vec::new();
                    gen::man(&mut page)?;
                    write_stdout(&page).context("writing the man page")?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::List => {
            let (all, unreadable) = state::list_all(&state_dir)?;
            for (path, why) in &unreadable {
                eprintln!("rbd-relay: warning: skipping {}: {why}", path.display());
            }
            reporter.list(&all);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn migrate_volume(
    args: args::VolumeArgs,
    state_dir: &std::path::Path,
    reporter: Arc<Reporter>,
) -> Result<ExitCode> {
    let images = recorded_migration_args::image_list(&args).map_err(exit::usage)?;
    let [image] = images.as_slice() else {
        return recorded_migrations::batch(&args, images, state_dir, reporter).await;
    };
    let source = match &args.source_cloud {
        Some(name) => {
            let c = OpenStackCloud::connect(name, Side::Source).await?;
            let v = c
                .source_volume(image)
                .await
                .map_err(|e| anyhow!("source cloud {name}: {e}"))?;
            Some(v)
        }
        None => None,
    };
    let m = args
        .to_migration(image, source.as_ref())
        .map_err(exit::usage)?;
    // the clouds and both clusters at once: a refusal names each that cannot be reached
    let (clouds, src, dst) = recorded_migrations::connect_all(&m).await?;
    if args.dry_run {
        let (plan, recorded) = plan(&m, src, dst, &clouds, state_dir, reporter.clone()).await?;
        reporter.plan(&plan, recorded.as_ref());
        return Ok(ExitCode::SUCCESS);
    }
    let mut opts = RunOptions::default();
    opts.wait.stall_after = std::time::Duration::from_secs(args.stall_timeout);
    opts.wait.on_daemon_down = args.on_daemon_down.into();
    interrupt::continue_once_recorded(
        format!("rbd-relay resume {}", m.id()),
        rbd_mirror_core::state::StateFile::path_for(state_dir, &m.id()),
    );
    let summary = migrate(&m, src, dst, &clouds, state_dir, &opts, reporter.clone()).await;
    reporter.finish();
    let summary = summary?;
    reporter.summary(&summary);
    Ok(ExitCode::SUCCESS)
}

/// `delete-source ID`: re-verify, confirm, delete the source image.
async fn delete_source(
    args: args::DeleteSourceArgs,
    state_dir: &std::path::Path,
    reporter: Arc<Reporter>,
) -> Result<ExitCode> {
    use std::io::{BufRead, IsTerminal, Write};
    state::check_migration_id(&args.id).map_err(|e| exit::usage(e.into()))?;
    let path = rbd_mirror_core::state::StateFile::path_for(state_dir, &args.id);
    let run = state::load(&path)?.with_context(|| {
        format!(
            "no migration '{}' is recorded in {}; see `rbd-relay list`",
            args.id,
            state_dir.display()
        )
    })?;
    let copy = args
        .copy
        .as_deref()
        .map(str::parse)
        .transpose()
        .context("--copy")?;
    let m = &run.plan.migration;
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!(
                "refusing to delete {}:{} without confirmation; re-run with --yes",
                m.source.name,
                m.image
            );
        }
        eprint!(
            "delete the source image {}:{} after re-verifying its copy? type 'yes': ",
            m.source.name, m.image
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != "yes" {
            anyhow::bail!("not confirmed; nothing was deleted");
        }
    }
    let src = connect(m.source.clone()).await?;
    let dst = connect(m.destination.clone()).await?;
    let report = rbd_mirror_core::delete::delete_source(
        state_dir,
        &args.id,
        copy,
        src,
        dst,
        reporter.clone(),
    )
    .await?;
    reporter.deleted(&report);
    Ok(ExitCode::SUCCESS)
}
