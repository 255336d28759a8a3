//! `testenv`: start, inspect and stop the local Ceph pair (and clouds) that rbd-relay's
//! tests run against. All logic is in the library; this only parses flags and prints.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use testenv::{Daemon, Objectstore, Release, UpOptions, UpOutcome};

/// Real local test environment for rbd-relay: Ceph clusters site-a and site-b with
/// rbd-mirror (site-a -> site-b), and optionally two OpenStack clouds.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// State directory (daemon data, logs, state file).
    #[arg(long, global = true, env = testenv::STATE_DIR_ENV, default_value = testenv::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Store {
    /// In RAM (default for a fresh pair).
    Memstore,
    /// On a sparse file in the state directory (for GiB images).
    Bluestore,
}

impl From<Store> for Objectstore {
    fn from(s: Store) -> Self {
        match s {
            Store::Memstore => Objectstore::Memstore,
            Store::Bluestore => Objectstore::Bluestore,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CephRelease {
    /// Ceph 16.2, the host's packages (default).
    Pacific,
    /// Ceph 18.2 from a Debian 13 (trixie) chroot.
    Reef,
    /// Ceph 20.2 from a Debian unstable (sid) chroot.
    Tentacle,
}

impl From<CephRelease> for Release {
    fn from(r: CephRelease) -> Self {
        match r {
            CephRelease::Pacific => Release::Pacific,
            CephRelease::Reef => Release::Reef,
            CephRelease::Tentacle => Release::Tentacle,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Bring the pair up (idempotent: no-op when up, restarts a dead rbd-mirror, rebuilds a
    /// half-dead pair).
    Up {
        /// Also start the OpenStack clouds.
        #[arg(long)]
        openstack: bool,
        /// OSD objectstore; when given and a pair with another one runs, it is rebuilt.
        #[arg(long, value_enum)]
        objectstore: Option<Store>,
        /// Ceph release of site-b (site-a runs the host's Pacific). Newer ones run from a
        /// Debian chroot cached beside the state directory. When not given: keep what runs,
        /// build Pacific. When given and a pair on another release runs, it is rebuilt.
        #[arg(long, value_enum)]
        site_b_release: Option<CephRelease>,
    },
    /// Build (once) the Debian chroot a newer site-b release runs from, without starting
    /// anything: needs the package archive, so run it before a private network namespace.
    Chroot {
        /// The release whose chroot to build.
        #[arg(long, value_enum)]
        release: CephRelease,
        /// Also install the suite's OpenStack (for `up --openstack` with this release:
        /// reef's trixie carries OpenStack 2025.1).
        #[arg(long)]
        openstack: bool,
    },
    /// Stop everything testenv started and wipe its state.
    Down,
    /// Show what runs.
    Status,
    /// Print `export` lines for a shell: `eval "$(testenv env)"`.
    Env,
    /// Write into an image like a VM would (held open, exclusive lock, random 4-64 KiB
    /// blocks at random offsets) at about a rate, until --seconds or SIGINT/SIGTERM: the
    /// live writer of a live migration, from a shell.
    Write {
        /// The image, `POOL/IMAGE`.
        image: String,
        /// The site: `a`, `b`, or a cluster name.
        #[arg(long, default_value = "a")]
        site: String,
        /// About how many MiB/s to write.
        #[arg(long, default_value_t = 20.0)]
        rate_mib: f64,
        /// Stop after this many seconds (default: at SIGINT/SIGTERM).
        #[arg(long)]
        seconds: Option<f64>,
    },
}

/// `writeln!` into a String (cannot fail).
macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {{
        $out.push_str(&format!($($arg)*));
        $out.push('\n');
    }};
}

/// Writes to stdout; a closed pipe (`testenv env | head -1`) is not an error.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("write stdout"),
        _ => Ok(()),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("testenv: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let dir = cli.state_dir;
    match cli.command {
        Cmd::Up {
            openstack,
            objectstore,
            site_b_release,
        } => {
            let opts = UpOptions {
                objectstore: objectstore.map(Objectstore::from),
                openstack,
                site_b_release: site_b_release.map(Release::from),
            };
            let report = testenv::up(&dir, &opts).context("testenv up")?;
            let what = match &report.outcome {
                UpOutcome::AlreadyUp => "already up, nothing to do".to_string(),
                UpOutcome::RbdMirrorRestarted => "clusters were up; rbd-mirror restarted".into(),
                UpOutcome::Built => "built from scratch".into(),
                UpOutcome::Rebuilt { reason } => format!("rebuilt ({reason})"),
            };
            eprintln!(
                "testenv up: {what} in {:.2}s ({}, state in {})",
                report.elapsed.as_secs_f64(),
                report.env.objectstore(),
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Chroot { release, openstack } => {
            let release = Release::from(release);
            if openstack {
                match testenv::prepare_openstack_chroot(&dir, release).context("testenv chroot")? {
                    Some(root) => eprintln!(
                        "testenv chroot: Ceph {release} and OpenStack {} ready in {}",
                        release.openstack_release().unwrap_or("?"),
                        root.display()
                    ),
                    None => eprintln!(
                        "testenv chroot: a cloud on Ceph {release} runs the host's OpenStack: nothing to install"
                    ),
                }
                return Ok(ExitCode::SUCCESS);
            }
            match testenv::prepare_chroot(&dir, release).context("testenv chroot")? {
                Some(root) => {
                    eprintln!("testenv chroot: Ceph {release} ready in {}", root.display())
                }
                None => {
                    eprintln!("testenv chroot: Ceph {release} is the host's own: no chroot needed")
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Down => {
            let report = testenv::down(&dir).context("testenv down")?;
            eprintln!(
                "testenv down: {} process(es) stopped{} in {:.2}s",
                report.teardown.stopped,
                if report.teardown.killed.is_empty() {
                    String::new()
                } else {
                    format!(" (SIGKILL: {})", report.teardown.killed.join(", "))
                },
                report.elapsed.as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status => {
            let st = testenv::status(&dir);
            let mut out = String::new();
            outln!(
                out,
                "state dir {}: {}{}",
                st.state_dir.display(),
                if st.up { "UP" } else { "NOT UP" },
                st.objectstore
                    .map(|o| format!(" ({o})"))
                    .unwrap_or_default()
            );
            let mut total_peak = 0;
            for d in &st.daemons {
                match d.pid {
                    Some(pid) => {
                        total_peak += d.peak_rss_kib.unwrap_or(0);
                        outln!(
                            out,
                            "  {:<7} {:<20} alive  pid {:<7} rss {:>4} MiB  peak {:>4} MiB",
                            d.site,
                            d.daemon.entity(),
                            pid,
                            d.rss_kib.unwrap_or(0) / 1024,
                            d.peak_rss_kib.unwrap_or(0) / 1024
                        );
                    }
                    None => outln!(out, "  {:<7} {:<20} DEAD", d.site, d.daemon.entity()),
                }
            }
            if total_peak > 0 {
                outln!(out, "  sum of peak RSS: {} MiB", total_peak / 1024);
            }
            for (site, r) in &st.releases {
                outln!(out, "  {site} release: {r}");
            }
            for (site, h) in &st.health {
                outln!(out, "  {site} health: {h}");
            }
            for (pool, m) in &st.mirroring {
                outln!(out, "  site-b mirror pool {pool}: {m}");
            }
            for svc in &st.openstack {
                match (svc.alive, svc.pid) {
                    (true, Some(pid)) => {
                        outln!(out, "  openstack {:<28} alive  pid {pid}", svc.name)
                    }
                    _ => outln!(out, "  openstack {:<28} DEAD", svc.name),
                }
            }
            let openstack_dead = st.openstack.iter().any(|s| !s.alive);
            let mirror_dead = st
                .daemons
                .iter()
                .any(|d| d.daemon == Daemon::RbdMirror && !d.alive());
            write_stdout(&out)?;
            Ok(if st.up && !mirror_dead && !openstack_dead {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        Cmd::Write {
            image,
            site,
            rate_mib,
            seconds,
        } => write(&dir, &image, &site, rate_mib, seconds),
        Cmd::Env => {
            let env = testenv::Env::load(&dir).context("testenv env")?;
            let mut lines = env.env_lines();
            // each site's release as its running daemons report it (`ceph versions`)
            for (tag, site) in [("A", env.site_a()), ("B", env.site_b())] {
                let release = testenv::running_release(&site.name)
                    .with_context(|| format!("testenv env: release of {}", site.name))?;
                lines.push(format!("export RBD_RELAY_SITE_{tag}_RELEASE='{release}'"));
            }
            write_stdout(&(lines.join("\n") + "\n"))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `testenv write`: runs a [`testenv::writer::Writer`] until the time is up or SIGINT/SIGTERM
/// arrives, then prints what it wrote.
fn write(
    dir: &std::path::Path,
    image: &str,
    site: &str,
    rate_mib: f64,
    seconds: Option<f64>,
) -> anyhow::Result<ExitCode> {
    use nix::sys::signal::{SigSet, Signal};
    let env = testenv::Env::load(dir).context("testenv write")?;
    let ceph = match site {
        "a" => env.site_a(),
        "b" => env.site_b(),
        name if name == env.site_a().name => env.site_a(),
        name if name == env.site_b().name => env.site_b(),
        other => anyhow::bail!(
            "unknown site `{other}` (a, b, {}, {})",
            env.site_a().name,
            env.site_b().name
        ),
    };
    let (pool, name) = image
        .split_once('/')
        .with_context(|| format!("`{image}` is not POOL/IMAGE"))?;
    // SIGINT/SIGTERM are blocked in every thread (the writer's and librbd's inherit the
    // mask) and taken by one waiting thread, so a stop is always orderly
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block().context("block SIGINT/SIGTERM")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok(sig) = signals.wait() {
            let _ = tx.send(sig);
        }
    });
    let writer = testenv::writer::Writer::start(ceph, pool, name, rate_mib)
        .with_context(|| format!("start writing {}:{image}", ceph.name))?;
    let started = std::time::Instant::now();
    eprintln!(
        "testenv write: writing {}:{image} at about {rate_mib} MiB/s{}",
        ceph.name,
        seconds
            .map(|s| format!(" for {s} s"))
            .unwrap_or_else(|| " until SIGINT/SIGTERM".into())
    );
    let limit = seconds.map(std::time::Duration::from_secs_f64);
    loop {
        let tick = std::time::Duration::from_millis(200);
        if let Ok(sig) = rx.recv_timeout(tick) {
            eprintln!("testenv write: {sig}, stopping");
            break;
        }
        if limit.is_some_and(|l| started.elapsed() >= l) || writer.is_finished() {
            break;
        }
    }
    let report = writer.stop().context("testenv write")?;
    let secs = started.elapsed().as_secs_f64();
    let last = report
        .last_write
        .map(|t| format!("{:.3} s after the start", (t - started).as_secs_f64()))
        .unwrap_or_else(|| "none".into());
    write_stdout(&format!(
        "wrote {} bytes in {} writes over {secs:.1} s ({:.1} MiB/s); last write {last}\n",
        report.bytes,
        report.writes,
        report.bytes as f64 / f64::from(1u32 << 20) / secs.max(0.001),
    ))?;
    Ok(ExitCode::SUCCESS)
}
