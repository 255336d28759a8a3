//! What tests and shells get from a running environment: [`Env`] (sites, pools, paths) and
//! [`LogGuard`], which prints the daemon logs when a test fails.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::layout::{
    Daemon, Layout, Objectstore, POOL_CINDER, POOL_GLANCE, POOL_IMAGES, POOL_VOLUMES,
    RBD_MIRROR_ID, SITES, STATE_DIR_ENV,
};
use crate::openstack::OpenStackInfo;
use crate::state::State;
use crate::CephSite;

/// Names of the pools, by their role in a migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pools {
    /// Source cloud's Cinder pool on site-a; mirrored (mode `image`) to site-b's pool of the
    /// same name.
    pub volumes: &'static str,
    /// Source cloud's Glance pool on site-a; mirrored (mode `image`) to site-b.
    pub images: &'static str,
    /// Destination cloud's Cinder pool on site-b (plain).
    pub cinder: &'static str,
    /// Destination cloud's Glance pool on site-b (plain).
    pub glance: &'static str,
}

/// The pool names in use.
pub const POOLS: Pools = Pools {
    volumes: POOL_VOLUMES,
    images: POOL_IMAGES,
    cinder: POOL_CINDER,
    glance: POOL_GLANCE,
};

/// A running environment, as loaded from its state file.
#[derive(Debug, Clone)]
pub struct Env {
    dir: PathBuf,
    state: State,
}

impl Env {
    /// Loads the environment described by the state file in `state_dir`, without checking
    /// that the daemons run (use [`crate::shared`] for that).
    pub fn load(state_dir: &Path) -> Result<Env> {
        let root = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
        let layout = Layout::new(&root);
        match State::load(&layout.state_file())? {
            Some(state) => Env::from_state(&root, state),
            None => Err(Error::NotUp(state_dir.to_path_buf())),
        }
    }

    pub(crate) fn from_state(state_dir: &Path, state: State) -> Result<Env> {
        if state.sites.len() != SITES.len() {
            return Err(Error::BadState {
                path: Layout::new(state_dir).state_file(),
                detail: format!(
                    "{} sites listed, expected {}",
                    state.sites.len(),
                    SITES.len()
                ),
            });
        }
        Ok(Env {
            dir: state_dir.to_path_buf(),
            state,
        })
    }

    fn site(&self, i: usize) -> &CephSite {
        // `from_state` checked that there are exactly two sites.
        &self.state.sites[i]
    }

    /// The source cluster (`site-a`).
    pub fn site_a(&self) -> &CephSite {
        self.site(0)
    }

    /// The destination cluster (`site-b`, runs rbd-mirror).
    pub fn site_b(&self) -> &CephSite {
        self.site(1)
    }

    /// The state directory (daemon data, logs, state file).
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    /// Admin socket of the rbd-mirror daemon (`ceph --admin-daemon <asok> rbd mirror ...`).
    pub fn rbd_mirror_asok(&self) -> &Path {
        &self.state.rbd_mirror_asok
    }

    /// The pid of `daemon` on `site`, from its pid file (`None` when it has none or it is
    /// unreadable). The fault tests stop and continue daemons by it (SIGSTOP/SIGCONT).
    pub fn daemon_pid(&self, site: &str, daemon: Daemon) -> Option<i32> {
        std::fs::read_to_string(Layout::new(&self.dir).pid_file(site, daemon))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// cephx id of the rbd-mirror daemon (`rbd-mirror.b`).
    pub fn rbd_mirror_id(&self) -> &'static str {
        RBD_MIRROR_ID
    }

    /// Pool names.
    pub fn pools(&self) -> &'static Pools {
        &POOLS
    }

    /// How the OSDs store data.
    pub fn objectstore(&self) -> Objectstore {
        self.state.objectstore
    }

    /// The clouds, when `up --openstack` (or [`crate::shared_with_openstack`]) started them.
    pub fn openstack(&self) -> Option<&OpenStackInfo> {
        self.state.openstack.as_ref()
    }

    /// Every daemon log file of both sites (and of the clouds, when they run).
    pub fn log_files(&self) -> Vec<PathBuf> {
        log_files(&Layout::new(&self.dir))
    }

    /// A guard that prints the last lines of every daemon log to stderr when it is dropped
    /// during a panic (i.e. when the test holding it fails).
    pub fn log_guard(&self) -> LogGuard {
        LogGuard {
            dir: self.dir.clone(),
            lines: 40,
            sink: None,
        }
    }

    /// `export NAME=value` lines for a shell (`eval "$(testenv env)"`).
    pub fn env_lines(&self) -> Vec<String> {
        let mut vars: Vec<(String, String)> =
            vec![(STATE_DIR_ENV.to_string(), self.dir.display().to_string())];
        for (tag, site) in [("A", self.site_a()), ("B", self.site_b())] {
            vars.push((format!("RBD_RELAY_SITE_{tag}"), site.name.clone()));
            vars.push((
                format!("RBD_RELAY_SITE_{tag}_CONF"),
                site.conf.display().to_string(),
            ));
            vars.push((
                format!("RBD_RELAY_SITE_{tag}_KEYRING"),
                site.admin_keyring.display().to_string(),
            ));
            vars.push((format!("RBD_RELAY_SITE_{tag}_FSID"), site.fsid.clone()));
        }
        let p = self.pools();
        vars.extend([
            (
                "RBD_RELAY_MIRRORED_POOLS".into(),
                format!("{} {}", p.volumes, p.images),
            ),
            ("RBD_RELAY_SRC_VOLUME_POOL".into(), p.volumes.into()),
            ("RBD_RELAY_SRC_IMAGE_POOL".into(), p.images.into()),
            ("RBD_RELAY_DST_VOLUME_POOL".into(), p.cinder.into()),
            ("RBD_RELAY_DST_IMAGE_POOL".into(), p.glance.into()),
            ("RBD_RELAY_RBD_MIRROR_ID".into(), RBD_MIRROR_ID.into()),
            (
                "RBD_RELAY_RBD_MIRROR_ASOK".into(),
                self.rbd_mirror_asok().display().to_string(),
            ),
            (
                "RBD_RELAY_OBJECTSTORE".into(),
                self.objectstore().to_string(),
            ),
        ]);
        let mut lines: Vec<String> = vars
            .into_iter()
            .map(|(k, v)| format!("export {k}={}", shell_quote(&v)))
            .collect();
        if let Some(os) = self.openstack() {
            lines.extend(os.env_lines());
        }
        lines
    }
}

/// Single-quotes a value for a POSIX shell.
pub(crate) fn shell_quote(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c))
    {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', r"'\''"))
    }
}

/// Every `*.log` and `*.out` under the sites' log directories and the clouds' log directory
/// (`openstack/logs`, when the clouds were started).
pub(crate) fn log_files(layout: &Layout) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = SITES.iter().map(|s| layout.log_dir(s.name)).collect();
    dirs.push(layout.root().join("openstack").join("logs"));
    let mut files = Vec::new();
    for dir in dirs {
        let mut in_dir: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| matches!(p.extension().and_then(|x| x.to_str()), Some("log" | "out")))
            .collect();
        in_dir.sort();
        files.extend(in_dir);
    }
    files
}

/// The last `n` lines of a file (reads at most the last 256 KiB).
pub(crate) fn tail_lines(path: &Path, n: usize) -> std::io::Result<Vec<String>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(256 * 1024);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(n);
    Ok(lines[skip..].iter().map(|l| l.to_string()).collect())
}

/// Prints the tail of every daemon log to stderr when dropped while the thread panics.
/// Hold one for the length of a test: `let _logs = env.log_guard();`.
#[derive(Debug)]
#[must_use = "the guard prints logs when dropped during a panic; bind it to a variable"]
pub struct LogGuard {
    dir: PathBuf,
    lines: usize,
    /// Where the tails go instead of stderr (unit tests of the guard itself).
    sink: Option<Arc<Mutex<Vec<u8>>>>,
}

impl LogGuard {
    /// Changes how many lines of each log are printed (default 40).
    pub fn lines(mut self, n: usize) -> Self {
        self.lines = n;
        self
    }

    /// Writes `===== last N lines of FILE =====` and the lines, for every daemon log.
    pub fn write_tails(&self, out: &mut dyn Write) -> std::io::Result<()> {
        for file in log_files(&Layout::new(&self.dir)) {
            writeln!(
                out,
                "===== last {} lines of {} =====",
                self.lines,
                file.display()
            )?;
            match tail_lines(&file, self.lines) {
                Ok(lines) => {
                    for l in lines {
                        writeln!(out, "{l}")?;
                    }
                }
                Err(e) => writeln!(out, "(cannot read: {e})")?,
            }
        }
        Ok(())
    }

    /// Writes the log tails to stderr now.
    pub fn dump(&self) {
        // Nothing sensible to do when stderr itself fails.
        let _ = self.write_tails(&mut std::io::stderr().lock());
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        match &self.sink {
            Some(sink) => {
                let mut buf = Vec::new();
                let _ = self.write_tails(&mut buf);
                if let Ok(mut s) = sink.lock() {
                    s.extend(buf);
                }
            }
            None => self.dump(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_quotes_only_when_needed() {
        assert_eq!(
            shell_quote("/etc/ceph/site-a.conf"),
            "/etc/ceph/site-a.conf"
        );
        assert_eq!(shell_quote("volumes images"), "'volumes images'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn log_guard_prints_log_tails_only_when_panicking() {
        let dir = std::env::temp_dir().join(format!("testenv-guard-{}", std::process::id()));
        let log_dir = Layout::new(&dir).log_dir("site-a");
        std::fs::create_dir_all(&log_dir).unwrap();
        let text: String = (0..100).map(|i| format!("mon line {i}\n")).collect();
        std::fs::write(log_dir.join("site-a-mon.a.log"), text).unwrap();
        std::fs::write(log_dir.join("ignored.txt"), "x").unwrap();
        let guard = |sink: &Arc<Mutex<Vec<u8>>>| LogGuard {
            dir: dir.clone(),
            lines: 40,
            sink: Some(sink.clone()),
        };

        let quiet = Arc::new(Mutex::new(Vec::new()));
        drop(guard(&quiet));
        assert!(
            quiet.lock().unwrap().is_empty(),
            "no output without a panic"
        );

        let loud = Arc::new(Mutex::new(Vec::new()));
        let g = guard(&loud);
        let joined = std::thread::spawn(move || {
            let _g = g;
            panic!("test failure");
        })
        .join();
        assert!(joined.is_err());
        let out = String::from_utf8(loud.lock().unwrap().clone()).unwrap();
        assert!(
            out.contains("last 40 lines of") && out.contains("site-a-mon.a.log"),
            "{out}"
        );
        assert!(
            out.contains("mon line 99") && out.contains("mon line 60"),
            "{out}"
        );
        assert!(
            !out.contains("mon line 59\n") && !out.contains("ignored"),
            "{out}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tail_lines_returns_the_last_lines() {
        let p = std::env::temp_dir().join(format!("testenv-tail-{}", std::process::id()));
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, text).unwrap();
        let t = tail_lines(&p, 3).unwrap();
        assert_eq!(t, vec!["line 97", "line 98", "line 99"]);
        std::fs::remove_file(&p).unwrap();
    }
}
