//! The one error type of the crate (Ceph pair and OpenStack clouds alike): every failure says what was being done (the command
//! line, the path, the daemon) so a red test run is readable without re-running it.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while starting, inspecting or stopping the environment.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("create", "read", "write", ...).
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A program could not be started at all (missing binary, ...).
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A program ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status as text.
        status: String,
        /// The last part of what it wrote to stderr.
        stderr: String,
    },
    /// A program did not finish in time and was killed.
    #[error("`{command}` did not finish within {limit:?} (killed)")]
    CommandTimeout {
        /// The command line.
        command: String,
        /// The limit it exceeded.
        limit: Duration,
    },
    /// A condition did not become true in time.
    #[error("timeout after {limit:?} waiting for {what}{}", last_seen.as_ref().map(|s| format!(" (last seen: {s})")).unwrap_or_default())]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it was awaited.
        limit: Duration,
        /// The last observation, when there is one worth showing.
        last_seen: Option<String>,
    },
    /// A state file (the pair's, or the clouds' records) cannot be parsed or serialised.
    #[error("state file {path}: {source}")]
    StateFile {
        /// Path of the state file.
        path: PathBuf,
        /// The (de)serialisation error.
        #[source]
        source: serde_json::Error,
    },
    /// The state file parses but does not describe the pair.
    #[error("state file {path} is inconsistent: {detail}")]
    BadState {
        /// Path of the state file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The environment is not up (for calls that do not start it).
    #[error("the test environment in {0} is not up (run `testenv up`)")]
    NotUp(PathBuf),
    /// The pair's /etc/ceph files belong to an environment in another state directory.
    #[error("{site} belongs to the test environment in {owner} (run `testenv --state-dir {owner} down` first)", owner = owner.display())]
    OtherStateDir {
        /// The site whose conf names another state directory.
        site: String,
        /// That state directory.
        owner: PathBuf,
    },
    /// The environment must be managed as root (it writes /etc/ceph and binds ports).
    #[error("testenv must run as root (it writes /etc/ceph and starts daemons)")]
    NotRoot,
    /// Output of a Ceph tool did not have the expected shape.
    #[error("unexpected output of `{command}`: {detail}")]
    Parse {
        /// The command line.
        command: String,
        /// What was wrong with it.
        detail: String,
    },
    /// Taking the environment's file lock failed.
    #[error("cannot lock {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An OpenStack daemon died (or never came up) while being started or waited for.
    #[error("{service} is not running; its log {log} ends with:\n{tail}")]
    Died {
        /// The daemon.
        service: String,
        /// Its stdout/stderr log.
        log: PathBuf,
        /// The end of that log.
        tail: String,
    },
    /// An HTTP request (to Keystone, Cinder, Glance) could not be sent or its answer read.
    #[error("{method} {url}: {source}")]
    Http {
        /// HTTP method.
        method: String,
        /// URL.
        url: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// An HTTP request got an error status.
    #[error("{method} {url} returned HTTP {status}: {body}")]
    HttpStatus {
        /// HTTP method.
        method: String,
        /// URL.
        url: String,
        /// Status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// An HTTP response did not have the expected shape.
    #[error("unexpected response from {url}: {detail}")]
    BadResponse {
        /// URL.
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// A port the clouds need is taken by a process the environment did not start.
    #[error("port 127.0.0.1:{port} ({what}) is in use by another process")]
    PortInUse {
        /// The port.
        port: u16,
        /// What needs it.
        what: &'static str,
    },
    /// A setting from the environment is not usable (the message names it and the fix).
    #[error("{0}")]
    BadSetting(String),
    /// The clouds need exactly the source and the destination site.
    #[error("expected 2 Ceph sites (source, destination), got {0}")]
    Sites(usize),
    /// A pool the clouds use does not exist.
    #[error("pool {pool} does not exist on {site} (the Ceph side of testenv creates it)")]
    MissingPool {
        /// The cluster.
        site: String,
        /// The pool.
        pool: String,
    },
    /// The host's apt sources name no Debian archive to build a chroot from.
    #[error("cannot build a Ceph chroot: no Debian archive for suite {codename} found in /etc/apt/sources.list or /etc/apt/sources.list.d/*.{{sources,list}} (debootstrap needs the archive the host's apt installs Debian from)")]
    NoArchive {
        /// The host's Debian suite, which the archive must carry.
        codename: String,
    },
    /// Building the chroot of a newer Ceph release failed (archive unreachable, package missing).
    #[error("cannot build the Debian {suite} chroot from {archive}: {detail} (is the archive reachable from here? Inside a private network namespace it is not: build the chroot first with `testenv chroot --release RELEASE` outside it)")]
    ChrootBuild {
        /// The Debian suite (trixie, sid).
        suite: String,
        /// The archive URL used.
        archive: String,
        /// What failed (debootstrap/apt error lines).
        detail: String,
    },
    /// A worker thread panicked (a bug in this crate).
    #[error("worker thread for {0} panicked")]
    ThreadPanicked(String),
    /// The [`crate::writer::Writer`] cannot write into the image it was given.
    #[error("writer: {0}")]
    Writer(String),
    /// A librbd call of the [`crate::writer::Writer`] failed.
    #[error("writer: {0}")]
    Rbd(#[from] librbd::RbdError),
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] for `path`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Http`] for a request that could not be sent or whose answer was unreadable.
    pub(crate) fn http(method: impl ToString, url: &str, source: reqwest::Error) -> Self {
        Error::Http {
            method: method.to_string(),
            url: url.to_string(),
            source,
        }
    }
}
