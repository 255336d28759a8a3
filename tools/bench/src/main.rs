//! `bench`: measures rbd-relay on the local Ceph pair (testenv) and writes a report.
//!
//! For images of `--size-mib` (default 1024) it compares, in one run:
//! - the engine: `migrate_volume` from enabling mirroring to the verified copy;
//! - the one-pass floor: `rbd export site-a | rbd import site-b`;
//! - the runbook's way: `rbd feature enable`, `rbd mirror image enable`, poll
//!   `rbd mirror image status` until `up+replaying`, `rbd cp`;
//! - completion detection: a 20 Hz poller of the exact signal marks real completion; the
//!   engine's detection and the first status that agrees are measured against it.
//!
//! Timings are wall clock on a shared 2-core machine: run it alone, and read the numbers as
//! ratios within one run rather than absolutes.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use rbd_mirror_ceph::real::RbdCeph;
use rbd_mirror_core::event::{Event, EventSink};
use rbd_mirror_core::exec::{migrate_volume, RunOptions};
use rbd_mirror_core::features::MirrorImageMode;
use rbd_mirror_core::ops::CephOps;
use rbd_mirror_core::plan::VolumeMigration;
use rbd_mirror_core::spec::{ClusterSpec, ImageSpec, PoolSpec};
use rbd_mirror_core::status::SyncProgress;
use rbd_mirror_core::wait::{exact_completion, Completion};
use serde::Serialize;

/// Benchmark rbd-relay against the local pair and write a report.
#[derive(Debug, Parser)]
struct Args {
    /// Image sizes in MiB, each measured in every mode (rbd-mirror's start-up takes a
    /// fixed ~2 s, so the ratio to the floor depends on the size).
    #[arg(long, value_delimiter = ',', default_value = "1024")]
    size_mib: Vec<u64>,
    /// Modes to measure.
    #[arg(long, value_delimiter = ',', default_value = "journal,snapshot")]
    modes: Vec<String>,
    /// Where to write the report (Markdown; a .json twin is written next to it).
    #[arg(long, default_value = "target/bench-report.md")]
    out: String,
}

#[derive(Debug, Serialize)]
struct ModeResult {
    mode: String,
    size_mib: u64,
    engine_enable_to_verified_s: f64,
    engine_steps: Vec<(String, f64)>,
    floor_export_import_s: f64,
    runbook_s: f64,
    runbook_status_wait_s: f64,
    runbook_copy_s: f64,
    runbook_copy_complete: bool,
    real_completion_s: Option<f64>,
    /// When the replica image first existed on the destination (rbd-mirror mapped the image
    /// and bootstrapped it), seconds after the engine started.
    replica_created_s: Option<f64>,
    engine_detection_latency_s: Option<f64>,
    status_detection_latency_s: Option<f64>,
    runbook_started_copy_before_complete: bool,
    engine_vs_floor: f64,
    /// Peak resident memory of this process during the engine run (MiB; Linux `VmHWM`,
    /// reset before the run through `/proc/self/clear_refs`).
    engine_peak_rss_mib: Option<f64>,
}

/// Reset the process's peak RSS (`VmHWM`) to its current RSS.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak RSS in MiB since the last reset.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

fn sh(cmd: &str) -> Result<()> {
    let st = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdout(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("failed: {cmd}");
    }
    Ok(())
}

fn sh_out(cmd: &str) -> Result<String> {
    let o = Command::new("sh").arg("-c").arg(cmd).output()?;
    if !o.status.success() {
        bail!("failed: {cmd}: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Records when the engine reported the replica complete.
struct Detect {
    at: Mutex<Option<Instant>>,
}

impl EventSink for Detect {
    fn emit(&self, event: Event) {
        if let Event::Progress(p) = &event {
            if p.phase == "sync" && p.percent == Some(100.0) {
                let mut at = self.at.lock().unwrap_or_else(|e| e.into_inner());
                at.get_or_insert_with(Instant::now);
            }
        }
    }
}

/// Poll the exact signal at 20 Hz and the status at 4 Hz; record first completion of each.
fn watch(
    src: Arc<dyn CephOps>,
    dst: Arc<dyn CephOps>,
    image: ImageSpec,
    mode: MirrorImageMode,
    objects: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Option<Instant>, Option<Instant>, Option<Instant>)> {
    std::thread::spawn(move || {
        let (mut exact, mut status, mut created) = (None, None, None);
        let mut last_status = Instant::now() - Duration::from_secs(1);
        let deadline = Instant::now() + Duration::from_secs(180);
        while !stop.load(Ordering::Relaxed)
            && (exact.is_none() || status.is_none())
            && Instant::now() < deadline
        {
            if created.is_none() && matches!(dst.image_exists(&image), Ok(true)) {
                created = Some(Instant::now());
            }
            if exact.is_none() {
                // the engine's own exact signal
                let c = exact_completion(src.as_ref(), dst.as_ref(), &image, &image, mode, objects);
                if matches!(c, Ok(Completion::Complete)) {
                    exact = Some(Instant::now());
                }
            }
            if status.is_none() && last_status.elapsed() >= Duration::from_millis(250) {
                last_status = Instant::now();
                if let Ok(Some(st)) = dst.mirror_status(&image) {
                    if st.up && st.progress().percent() == Some(100.0) {
                        status = Some(Instant::now());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (exact, status, created)
    })
}

async fn bench_mode(
    env: &testenv::Env,
    src: Arc<dyn CephOps>,
    dst: Arc<dyn CephOps>,
    mode: MirrorImageMode,
    size_mib: u64,
    data: &str,
) -> Result<ModeResult> {
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let name = testenv::unique_name(&format!("bench-{mode}"));
    let spec = format!("volumes/{name}");
    eprintln!("[{mode}] importing {size_mib} MiB into {a}:{spec}");
    sh(&format!(
        "rbd --cluster {a} import --no-progress {data} {spec}"
    ))?;

    // the floor: one pass export | import
    let t = Instant::now();
    sh(&format!(
        "rbd --cluster {a} export --no-progress {spec} - | rbd --cluster {b} import --no-progress - cinder/{name}-floor"
    ))?;
    let floor = t.elapsed().as_secs_f64();
    sh(&format!(
        "rbd --cluster {b} rm --no-progress cinder/{name}-floor"
    ))?;
    eprintln!("[{mode}] floor {floor:.1}s");

    // the engine, with an independent exact-signal watcher
    let mut m = VolumeMigration::new(
        ClusterSpec::with_conf(&a, env.site_a().conf.clone())?,
        ClusterSpec::with_conf(&b, env.site_b().conf.clone())?,
        spec.parse()?,
        PoolSpec::new("cinder")?,
    );
    m.mode = mode;
    let image: ImageSpec = spec.parse()?;
    let objects = (size_mib << 20).div_ceil(4 << 20);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch(src.clone(), dst.clone(), image, mode, objects, stop.clone());
    let detect = Arc::new(Detect {
        at: Mutex::new(None),
    });
    let state = std::env::temp_dir().join(format!("bench-state-{name}"));
    reset_peak_rss();
    let t0 = Instant::now();
    let summary = migrate_volume(
        &m,
        src.clone(),
        dst.clone(),
        &state,
        &RunOptions::default(),
        detect.clone(),
    )
    .await
    .context("engine migration")?;
    let peak_rss = peak_rss_mib();
    stop.store(true, Ordering::Relaxed);
    let (exact, _, created) = watcher
        .join()
        .map_err(|_| anyhow::anyhow!("watcher panicked"))?;
    let engine_at = *detect.at.lock().unwrap_or_else(|e| e.into_inner());
    let steps: Vec<(String, f64)> = summary.steps.clone();
    let engine_total: f64 = steps
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "preflight" | "disable_mirroring" | "restore_features"
            )
        })
        .map(|(_, s)| s)
        .sum();
    let _ = t0;
    let lat = |x: Option<Instant>| match (x, exact) {
        (Some(x), Some(e)) => Some(x.saturating_duration_since(e).as_secs_f64()),
        _ => None,
    };
    eprintln!("[{mode}] engine {engine_total:.1}s");
    sh(&format!("rbd --cluster {b} rm --no-progress cinder/{name}"))?;
    let _ = std::fs::remove_dir_all(&state);

    // the runbook: features, mirror enable, poll status until up+replaying, rbd cp
    let rb = format!("{name}-rb");
    sh(&format!(
        "rbd --cluster {a} cp --no-progress {spec} volumes/{rb}"
    ))?;
    let t = Instant::now();
    if mode == MirrorImageMode::Journal {
        sh(&format!(
            "rbd --cluster {a} feature enable volumes/{rb} journaling"
        ))?;
    }
    sh(&format!(
        "rbd --cluster {a} mirror image enable volumes/{rb} {mode}"
    ))?;
    let rb_watch = watch(
        src.clone(),
        dst.clone(),
        format!("volumes/{rb}").parse()?,
        mode,
        objects,
        Arc::new(AtomicBool::new(false)),
    );
    let tw = Instant::now();
    loop {
        let s = sh_out(&format!(
            "rbd --cluster {b} mirror image status volumes/{rb} --format json 2>/dev/null || true"
        ))?;
        let v: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
        let replaying = v["state"] == "up+replaying";
        let idle_or_caught_up = v["description"]
            .as_str()
            .and_then(|d| d.strip_prefix("replaying, "))
            .map(|j| {
                matches!(
                    rbd_mirror_core::status::parse_progress(
                        rbd_mirror_core::status::MirrorState::Replaying,
                        &format!("replaying, {j}")
                    ),
                    SyncProgress::SnapshotIdle { .. } | SyncProgress::JournalReplay { .. }
                )
            })
            .unwrap_or(false);
        if replaying && idle_or_caught_up {
            break;
        }
        if tw.elapsed() > Duration::from_secs(900) {
            bail!("runbook: status never said up+replaying");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let status_wait = tw.elapsed().as_secs_f64();
    let tc = Instant::now();
    sh(&format!(
        "rbd --cluster {b} cp --no-progress volumes/{rb} cinder/{rb}"
    ))?;
    let copy = tc.elapsed().as_secs_f64();
    let runbook = t.elapsed().as_secs_f64();
    let same = sh_out(&format!(
        "rbd --cluster {a} export --no-progress volumes/{rb} - | sha256sum"
    ))? == sh_out(&format!(
        "rbd --cluster {b} export --no-progress cinder/{rb} - | sha256sum"
    ))?;
    eprintln!(
        "[{mode}] runbook {runbook:.1}s (copy complete: {same}); waiting for the status to agree"
    );
    let (rb_exact, rb_status, _) = rb_watch
        .join()
        .map_err(|_| anyhow::anyhow!("watcher panicked"))?;
    let status_latency = match (rb_status, rb_exact) {
        (Some(s), Some(e)) => Some(s.saturating_duration_since(e).as_secs_f64()),
        _ => None,
    };
    let runbook_early = match (rb_exact, Some(tw + Duration::from_secs_f64(status_wait))) {
        (Some(e), Some(w)) => w < e,
        _ => false,
    };
    sh(&format!(
        "rbd --cluster {a} mirror image disable volumes/{rb}"
    ))?;
    sh(&format!("rbd --cluster {b} rm --no-progress cinder/{rb}"))?;
    let t = Instant::now();
    while sh(&format!("rbd --cluster {b} info volumes/{rb} 2>/dev/null")).is_ok()
        && t.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(500));
    }
    sh(&format!("rbd --cluster {a} rm --no-progress volumes/{rb}"))?;
    sh(&format!("rbd --cluster {a} rm --no-progress {spec}"))?;

    Ok(ModeResult {
        mode: mode.to_string(),
        size_mib,
        engine_enable_to_verified_s: engine_total,
        engine_steps: steps,
        floor_export_import_s: floor,
        runbook_s: runbook,
        runbook_status_wait_s: status_wait,
        runbook_copy_s: copy,
        runbook_copy_complete: same,
        real_completion_s: exact.map(|e| e.saturating_duration_since(t0).as_secs_f64()),
        replica_created_s: created.map(|c| c.saturating_duration_since(t0).as_secs_f64()),
        engine_detection_latency_s: lat(engine_at),
        status_detection_latency_s: status_latency,
        runbook_started_copy_before_complete: runbook_early,
        engine_vs_floor: engine_total / floor,
        engine_peak_rss_mib: peak_rss,
    })
}

/// Write and remove the data once where the runs will put it (the source once, the
/// destination twice: replica and copy): a fresh memstore OSD allocates its memory on first
/// use, which made whichever mode ran first up to 3x slower, its floor included.
fn warm_up(env: &testenv::Env, data: &str, size: u64) -> Result<()> {
    let (a, b) = (&env.site_a().name, &env.site_b().name);
    wait_for_room(a, size)?;
    wait_for_room(b, 2 * size)?;
    let name = testenv::unique_name("bench-warm");
    eprintln!("warming up the clusters with {data}");
    for (site, image) in [
        (a, format!("volumes/{name}")),
        (b, format!("cinder/{name}-1")),
        (b, format!("cinder/{name}-2")),
    ] {
        sh(&format!(
            "rbd --cluster {site} import --no-progress {data} {image}"
        ))?;
    }
    for (site, image) in [
        (a, format!("volumes/{name}")),
        (b, format!("cinder/{name}-1")),
        (b, format!("cinder/{name}-2")),
    ] {
        sh(&format!("rbd --cluster {site} rm --no-progress {image}"))?;
    }
    Ok(())
}

/// Wait until `site` has room for `bytes` more plus 512 MiB (images removed by the previous
/// run are freed asynchronously); a full OSD would stall every write of the run.
fn wait_for_room(site: &str, bytes: u64) -> Result<()> {
    let want = bytes + (512 << 20);
    let t = Instant::now();
    loop {
        let df: serde_json::Value =
            serde_json::from_str(&sh_out(&format!("ceph --cluster {site} df --format json"))?)?;
        let (avail, total) = (
            df["stats"]["total_avail_bytes"].as_u64().unwrap_or(0),
            df["stats"]["total_bytes"].as_u64().unwrap_or(0),
        );
        let healthy = !sh_out(&format!("ceph --cluster {site} health"))?.contains("full");
        if avail >= want && healthy {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!(
                "{site} has {} MiB free of {} MiB (healthy: {healthy}), the bench needs {} MiB: use a smaller --size-mib, or a fresh environment (testenv down; testenv up)",
                avail >> 20,
                total >> 20,
                want >> 20
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn fmt(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |v| format!("{v:.2}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let env = testenv::shared().context("start the test environment (testenv up)")?;
    let src: Arc<dyn CephOps> = Arc::new(RbdCeph::connect(&ClusterSpec::with_conf(
        &env.site_a().name,
        env.site_a().conf.clone(),
    )?)?);
    let dst: Arc<dyn CephOps> = Arc::new(RbdCeph::connect(&ClusterSpec::with_conf(
        &env.site_b().name,
        env.site_b().conf.clone(),
    )?)?);
    let mut results = Vec::new();
    for &size_mib in &args.size_mib {
        let data = std::env::temp_dir().join(format!("bench-{size_mib}.bin"));
        if std::fs::metadata(&data).map(|m| m.len()).unwrap_or(0) != size_mib << 20 {
            sh(&format!(
                "head -c {} /dev/urandom > {}",
                size_mib << 20,
                data.display()
            ))?;
        }
        warm_up(&env, &data.display().to_string(), size_mib << 20)?;
        for m in &args.modes {
            let mode: MirrorImageMode = m.parse()?;
            wait_for_room(&env.site_a().name, 2 * (size_mib << 20))?;
            wait_for_room(&env.site_b().name, 2 * (size_mib << 20))?;
            results.push(
                bench_mode(
                    &env,
                    src.clone(),
                    dst.clone(),
                    mode,
                    size_mib,
                    &data.display().to_string(),
                )
                .await?,
            );
        }
        let _ = std::fs::remove_file(&data);
    }
    let mut md = format!(
        "# rbd-relay benchmark\n\nLocal pair (testenv, {} objectstore), images of random data, 2-core machine.\n\n",
        env.objectstore().as_str(),
    );
    md.push_str("| MiB | mode | engine enable->verified (s) | floor export\\|import (s) | engine/floor | runbook total (s) | runbook status wait (s) | runbook cp (s) | runbook copy complete | runbook copied before real completion | engine detection latency (s) | status detection latency (s) |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in &results {
        md.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} |\n",
            r.size_mib,
            r.mode,
            r.engine_enable_to_verified_s,
            r.floor_export_import_s,
            r.engine_vs_floor,
            r.runbook_s,
            r.runbook_status_wait_s,
            r.runbook_copy_s,
            r.runbook_copy_complete,
            r.runbook_started_copy_before_complete,
            fmt(r.engine_detection_latency_s),
            fmt(r.status_detection_latency_s)
        ));
    }
    md.push_str("\nEngine steps (s):\n\n");
    for r in &results {
        let s: Vec<String> = r
            .engine_steps
            .iter()
            .map(|(k, t)| format!("{k} {t:.2}"))
            .collect();
        md.push_str(&format!(
            "- {} MiB {}: {}\n",
            r.size_mib,
            r.mode,
            s.join(", ")
        ));
    }
    md.push_str("\nWhere the engine's time goes (seconds after the engine started): rbd-mirror's part ends at real completion and no engine built on rbd-mirror can be faster than it.\n\n| MiB | mode | replica created | replica complete (real) | rbd-mirror's part / floor | engine after completion (copy, verify) | peak RSS of the engine (MiB) |\n|---|---|---|---|---|---|---|\n");
    for r in &results {
        let after = r
            .real_completion_s
            .map(|c| format!("{:.1}", r.engine_enable_to_verified_s - c))
            .unwrap_or_else(|| "-".into());
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.size_mib,
            r.mode,
            fmt(r.replica_created_s),
            fmt(r.real_completion_s),
            r.real_completion_s
                .map(|c| format!("{:.2}", c / r.floor_export_import_s))
                .unwrap_or_else(|| "-".into()),
            after,
            r.engine_peak_rss_mib
                .map_or("n/a".into(), |m| format!("{m:.0}"))
        ));
    }
    md.push_str("\nDetection latency is measured from the first moment a 20 Hz poller of the exact signal saw the replica complete (engine: in the engine run; status: `rbd mirror image status` reaching up+replaying and caught up/idle, in the runbook run).\nTargets: engine detection <= 1 s; engine total <= 2x the floor.\n");
    if let Some(dir) = std::path::Path::new(&args.out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, &md)?;
    std::fs::write(
        format!("{}.json", args.out.trim_end_matches(".md")),
        serde_json::to_string_pretty(&results)?,
    )?;
    println!("{md}");
    println!("report written to {}", args.out);
    Ok(())
}
