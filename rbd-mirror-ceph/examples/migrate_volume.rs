//! Migrate one RBD volume from one Ceph cluster to another with the library, the way the
//! `rbd-relay migrate volume` command does, in a few lines.
//!
//! ```sh
//! cargo run -p rbd-mirror-ceph --example migrate_volume -- \
//!     site-a site-b volumes/vol-1 cinder --dry-run
//! cargo run -p rbd-mirror-ceph --example migrate_volume -- site-a site-b volumes/vol-1 cinder
//! ```
//!
//! `FROM` and `TO` are cluster names like `rbd --cluster` takes them (conf
//! `/etc/ceph/NAME.conf`, cephx user `client.admin`). The state file goes to the default
//! directory (`$RBD_RELAY_STATE_DIR`, else `~/.local/state/rbd-relay`), so re-running the
//! same command resumes an interrupted run.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use rbd_mirror_ceph::real::RbdCeph;
use rbd_mirror_core::error::Error;
use rbd_mirror_core::event::{Event, EventSink};
use rbd_mirror_core::exec::{migrate_volume, plan_volume, RunOptions};
use rbd_mirror_core::ops::CephOps;
use rbd_mirror_core::plan::VolumeMigration;
use rbd_mirror_core::spec::{ClusterSpec, ImageSpec, PoolSpec};
use rbd_mirror_core::state::StateFile;

const USAGE: &str = "usage: migrate_volume FROM TO POOL/IMAGE INTO [--dry-run]";

/// Prints every event the library emits, one line each; a progress line only when it says
/// something new (the wait polls its signal four times a second).
#[derive(Default)]
struct Printer {
    last_progress: Mutex<String>,
}

impl EventSink for Printer {
    fn emit(&self, event: Event) {
        match event {
            Event::StepStarted {
                index, description, ..
            } => println!("[{}] {description}", index + 1),
            Event::StepSkipped { reason, .. } => println!("    already done: {reason}"),
            Event::StepDone { step, seconds, .. } => println!("    {step} done in {seconds:.1}s"),
            Event::Progress(p) => {
                let percent = p.percent.map(|x| format!(" {x:.0}%")).unwrap_or_default();
                let line = format!("    {}{percent} {}", p.phase, p.detail);
                let mut last = self.last_progress.lock().unwrap_or_else(|e| e.into_inner());
                if *last != line {
                    println!("{line}");
                    *last = line;
                }
            }
            Event::Warning { message } => println!("warning: {message}"),
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dry_run = args.iter().any(|a| a == "--dry-run");
    let positional: Vec<&String> = args.iter().filter(|a| *a != "--dry-run").collect();
    let [from, to, image, into] = positional.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match run(from, to, image, into, dry_run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    from: &str,
    to: &str,
    image: &str,
    into: &str,
    dry_run: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    // 1. What to do: names are validated here, once.
    let source = ClusterSpec::named(from)?;
    let destination = ClusterSpec::named(to)?;
    let image: ImageSpec = image.parse()?;
    let into: PoolSpec = into.parse()?;
    let migration = VolumeMigration::new(source.clone(), destination.clone(), image, into);

    // 2. Connect both clusters (blocking calls; fails fast when a cluster is unreachable).
    let src: Arc<dyn CephOps> = Arc::new(RbdCeph::connect(&source)?);
    let dst: Arc<dyn CephOps> = Arc::new(RbdCeph::connect(&destination)?);

    // 3. Run (or only plan) it. Events go to any `EventSink` (a closure
    //    `Fn(Event) + Send + Sync` is one too).
    let state_dir = StateFile::default_dir();
    let events = Arc::new(Printer::default());
    let runtime = tokio::runtime::Runtime::new()?;
    if dry_run {
        let (plan, recorded) =
            runtime.block_on(plan_volume(&migration, src, dst, &state_dir, events))?;
        print!("{}", plan.render());
        match recorded {
            Some(r) => println!(
                "(recorded run: next step {} of {})",
                r.next_step + 1,
                plan.steps.len()
            ),
            None => println!("(dry run: nothing was changed)"),
        }
        return Ok(());
    }
    let result = runtime.block_on(migrate_volume(
        &migration,
        src,
        dst,
        &state_dir,
        &RunOptions::default(),
        events,
    ));
    match result {
        Ok(summary) => {
            println!(
                "migrated {} -> {} ({} bytes)",
                summary.source, summary.copy, summary.bytes
            );
            println!("verified: sha256 {}", summary.sha256);
            for (step, seconds) in &summary.steps {
                println!("    {step:<18} {seconds:6.1}s");
            }
            if !summary.lost_features.is_empty() {
                println!("not restored on the source: {}", summary.lost_features);
            }
            Ok(())
        }
        // Preflight problems each carry a fix; nothing was changed.
        Err(Error::Preflight(problems)) => {
            for p in &problems {
                eprintln!("problem: {}\n    fix: {}", p.what, p.fix);
            }
            Err("preflight refused the migration; nothing was changed".into())
        }
        // Everything else says what to do in its message; a re-run resumes.
        Err(e) => Err(e.into()),
    }
}
