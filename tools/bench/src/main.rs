//! `bench`: measures rbd-relay on the local Ceph pair (testenv) and writes a report.
//!
//! For images of `--size-mib` (default 1024), in each mode, in one run, every run reported:
//! - the one-pass floor: `rbd export site-a | rbd import site-b` of the image;
//! - cold, the engine with the handover by clone: from enabling mirroring to the
//!   destination image usable (`clone_replica` done), and to the end of the run (verified,
//!   flattened, source released, replica removed);
//! - cold, the engine with the handover by copy on the same image, for comparison (usable =
//!   the copy verified), with completion detection: a 20 Hz poller of the exact signal
//!   marks real completion and the engine's detection is measured against it;
//! - live, the engine with the clone handover while a writer (random 4-64 KiB blocks at
//!   `--write-mib-s`) writes to the source; the writer stops a while after the replica is
//!   in sync, and the downtime is from its last write to the destination usable;
//! - (`--runbook`) the runbook's way: `rbd feature enable`, `rbd mirror image enable`,
//!   poll `rbd mirror image status` until `up+replaying`, `rbd cp`.
//!
//! Each engine migration runs in a child process (this binary, `--engine-child`) that
//! streams its events as JSON lines; they are timestamped here as they arrive, and the
//! child reports its own peak RSS (`VmHWM`) at the end: the engine's memory, nothing else.
//!
//! Timings are wall clock on a shared 2-core machine: run it alone, and read the numbers as
//! ratios within one run rather than absolutes.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use rbd_mirror_ceph::real::RbdCeph;
use rbd_mirror_core::event::Event;
use rbd_mirror_core::exec::{migrate_volume, RunOptions, Summary};
use rbd_mirror_core::features::MirrorImageMode;
use rbd_mirror_core::ops::CephOps;
use rbd_mirror_core::plan::{Handover, Live, VolumeMigration};
use rbd_mirror_core::spec::{ClusterSpec, ImageSpec, PoolSpec};
use rbd_mirror_core::status::SyncProgress;
use rbd_mirror_core::wait::{
    exact_completion, journal_completion, newest_primary_mirror_snapshot, snapshot_completion,
    Completion,
};
use serde::{Deserialize, Serialize};
use testenv::writer::Writer;

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
    /// Live runs: seconds the source must have had no user before the cutover starts
    /// (`--idle-for` of `rbd-relay migrate volume --live`; part of the downtime).
    #[arg(long, default_value_t = 2.0)]
    idle_for: f64,
    /// Live runs: the writer's rate in MiB/s.
    #[arg(long, default_value_t = 20.0)]
    write_mib_s: f64,
    /// Live runs: seconds the writer keeps writing after the replica is in sync.
    #[arg(long, default_value_t = 3.0)]
    write_after_sync_s: f64,
    /// Also measure the runbook's way (feature enable, mirror enable, poll status, rbd cp).
    #[arg(long)]
    runbook: bool,
    /// Only the live runs (no floor, no cold runs): for measuring the downtime alone.
    #[arg(long)]
    live_only: bool,
    /// Journal mode: the live run once per rbd-mirror replay configuration, side by side
    /// (the cold runs under the first): `testenv` (testenv's daemon config: fetch 32 KiB per
    /// read, poll every 1 s), `ceph-default` (Ceph's defaults: 32 KiB, 5 s), `fetch` (32 MiB
    /// per read, 1 s) and `tuned` (Ceph's documented migration tuning: 32 MiB per read and
    /// the writer's `rbd_journal_max_payload_bytes` 8 MiB, 1 s). Set at run time on the
    /// destination daemon's admin socket (read when it starts an image's replay) and, for the
    /// writer, in site-a's `client` config; put back to `testenv` after. Empty: as the pair is.
    /// Ceph 16 has no `rbd_mirror_journal_max_fetch_bytes` (the daemon's admin socket takes
    /// the `config set` and answers ENOENT to `config get`, which the log shows): there
    /// `fetch` is a repeat of `testenv`, and `tuned` differs from it by the writer's payload.
    #[arg(long, value_delimiter = ',')]
    journal_tunings: Vec<String>,
    /// Where to write the report (Markdown; a .json twin is written next to it).
    #[arg(long, default_value = "target/bench-report.md")]
    out: String,
    /// Internal: run one engine migration (JSON of [`ChildJob`]) and stream its events.
    #[arg(long, hide = true)]
    engine_child: Option<String>,
}

/// What the child process runs.
#[derive(Debug, Serialize, Deserialize)]
struct ChildJob {
    migration: VolumeMigration,
    state_dir: PathBuf,
}

/// The child's last line.
#[derive(Debug, Serialize, Deserialize)]
struct ChildDone {
    summary: Summary,
    /// Peak RSS of the child process over its whole life (MiB, `VmHWM`).
    peak_rss_mib: Option<f64>,
}

/// One engine migration as seen from here.
#[derive(Debug, Clone, Serialize)]
struct EngineRun {
    handover: String,
    live: bool,
    /// From the first step after preflight starting to the destination usable
    /// (clone: `clone_replica` done; copy: `verify` done).
    enable_to_usable_s: f64,
    /// From the first step after preflight starting to the end of the run (verified,
    /// source put back, replica removed).
    enable_to_end_s: f64,
    /// Seconds per step, as the engine reports them.
    steps: Vec<(String, f64)>,
    /// Peak RSS of the engine's process (MiB, `VmHWM` of a child process that only runs
    /// the migration).
    peak_rss_mib: Option<f64>,
    /// The child's RSS once connected to both clusters, before the migration (MiB).
    connected_rss_mib: Option<f64>,
    /// The child's peak RSS so far at the end of each step (MiB): where the peak is reached.
    step_peaks: Vec<(String, f64)>,
}

#[derive(Debug, Serialize)]
struct LiveRun {
    engine: EngineRun,
    idle_for_s: f64,
    write_mib_s: f64,
    /// Seconds the writer kept writing after the replica was in sync.
    write_after_sync_s: f64,
    writer_bytes: u64,
    writer_writes: u64,
    /// From the engine's start to the replica in sync (`wait_for_cutover` started).
    in_sync_s: Option<f64>,
    /// Last write to `clone_replica` done.
    downtime_s: f64,
    downtime_minus_idle_for_s: f64,
    /// Last write -> writer closed the image; -> wait_for_cutover done; demote, promote,
    /// clone steps.
    breakdown: Vec<(String, f64)>,
    /// When the replica held everything up to the last write by the exact signal (a
    /// poller at 10 Hz from the replica in sync to the promotion), seconds after the last
    /// write, and whether that was before the source's demotion started.
    caught_up: Option<(f64, bool)>,
    /// sha256 of the destination equals the source's, both read after the run.
    sha256_equal: bool,
}

#[derive(Debug, Serialize)]
struct Runbook {
    total_s: f64,
    status_wait_s: f64,
    copy_s: f64,
    copy_complete: bool,
    started_copy_before_complete: bool,
    status_detection_latency_s: Option<f64>,
}

#[derive(Debug, Serialize)]
struct ModeResult {
    /// The mode, with the journal tuning in brackets when one was set (`journal [tuned]`).
    mode: String,
    /// The rbd-mirror replay configuration of this row (`--journal-tunings`), if set.
    journal_tuning: Option<String>,
    size_mib: u64,
    /// The floor and the cold runs (none with `--live-only`).
    cold: Option<Cold>,
    live: LiveRun,
    runbook: Option<Runbook>,
}

#[derive(Debug, Serialize)]
struct Cold {
    floor_export_import_s: f64,
    clone: EngineRun,
    copy: EngineRun,
    clone_usable_vs_floor: f64,
    clone_end_vs_floor: f64,
    copy_usable_vs_floor: f64,
    /// Copy run: real completion (exact signal, 20 Hz poller), seconds after the engine
    /// started.
    real_completion_s: Option<f64>,
    replica_created_s: Option<f64>,
    engine_detection_latency_s: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    date: String,
    objectstore: String,
    ceph_versions: Vec<(String, String)>,
    osd_objectstores: Vec<(String, String)>,
    cpus: String,
    results: Vec<ModeResult>,
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

/// The process's peak RSS in MiB.
fn peak_rss_mib() -> Option<f64> {
    proc_status_mib("VmHWM:")
}

/// A `kB` field of `/proc/self/status` in MiB.
fn proc_status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Child side: run one migration, print each event as a JSON line, then [`ChildDone`].
async fn engine_child(job: &str) -> Result<()> {
    let job: ChildJob = serde_json::from_str(job).context("engine child job")?;
    let m = &job.migration;
    let src: Arc<dyn CephOps> = Arc::new(RbdCeph::connect(&m.source)?);
    let dst: Arc<dyn CephOps> = Arc::new(RbdCeph::connect(&m.destination)?);
    println!(
        "{}",
        serde_json::json!({ "connected_rss_mib": proc_status_mib("VmRSS:") })
    );
    let sink = |e: Event| {
        if let Ok(line) = serde_json::to_string(&e) {
            println!("{line}");
        }
        if let Event::StepDone { step, .. } = &e {
            println!(
                "{}",
                serde_json::json!({ "step_peak": { "step": step, "mib": peak_rss_mib() } })
            );
        }
    };
    let summary = migrate_volume(
        m,
        src,
        dst,
        &job.state_dir,
        &RunOptions::default(),
        Arc::new(sink),
    )
    .await
    .context("engine migration")?;
    let done = ChildDone {
        summary,
        peak_rss_mib: peak_rss_mib(),
    };
    println!(
        "{}",
        serde_json::to_string(&serde_json::json!({ "done": done }))?
    );
    Ok(())
}

/// Events of a child run, stamped when they arrived here.
#[derive(Default)]
struct Timeline {
    events: Vec<(Instant, Event)>,
    /// The child's RSS once connected to both clusters, before the migration (MiB).
    connected_rss_mib: Option<f64>,
    /// The child's peak RSS so far at the end of each step (MiB).
    step_peaks: Vec<(String, f64)>,
}

impl Timeline {
    fn started(&self, step: &str) -> Option<Instant> {
        self.events.iter().find_map(|(t, e)| match e {
            Event::StepStarted { step: s, .. } if s == step => Some(*t),
            _ => None,
        })
    }

    fn done(&self, step: &str) -> Option<Instant> {
        self.events.iter().find_map(|(t, e)| match e {
            Event::StepDone { step: s, .. } if s == step => Some(*t),
            _ => None,
        })
    }

    /// When the first step after preflight started (mirroring begins being set up).
    fn enable_started(&self) -> Option<Instant> {
        self.events.iter().find_map(|(t, e)| match e {
            Event::StepStarted { step, .. } if step != "preflight" => Some(*t),
            _ => None,
        })
    }

    fn sync_complete(&self) -> Option<Instant> {
        self.events.iter().find_map(|(t, e)| match e {
            Event::Progress(p) if p.phase == "sync" && p.percent == Some(100.0) => Some(*t),
            _ => None,
        })
    }
}

/// Run one migration in a child process; `on_event` sees each event as it arrives.
fn run_engine(
    m: &VolumeMigration,
    on_event: &mut dyn FnMut(&Event),
) -> Result<(Instant, Timeline, ChildDone, Instant)> {
    let state_dir = std::env::temp_dir().join(format!("bench-state-{}", m.image.image));
    let job = serde_json::to_string(&ChildJob {
        migration: m.clone(),
        state_dir: state_dir.clone(),
    })?;
    let t0 = Instant::now();
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--engine-child")
        .arg(&job)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start the engine child")?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut timeline = Timeline::default();
    let mut done = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let at = Instant::now();
        let v: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => continue,
        };
        if let Some(d) = v.get("done") {
            done = Some(serde_json::from_value::<ChildDone>(d.clone())?);
        } else if let Some(r) = v.get("connected_rss_mib") {
            timeline.connected_rss_mib = r.as_f64();
        } else if let Some(p) = v.get("step_peak") {
            if let (Some(step), Some(mib)) = (p["step"].as_str(), p["mib"].as_f64()) {
                timeline.step_peaks.push((step.to_string(), mib));
            }
        } else if let Ok(e) = serde_json::from_value::<Event>(v) {
            on_event(&e);
            timeline.events.push((at, e));
        }
    }
    let st = child.wait()?;
    let end = Instant::now();
    let _ = std::fs::remove_dir_all(&state_dir);
    if !st.success() {
        bail!("engine child failed ({st}) for {}", m.image);
    }
    let done = done.context("engine child said nothing at the end")?;
    Ok((t0, timeline, done, end))
}

fn engine_run(
    m: &VolumeMigration,
    timeline: &Timeline,
    done: &ChildDone,
    end: Instant,
) -> Result<EngineRun> {
    let enable = timeline
        .enable_started()
        .context("no step after preflight")?;
    let usable_step = match m.handover {
        Handover::Clone => "clone_replica",
        Handover::Copy => "verify",
    };
    let usable = timeline
        .done(usable_step)
        .with_context(|| format!("no {usable_step} step"))?;
    Ok(EngineRun {
        handover: match m.handover {
            Handover::Clone => "clone".into(),
            Handover::Copy => "copy".into(),
        },
        live: m.live.is_some(),
        enable_to_usable_s: usable.saturating_duration_since(enable).as_secs_f64(),
        enable_to_end_s: end.saturating_duration_since(enable).as_secs_f64(),
        steps: done.summary.steps.clone(),
        peak_rss_mib: done.peak_rss_mib,
        connected_rss_mib: timeline.connected_rss_mib,
        step_peaks: timeline.step_peaks.clone(),
    })
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
        let deadline = Instant::now() + Duration::from_secs(600);
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

/// One reading of the exact completion signal during a live run.
struct LagSample {
    at: Instant,
    complete: bool,
    /// Snapshot mode: the source's newest primary mirror snapshot at that moment.
    newest_snap: Option<u64>,
}

/// Read the exact signal at 10 Hz until `stop`: journal mode, the peer's commit position
/// against the master's (it moves every `rbd_mirror_journal_commit_age`); snapshot mode,
/// the source's newest primary mirror snapshot complete on the replica.
fn sample_lag(
    src: Arc<dyn CephOps>,
    dst: Arc<dyn CephOps>,
    image: ImageSpec,
    mode: MirrorImageMode,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<LagSample>> {
    std::thread::spawn(move || {
        let mut samples = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(1800);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let read = || -> Result<(bool, Option<u64>)> {
                Ok(match mode {
                    MirrorImageMode::Journal => (
                        journal_completion(&src.journal_positions(&image)?) == Completion::Complete,
                        None,
                    ),
                    MirrorImageMode::Snapshot => {
                        let snaps = src.snapshots(&image)?;
                        let newest = newest_primary_mirror_snapshot(&snaps);
                        let replica = dst.snapshots(&image)?;
                        (
                            snapshot_completion(&snaps, &replica, 0) == Completion::Complete,
                            newest,
                        )
                    }
                })
            };
            if let Ok((complete, newest_snap)) = read() {
                samples.push(LagSample {
                    at: Instant::now(),
                    complete,
                    newest_snap,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        samples
    })
}

/// The first moment after `last` (the last write) the replica held everything: journal,
/// the first complete reading; snapshot, the first complete reading of a snapshot first
/// seen after `last`.
fn caught_up_after(samples: &[LagSample], last: Instant) -> Option<Instant> {
    let mut seen_before: std::collections::BTreeSet<u64> = Default::default();
    for s in samples.iter().filter(|s| s.at < last) {
        seen_before.extend(s.newest_snap);
    }
    samples
        .iter()
        .filter(|s| s.at >= last && s.complete)
        .find(|s| match s.newest_snap {
            None => true,
            Some(id) => !seen_before.contains(&id),
        })
        .map(|s| s.at)
}

/// Wait until `site` has no image `spec` (rbd-mirror removes a replica asynchronously).
fn wait_gone(site: &str, spec: &str) {
    let t = Instant::now();
    while sh(&format!("rbd --cluster {site} info {spec} >/dev/null 2>&1")).is_ok()
        && t.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// sha256 of an image, read with `rbd export`.
fn sha256(site: &str, spec: &str) -> Result<String> {
    Ok(sh_out(&format!(
        "rbd --cluster {site} export --no-progress {spec} - | sha256sum"
    ))?
    .split_whitespace()
    .next()
    .unwrap_or_default()
    .to_string())
}

struct Bench<'a> {
    env: &'a testenv::Env,
    src: Arc<dyn CephOps>,
    dst: Arc<dyn CephOps>,
    args: &'a Args,
}

impl Bench<'_> {
    fn migration(
        &self,
        name: &str,
        mode: MirrorImageMode,
        handover: Handover,
    ) -> Result<VolumeMigration> {
        let mut m = VolumeMigration::new(
            ClusterSpec::with_conf(&self.env.site_a().name, self.env.site_a().conf.clone())?,
            ClusterSpec::with_conf(&self.env.site_b().name, self.env.site_b().conf.clone())?,
            format!("volumes/{name}").parse()?,
            PoolSpec::new("cinder")?,
        );
        m.mode = mode;
        m.handover = handover;
        Ok(m)
    }

    fn mode(
        &self,
        mode: MirrorImageMode,
        size_mib: u64,
        data: &str,
        tuning: Option<&str>,
        with_cold: bool,
    ) -> Result<ModeResult> {
        let (cold, runbook) = if self.args.live_only || !with_cold {
            (None, None)
        } else {
            let (c, r) = self.cold(mode, size_mib, data)?;
            (Some(c), r)
        };
        let live = self.live(mode, size_mib, data)?;
        Ok(ModeResult {
            mode: match tuning {
                Some(t) => format!("{mode} [{t}]"),
                None => mode.to_string(),
            },
            journal_tuning: tuning.map(str::to_string),
            size_mib,
            cold,
            live,
            runbook,
        })
    }

    /// The floor, then the engine cold with each handover, on the same image.
    fn cold(
        &self,
        mode: MirrorImageMode,
        size_mib: u64,
        data: &str,
    ) -> Result<(Cold, Option<Runbook>)> {
        let (a, b) = (
            self.env.site_a().name.clone(),
            self.env.site_b().name.clone(),
        );
        let name = testenv::unique_name(&format!("bench-{mode}"));
        let spec = format!("volumes/{name}");
        eprintln!("[{size_mib} MiB {mode}] importing into {a}:{spec}");
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
        eprintln!("[{size_mib} MiB {mode}] floor {floor:.1}s");

        // cold, clone handover
        wait_for_room(&b, 2 * (size_mib << 20))?;
        let m = self.migration(&name, mode, Handover::Clone)?;
        let (_, tl, done, end) = run_engine(&m, &mut |_| {})?;
        let clone = engine_run(&m, &tl, &done, end)?;
        eprintln!(
            "[{size_mib} MiB {mode}] clone: usable {:.1}s, end {:.1}s, peak RSS {:?} MiB",
            clone.enable_to_usable_s, clone.enable_to_end_s, clone.peak_rss_mib
        );
        sh(&format!("rbd --cluster {b} rm --no-progress cinder/{name}"))?;
        wait_gone(&b, &spec);

        // cold, copy handover, same image, with the completion watcher
        wait_for_room(&b, 2 * (size_mib << 20))?;
        let m = self.migration(&name, mode, Handover::Copy)?;
        let objects = (size_mib << 20).div_ceil(4 << 20);
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = watch(
            self.src.clone(),
            self.dst.clone(),
            spec.parse()?,
            mode,
            objects,
            stop.clone(),
        );
        let run = run_engine(&m, &mut |_| {});
        stop.store(true, Ordering::Relaxed);
        let (exact, _, created) = watcher
            .join()
            .map_err(|_| anyhow::anyhow!("watcher panicked"))?;
        let (t0, tl, done, end) = run?;
        let copy = engine_run(&m, &tl, &done, end)?;
        eprintln!(
            "[{size_mib} MiB {mode}] copy: usable (verified) {:.1}s, end {:.1}s, peak RSS {:?} MiB",
            copy.enable_to_usable_s, copy.enable_to_end_s, copy.peak_rss_mib
        );
        let detection = match (tl.sync_complete(), exact) {
            (Some(d), Some(e)) => Some(d.saturating_duration_since(e).as_secs_f64()),
            _ => None,
        };
        sh(&format!("rbd --cluster {b} rm --no-progress cinder/{name}"))?;
        wait_gone(&b, &spec);

        let runbook = if self.args.runbook {
            Some(self.runbook(mode, &name, objects)?)
        } else {
            None
        };
        sh(&format!("rbd --cluster {a} rm --no-progress {spec}"))?;

        let cold = Cold {
            floor_export_import_s: floor,
            clone_usable_vs_floor: clone.enable_to_usable_s / floor,
            clone_end_vs_floor: clone.enable_to_end_s / floor,
            copy_usable_vs_floor: copy.enable_to_usable_s / floor,
            clone,
            copy,
            real_completion_s: exact.map(|e| e.saturating_duration_since(t0).as_secs_f64()),
            replica_created_s: created.map(|c| c.saturating_duration_since(t0).as_secs_f64()),
            engine_detection_latency_s: detection,
        };
        Ok((cold, runbook))
    }

    /// Live: a writer on the source during the sync; stopped `write_after_sync_s` after the
    /// replica is in sync; downtime from its last write to the destination usable.
    fn live(&self, mode: MirrorImageMode, size_mib: u64, data: &str) -> Result<LiveRun> {
        let (a, b) = (
            self.env.site_a().name.clone(),
            self.env.site_b().name.clone(),
        );
        let name = testenv::unique_name(&format!("bench-live-{mode}"));
        let spec = format!("volumes/{name}");
        wait_for_room(&a, 2 * (size_mib << 20))?;
        wait_for_room(&b, 2 * (size_mib << 20))?;
        eprintln!("[{size_mib} MiB {mode}] live: importing into {a}:{spec}");
        sh(&format!(
            "rbd --cluster {a} import --no-progress {data} {spec}"
        ))?;
        let mut m = self.migration(&name, mode, Handover::Clone)?;
        let idle_for_ms = (self.args.idle_for * 1000.0).round() as u64;
        m.allow_live = true;
        m.live = Some(Live { idle_for_ms });

        let writer = Writer::start(self.env.site_a(), "volumes", &name, self.args.write_mib_s)?;
        // the writer stops on a thread of its own, `write_after_sync_s` after the signal
        let (in_sync_tx, in_sync_rx) = mpsc::channel::<()>();
        let after = Duration::from_secs_f64(self.args.write_after_sync_s);
        let stopper = std::thread::spawn(move || {
            // the engine ended (channel closed) or the replica is in sync
            let _ = in_sync_rx.recv();
            std::thread::sleep(after);
            let report = writer.stop();
            (report, Instant::now())
        });
        let in_sync_tx = Mutex::new(Some(in_sync_tx));
        let stop_sampling = Arc::new(AtomicBool::new(false));
        let mut sampler = None;
        let run = run_engine(&m, &mut |e| match e {
            Event::StepStarted { step, .. } if step == "wait_for_cutover" => {
                if let Some(tx) = in_sync_tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    let _ = tx.send(());
                }
                if let Ok(image) = spec.parse() {
                    sampler = Some(sample_lag(
                        self.src.clone(),
                        self.dst.clone(),
                        image,
                        mode,
                        stop_sampling.clone(),
                    ));
                }
            }
            Event::StepDone { step, .. } if step == "promote_replica" => {
                stop_sampling.store(true, Ordering::Relaxed);
            }
            _ => {}
        });
        stop_sampling.store(true, Ordering::Relaxed);
        let samples = match sampler {
            Some(h) => h
                .join()
                .map_err(|_| anyhow::anyhow!("lag sampler panicked"))?,
            None => Vec::new(),
        };
        drop(in_sync_tx);
        let (report, closed) = stopper
            .join()
            .map_err(|_| anyhow::anyhow!("writer stopper panicked"))?;
        let report = report?;
        let (t0, tl, done, end) = run?;
        let engine = engine_run(&m, &tl, &done, end)?;
        let last = report.last_write.context("the writer wrote nothing")?;
        let usable = tl.done("clone_replica").context("no clone_replica")?;
        let downtime = usable.saturating_duration_since(last).as_secs_f64();
        let since = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(last).as_secs_f64());
        let mut breakdown = vec![(
            "writer closed the image".to_string(),
            closed.saturating_duration_since(last).as_secs_f64(),
        )];
        let demote_started = tl.started("demote_source");
        let caught_up = caught_up_after(&samples, last).map(|t| {
            (
                t.saturating_duration_since(last).as_secs_f64(),
                demote_started.is_some_and(|d| t <= d),
            )
        });
        for step in [
            "wait_for_cutover",
            "demote_source",
            "promote_replica",
            "clone_replica",
        ] {
            if let Some(s) = since(tl.done(step)) {
                breakdown.push((format!("{step} done"), s));
            }
        }
        eprintln!(
            "[{size_mib} MiB {mode}] live: downtime {downtime:.2}s (idle-for {:.1}s), {} writes, {} MiB",
            self.args.idle_for,
            report.writes,
            report.bytes >> 20
        );
        // both read after the run: the source is released (writable, nobody writes)
        let (sa, sb) = std::thread::scope(|s| {
            let ha = s.spawn(|| sha256(&a, &spec));
            let hb = s.spawn(|| sha256(&b, &format!("cinder/{name}")));
            (ha.join(), hb.join())
        });
        let sa = sa.map_err(|_| anyhow::anyhow!("sha256 thread panicked"))??;
        let sb = sb.map_err(|_| anyhow::anyhow!("sha256 thread panicked"))??;
        eprintln!("[{size_mib} MiB {mode}] live: sha256 source {sa} destination {sb}");
        sh(&format!("rbd --cluster {b} rm --no-progress cinder/{name}"))?;
        sh(&format!("rbd --cluster {a} rm --no-progress {spec}"))?;
        wait_gone(&b, &spec);
        Ok(LiveRun {
            engine,
            idle_for_s: self.args.idle_for,
            write_mib_s: self.args.write_mib_s,
            write_after_sync_s: self.args.write_after_sync_s,
            writer_bytes: report.bytes,
            writer_writes: report.writes,
            in_sync_s: tl
                .started("wait_for_cutover")
                .map(|t| t.saturating_duration_since(t0).as_secs_f64()),
            downtime_s: downtime,
            downtime_minus_idle_for_s: downtime - self.args.idle_for,
            breakdown,
            caught_up,
            sha256_equal: sa == sb && !sa.is_empty(),
        })
    }

    /// The runbook: features, mirror enable, poll status until up+replaying, rbd cp.
    fn runbook(&self, mode: MirrorImageMode, name: &str, objects: u64) -> Result<Runbook> {
        let (a, b) = (&self.env.site_a().name, &self.env.site_b().name);
        let rb = format!("{name}-rb");
        sh(&format!(
            "rbd --cluster {a} cp --no-progress volumes/{name} volumes/{rb}"
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
            self.src.clone(),
            self.dst.clone(),
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
        let total = t.elapsed().as_secs_f64();
        let same = sha256(a, &format!("volumes/{rb}"))? == sha256(b, &format!("cinder/{rb}"))?;
        let (rb_exact, rb_status, _) = rb_watch
            .join()
            .map_err(|_| anyhow::anyhow!("watcher panicked"))?;
        let status_latency = match (rb_status, rb_exact) {
            (Some(s), Some(e)) => Some(s.saturating_duration_since(e).as_secs_f64()),
            _ => None,
        };
        let early = rb_exact.is_some_and(|e| tw + Duration::from_secs_f64(status_wait) < e);
        sh(&format!(
            "rbd --cluster {a} mirror image disable volumes/{rb}"
        ))?;
        sh(&format!("rbd --cluster {b} rm --no-progress cinder/{rb}"))?;
        wait_gone(b, &format!("volumes/{rb}"));
        sh(&format!("rbd --cluster {a} rm --no-progress volumes/{rb}"))?;
        Ok(Runbook {
            total_s: total,
            status_wait_s: status_wait,
            copy_s: copy,
            copy_complete: same,
            started_copy_before_complete: early,
            status_detection_latency_s: status_latency,
        })
    }
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
    let images = [
        (a, format!("volumes/{name}")),
        (b, format!("cinder/{name}-1")),
        (b, format!("cinder/{name}-2")),
    ];
    for (site, image) in &images {
        sh(&format!(
            "rbd --cluster {site} import --no-progress {data} {image}"
        ))?;
    }
    for (site, image) in &images {
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

/// The daemons' Ceph version of a site (`ceph versions`, every daemon), one line.
fn ceph_version(site: &str) -> String {
    sh_out(&format!("ceph --cluster {site} versions --format json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| {
            v["overall"]
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>().join("; "))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The objectstore the site's OSD reports (`ceph osd metadata`).
fn osd_objectstore(site: &str) -> String {
    sh_out(&format!("ceph --cluster {site} osd metadata --format json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| {
            v.as_array().map(|osds| {
                osds.iter()
                    .filter_map(|o| o["osd_objectstore"].as_str().map(str::to_string))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
        })
        .unwrap_or_else(|| "unknown".into())
}

fn fmt(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |v| format!("{v:.2}"))
}

fn fmt_mib(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |v| format!("{v:.0}"))
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

fn render(report: &Report) -> String {
    let results = &report.results;
    let mut md = format!(
        "# rbd-relay benchmark\n\n{}. Local pair (testenv), {} objectstore (OSDs report: {}), {} CPUs, images of random data, release build. Every run is reported (one run per row; no best-of).\n\nCeph: {}.\n\n",
        report.date,
        report.objectstore,
        report
            .osd_objectstores
            .iter()
            .map(|(s, o)| format!("{s} {o}"))
            .collect::<Vec<_>>()
            .join(", "),
        report.cpus,
        report
            .ceph_versions
            .iter()
            .map(|(s, v)| format!("{s} {v}"))
            .collect::<Vec<_>>()
            .join("; "),
    );
    md.push_str("## Cold: enable -> usable, against the floor\n\nThe floor is `rbd export site-a | rbd import site-b` of the same image, measured in the same run just before the engine. Engine times run from the first step after preflight starting. Clone usable = `clone_replica` done; copy usable = `verify` done (the copy handover hands over a verified copy). End = the run finished (verified, flattened, source released, replica removed).\n\n| MiB | mode | floor (s) | clone usable (s) | clone usable / floor | clone end (s) | clone end / floor | copy usable (s) | copy usable / floor | copy end (s) | engine detection latency, copy run (s) | peak RSS clone / copy (MiB) |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in results {
        let Some(c) = &r.cold else {
            md.push_str(&format!(
                "| {} | {} | not run (live only) | | | | | | | | | |\n",
                r.size_mib, r.mode
            ));
            continue;
        };
        md.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} / {} |\n",
            r.size_mib,
            r.mode,
            c.floor_export_import_s,
            c.clone.enable_to_usable_s,
            c.clone_usable_vs_floor,
            c.clone.enable_to_end_s,
            c.clone_end_vs_floor,
            c.copy.enable_to_usable_s,
            c.copy_usable_vs_floor,
            c.copy.enable_to_end_s,
            fmt(c.engine_detection_latency_s),
            fmt_mib(c.clone.peak_rss_mib),
            fmt_mib(c.copy.peak_rss_mib),
        ));
    }
    md.push_str("\n## Live: downtime\n\nA writer (testenv's `Writer`: random 4-64 KiB blocks at random offsets, no librbd cache) writes to the source from before the engine starts; it keeps writing until `write after sync` seconds after the replica is in sync (`wait_for_cutover` started), then stops and closes the image. Downtime = the writer's last completed write to the destination usable (`clone_replica` done). There is no Cinder in the bench (no `--adopt`): a real cutover adds the adoption. `--idle-for` is part of the downtime; the column after it subtracts it. sha256: destination and source read after the run (the source released, nobody writing).\n\n| MiB | mode | write MiB/s | written (MiB, writes) | in sync after (s) | write after sync (s) | idle-for (s) | downtime (s) | downtime - idle-for (s) | breakdown after the last write (s) | sha256 equal | peak RSS (MiB) | run end (s) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in results {
        let l = &r.live;
        let b: Vec<String> = l
            .breakdown
            .iter()
            .map(|(k, t)| format!("{k} {t:.2}"))
            .collect();
        md.push_str(&format!(
            "| {} | {} | {:.0} | {}, {} | {} | {:.1} | {:.1} | {:.2} | {:.2} | {} | {} | {} | {:.2} |\n",
            r.size_mib,
            r.mode,
            l.write_mib_s,
            l.writer_bytes >> 20,
            l.writer_writes,
            fmt(l.in_sync_s),
            l.write_after_sync_s,
            l.idle_for_s,
            l.downtime_s,
            l.downtime_minus_idle_for_s,
            b.join(", "),
            l.sha256_equal,
            fmt_mib(l.engine.peak_rss_mib),
            l.engine.enable_to_end_s,
        ));
    }
    md.push_str("\nThe same downtime phase by phase (s): idle detected = the cutover's wait saw the source without users for `--idle-for` (its overhead = that minus the idle-for); demote, promote wait (until librbd allows the promotion without force: the replica replayed up to the demotion) and clone are the steps; adoption is not in the bench. Caught up = the replica held everything up to the last write by the exact signal (journal: the peer's commit position, which moves every `rbd_mirror_journal_commit_age`; snapshot: a mirror snapshot taken after the last write complete on the replica), polled at 10 Hz.\n\n| MiB | mode | idle detected | idle detection overhead | demote | promote wait | clone | adopt | downtime | replica caught up after the last write |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for r in results {
        let l = &r.live;
        let at = |k: &str| {
            l.breakdown
                .iter()
                .find(|(n, _)| n == &format!("{k} done"))
                .map(|(_, t)| *t)
        };
        let diff = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        let idle = at("wait_for_cutover");
        let (demote, promote, clone) = (
            at("demote_source"),
            at("promote_replica"),
            at("clone_replica"),
        );
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | n/a | {:.2} | {} |\n",
            r.size_mib,
            r.mode,
            fmt(idle),
            fmt(idle.map(|i| i - l.idle_for_s)),
            fmt(diff(idle, demote)),
            fmt(diff(demote, promote)),
            fmt(diff(promote, clone)),
            l.downtime_s,
            match l.caught_up {
                Some((t, before)) => format!(
                    "{t:.2} ({} the demotion started)",
                    if before { "before" } else { "after" }
                ),
                None => "not seen".into(),
            },
        ));
    }
    // downtime ratio, largest size over smallest, per mode
    let mut by_mode: BTreeMap<&str, Vec<&ModeResult>> = BTreeMap::new();
    for r in results {
        by_mode.entry(&r.mode).or_default().push(r);
    }
    let mut ratios = Vec::new();
    for (mode, rs) in &by_mode {
        let (Some(lo), Some(hi)) = (
            rs.iter().min_by_key(|r| r.size_mib),
            rs.iter().max_by_key(|r| r.size_mib),
        ) else {
            continue;
        };
        if lo.size_mib != hi.size_mib {
            ratios.push(format!(
                "{mode}: downtime({} MiB) / downtime({} MiB) = {:.2}",
                hi.size_mib,
                lo.size_mib,
                hi.live.downtime_s / lo.live.downtime_s
            ));
        }
    }
    if !ratios.is_empty() {
        md.push_str(&format!("\nIn this run: {}.\n", ratios.join("; ")));
    }
    md.push_str("\n## Peak memory\n\nEach engine migration runs in a child process of the bench that does nothing else (`--engine-child`: connects to both clusters, runs `migrate_volume`, prints its events); its peak RSS is that process's `VmHWM` read at its end, the writer and the bench's own connections not included. Below: its RSS once connected to both clusters (before any step), then its peak so far at the end of each step.\n\n");
    for r in results {
        let cold = r.cold.iter().flat_map(|c| [&c.clone, &c.copy]);
        for e in cold.chain([&r.live.engine]) {
            let s: Vec<String> = e
                .step_peaks
                .iter()
                .map(|(k, m)| format!("{k} {m:.0}"))
                .collect();
            md.push_str(&format!(
                "- {} MiB {} {}{}: connected {}; {}\n",
                r.size_mib,
                r.mode,
                e.handover,
                if e.live { " live" } else { "" },
                fmt_mib(e.connected_rss_mib),
                s.join(", ")
            ));
        }
    }
    md.push_str("\n## Targets\n\n");
    for r in results {
        let cold = match &r.cold {
            Some(c) => format!(
                "clone usable / floor {:.2} (<= 1.4: {}); ",
                c.clone_usable_vs_floor,
                pass(c.clone_usable_vs_floor <= 1.4)
            ),
            None => String::new(),
        };
        let peaks: Vec<Option<f64>> = r
            .cold
            .iter()
            .flat_map(|c| [c.clone.peak_rss_mib, c.copy.peak_rss_mib])
            .chain([r.live.engine.peak_rss_mib])
            .collect();
        md.push_str(&format!(
            "- {} MiB {}: {cold}live downtime {:.2} s (<= 5 s: {}); peak RSS {} MiB (clone / copy / live; <= 64: {})\n",
            r.size_mib,
            r.mode,
            r.live.downtime_s,
            pass(r.live.downtime_s <= 5.0),
            peaks.iter().map(|p| fmt_mib(*p)).collect::<Vec<_>>().join(" / "),
            pass(peaks.iter().all(|m| m.is_some_and(|m| m <= 64.0))),
        ));
    }
    md.push_str("\n## Engine steps (s)\n\n");
    for r in results {
        let cold = r.cold.iter().flat_map(|c| [&c.clone, &c.copy]);
        for e in cold.chain([&r.live.engine]) {
            let s: Vec<String> = e.steps.iter().map(|(k, t)| format!("{k} {t:.2}")).collect();
            md.push_str(&format!(
                "- {} MiB {} {}{}: {}\n",
                r.size_mib,
                r.mode,
                e.handover,
                if e.live { " live" } else { "" },
                s.join(", ")
            ));
        }
    }
    md.push_str("\nCopy run: replica created / complete (real, 20 Hz poller of the exact signal), seconds after the engine child started:\n\n");
    for r in results {
        if let Some(c) = &r.cold {
            md.push_str(&format!(
                "- {} MiB {}: created {}, complete {}\n",
                r.size_mib,
                r.mode,
                fmt(c.replica_created_s),
                fmt(c.real_completion_s)
            ));
        }
    }
    if results.iter().any(|r| r.runbook.is_some()) {
        md.push_str("\n## The runbook's way\n\n| MiB | mode | total (s) | status wait (s) | rbd cp (s) | copy complete | copied before real completion | status detection latency (s) |\n|---|---|---|---|---|---|---|---|\n");
        for r in results {
            if let Some(rb) = &r.runbook {
                md.push_str(&format!(
                    "| {} | {} | {:.1} | {:.1} | {:.1} | {} | {} | {} |\n",
                    r.size_mib,
                    r.mode,
                    rb.total_s,
                    rb.status_wait_s,
                    rb.copy_s,
                    rb.copy_complete,
                    rb.started_copy_before_complete,
                    fmt(rb.status_detection_latency_s)
                ));
            }
        }
    }
    md
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(job) = &args.engine_child {
        return engine_child(job).await;
    }
    let env = testenv::shared().context("start the test environment (testenv up)")?;
    let src: Arc<dyn CephOps> = Arc::new(RbdCeph::connect(&ClusterSpec::with_conf(
        &env.site_a().name,
        env.site_a().conf.clone(),
    )?)?);
    let dst: Arc<dyn CephOps> = Arc::new(RbdCeph::connect(&ClusterSpec::with_conf(
        &env.site_b().name,
        env.site_b().conf.clone(),
    )?)?);
    let bench = Bench {
        env: &env,
        src,
        dst,
        args: &args,
    };
    let sites = [env.site_a().name.clone(), env.site_b().name.clone()];
    let mut report = Report {
        date: sh_out("date -u '+%Y-%m-%d %H:%M UTC'")
            .unwrap_or_default()
            .trim()
            .to_string(),
        objectstore: env.objectstore().as_str().to_string(),
        ceph_versions: sites.iter().map(|s| (s.clone(), ceph_version(s))).collect(),
        osd_objectstores: sites
            .iter()
            .map(|s| (s.clone(), osd_objectstore(s)))
            .collect(),
        cpus: sh_out("nproc").unwrap_or_default().trim().to_string(),
        results: Vec::new(),
    };
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
            let tunings: Vec<Option<&str>> =
                if mode == MirrorImageMode::Journal && !args.journal_tunings.is_empty() {
                    args.journal_tunings
                        .iter()
                        .map(|t| Some(t.as_str()))
                        .collect()
                } else {
                    vec![None]
                };
            for (i, tuning) in tunings.iter().enumerate() {
                if let Some(t) = tuning {
                    apply_journal_tuning(&env, t)?;
                }
                let r = bench.mode(mode, size_mib, &data.display().to_string(), *tuning, i == 0);
                if tuning.is_some() {
                    apply_journal_tuning(&env, "testenv")?;
                }
                report.results.push(r?);
                // a partial report survives a later failure
                write_report(&args.out, &report)?;
            }
        }
        let _ = std::fs::remove_file(&data);
    }
    let md = write_report(&args.out, &report)?;
    println!("{md}");
    println!("report written to {}", args.out);
    Ok(())
}

/// Sets one rbd-mirror journal replay configuration (`--journal-tunings`): on the
/// destination daemon through its admin socket (it reads both when it starts an image's
/// replay, so the next image gets them), and the writer's journal payload in site-a's
/// `client` config (read when the writer connects).
fn apply_journal_tuning(env: &testenv::Env, tuning: &str) -> Result<()> {
    let (fetch, poll_age, payload) = match tuning {
        "testenv" => (32 << 10, 1, None),
        "ceph-default" => (32 << 10, 5, None),
        "fetch" => (32 << 20, 1, None),
        "tuned" => (32 << 20, 1, Some(8 << 20)),
        other => {
            anyhow::bail!("unknown journal tuning {other:?} (testenv, ceph-default, fetch, tuned)")
        }
    };
    let asok = env.rbd_mirror_asok().display().to_string();
    sh(&format!(
        "ceph --admin-daemon {asok} config set rbd_mirror_journal_max_fetch_bytes {fetch} >/dev/null"
    ))?;
    sh(&format!(
        "ceph --admin-daemon {asok} config set rbd_mirror_journal_poll_age {poll_age} >/dev/null"
    ))?;
    let a = &env.site_a().name;
    match payload {
        Some(p) => sh(&format!(
            "ceph --cluster {a} config set client rbd_journal_max_payload_bytes {p}"
        ))?,
        None => sh(&format!(
            "ceph --cluster {a} config rm client rbd_journal_max_payload_bytes || true"
        ))?,
    }
    // read back from the daemon itself, for the log
    let got = |k: &str| {
        sh_out(&format!("ceph --admin-daemon {asok} config get {k}"))
            .map(|o| o.split_whitespace().collect::<String>())
            .unwrap_or_else(|e| e.to_string())
    };
    eprintln!(
        "journal tuning {tuning}: rbd-mirror {} {}; writer payload {}",
        got("rbd_mirror_journal_max_fetch_bytes"),
        got("rbd_mirror_journal_poll_age"),
        payload.map_or("default".to_string(), |p: u64| format!("{p} B"))
    );
    Ok(())
}

fn write_report(out: &str, report: &Report) -> Result<String> {
    let md = render(report);
    if let Some(dir) = std::path::Path::new(out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, &md)?;
    std::fs::write(
        format!("{}.json", out.trim_end_matches(".md")),
        serde_json::to_string_pretty(report)?,
    )?;
    Ok(md)
}
