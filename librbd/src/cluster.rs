//! Connections to a Ceph cluster (`rados_t`) and pools (`rados_ioctx_t`).
//!
//! The librados declarations come from `librbd-sys` (the C calls only); the handles are
//! owned here: [`Cluster`] shuts down exactly once, when the last
//! [`IoCtx`]/[`crate::Image`] using it is gone, and no raw pointer leaves this crate.
//! Buffers librados allocates (command output) are copied and freed with
//! `rados_buffer_free`.
//! Timeouts are set before `rados_connect` so a dead cluster fails fast instead of hanging.

use std::ffi::CString;
use std::path::PathBuf;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use libc::{c_char, c_int, size_t};
use librbd_sys as sys;

use super::error::{
    check, cstring, from_buf, from_c, grow_string_fixed, grow_string_with_len, RbdError, Result,
};

/// How to reach a cluster: name, conf file, cephx user, timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Cluster name (`ceph --cluster NAME`); expands `$cluster` in the conf (keyring path).
    pub cluster_name: String,
    /// The conf file; `None` means `/etc/ceph/<cluster_name>.conf`.
    pub conf_path: Option<PathBuf>,
    /// cephx user without the `client.` prefix (default `admin`).
    pub client_id: String,
    /// Keyring path overriding the conf's `keyring` option (normally `None`).
    pub keyring: Option<PathBuf>,
    /// Applied to `client_mount_timeout`, `rados_mon_op_timeout` and
    /// `rados_osd_op_timeout` (default 30 s).
    pub timeout: Duration,
    /// More options set on the connection (`rados_conf_set`) after the conf file is read.
    pub options: Vec<(String, String)>,
}

impl ClusterConfig {
    /// Config for `name` with the defaults: `/etc/ceph/NAME.conf`, `client.admin`, 30 s.
    pub fn new(cluster_name: impl Into<String>) -> Self {
        Self {
            cluster_name: cluster_name.into(),
            conf_path: None,
            client_id: "admin".into(),
            keyring: None,
            timeout: Duration::from_secs(30),
            options: Vec::new(),
        }
    }

    /// Sets the conf file path.
    pub fn conf(mut self, path: impl Into<PathBuf>) -> Self {
        self.conf_path = Some(path.into());
        self
    }

    /// Sets the cephx client id (without `client.`).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = id.into();
        self
    }

    /// Sets the keyring path.
    pub fn keyring(mut self, path: impl Into<PathBuf>) -> Self {
        self.keyring = Some(path.into());
        self
    }

    /// Sets the connect/op timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets one more option on the connection, overriding the conf file.
    pub fn option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }

    /// The conf path that will be read.
    pub fn effective_conf_path(&self) -> PathBuf {
        self.conf_path
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/etc/ceph/{}.conf", self.cluster_name)))
    }
}

/// Owner of one `rados_t`; shut down exactly once in `Drop`. Private to this file: the
/// only way to reach the pointer is through a [`Cluster`], which holds it in an `Arc`.
struct RadosHandle {
    raw: sys::rados_t,
    name: String,
}

// SAFETY: librados cluster handles are documented thread-safe ("the rados_t handle may be
// shared between threads"); all state behind it is internally locked. The pointer is only
// freed in Drop, which runs once, after every user (IoCtx/Image hold an Arc) is gone.
unsafe impl Send for RadosHandle {}
// SAFETY: see Send: concurrent calls on one rados_t are supported by librados.
unsafe impl Sync for RadosHandle {}

/// Set by [`leave_connections_to_process_exit`].
static LEAVE_TO_EXIT: AtomicBool = AtomicBool::new(false);
/// How many connections were left to the process's end so far.
static LEFT_TO_EXIT: AtomicUsize = AtomicUsize::new(0);
/// At most this many connections are left to the process's end; later ones are shut down
/// as usual, so a long-running program that connects again and again does not pile up
/// librados threads and sockets.
const MAX_LEFT_TO_EXIT: usize = 8;

/// From now on, a connection whose last user is dropped is not shut down: its librados
/// threads and sockets are left to the end of the process (at most 8 connections; later
/// ones are shut down as usual). For a short-lived program that ends with
/// [`crate::exit_immediately`]: `rados_shutdown` joins librados' threads, and Ceph 16.2.15
/// was seen to abort there on a loaded machine (a librados thread ending by an uncaught
/// `std::system_error`, "Invalid argument", while `Rados::shutdown` joined it; the `rbd`
/// tool itself dies the same way), which turned a finished run into a death by SIGABRT.
/// Nothing is lost by not shutting down: images are still closed when dropped (their
/// writes flushed, their watches and locks released), and the kernel closes the sockets
/// as it does for a killed process.
pub fn leave_connections_to_process_exit() {
    LEAVE_TO_EXIT.store(true, Ordering::SeqCst);
}

impl Drop for RadosHandle {
    fn drop(&mut self) {
        if LEAVE_TO_EXIT.load(Ordering::SeqCst)
            && LEFT_TO_EXIT.fetch_add(1, Ordering::SeqCst) < MAX_LEFT_TO_EXIT
        {
            return;
        }
        // SAFETY: `raw` came from rados_create2, is non-null and is shut down only here.
        unsafe { sys::rados_shutdown(self.raw) };
    }
}

/// A connected cluster (wraps `rados_t`). Cheap to clone; the connection closes when the
/// last clone and every [`IoCtx`]/[`crate::Image`] made from it are dropped.
#[derive(Clone)]
pub struct Cluster {
    handle: Arc<RadosHandle>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.handle.name)
            .finish()
    }
}

fn set_conf(raw: sys::rados_t, ctx: &str, key: &str, value: &str) -> Result<()> {
    let k = cstring(key, "rados_conf_set", || ctx.to_string())?;
    let v = cstring(value, "rados_conf_set", || ctx.to_string())?;
    // SAFETY: raw is a created, not yet connected handle; k and v are valid C strings.
    let ret = unsafe { sys::rados_conf_set(raw, k.as_ptr(), v.as_ptr()) };
    check(ret, "rados_conf_set", || {
        format!("{ctx}, option {key}={value}")
    })?;
    Ok(())
}

impl Cluster {
    /// Connects: `rados_create2` (cluster name, `client.<id>`), `rados_conf_read_file`,
    /// `rados_conf_set` of the three timeouts (and keyring if given), `rados_connect`.
    pub fn connect(config: &ClusterConfig) -> Result<Self> {
        let ctx = format!("cluster {}", config.cluster_name);
        let name = cstring(&config.cluster_name, "rados_create2", || ctx.clone())?;
        let user = cstring(
            &format!("client.{}", config.client_id),
            "rados_create2",
            || ctx.clone(),
        )?;
        let mut raw: sys::rados_t = ptr::null_mut();
        // SAFETY: out-pointer is valid; name/user are valid C strings for the call.
        let ret = unsafe { sys::rados_create2(&mut raw, name.as_ptr(), user.as_ptr(), 0) };
        check(ret, "rados_create2", || ctx.clone())?;
        // From here on the handle is owned: an early return shuts it down.
        let handle = RadosHandle {
            raw,
            name: config.cluster_name.clone(),
        };
        let conf = config.effective_conf_path();
        let conf_c = cstring(&conf.to_string_lossy(), "rados_conf_read_file", || {
            ctx.clone()
        })?;
        // SAFETY: handle.raw is a valid, unconnected rados_t; conf_c is a valid C string.
        let ret = unsafe { sys::rados_conf_read_file(handle.raw, conf_c.as_ptr()) };
        check(ret, "rados_conf_read_file", || {
            format!("{ctx}, conf {}", conf.display())
        })?;
        let secs = config.timeout.as_secs().max(1).to_string();
        for key in [
            "client_mount_timeout",
            "rados_mon_op_timeout",
            "rados_osd_op_timeout",
        ] {
            set_conf(handle.raw, &ctx, key, &secs)?;
        }
        if let Some(keyring) = &config.keyring {
            set_conf(handle.raw, &ctx, "keyring", &keyring.to_string_lossy())?;
        }
        for (key, value) in &config.options {
            set_conf(handle.raw, &ctx, key, value)?;
        }
        // SAFETY: handle.raw is a configured rados_t; connect is called once.
        let ret = unsafe { sys::rados_connect(handle.raw) };
        check(ret, "rados_connect", || {
            format!("{ctx}, conf {}", conf.display())
        })?;
        Ok(Self {
            handle: Arc::new(handle),
        })
    }

    /// The cluster name this handle was created with.
    pub fn name(&self) -> &str {
        &self.handle.name
    }

    fn ctx(&self) -> String {
        format!("cluster {}", self.handle.name)
    }

    /// The cluster fsid (`rados_cluster_fsid`; the buffer grows on `-ERANGE`).
    pub fn fsid(&self) -> Result<String> {
        grow_string_fixed(
            "rados_cluster_fsid",
            || self.ctx(),
            |buf, len| {
                // SAFETY: buf is writable for len bytes; the handle is connected.
                unsafe { sys::rados_cluster_fsid(self.handle.raw, buf, len) }
            },
        )
    }

    /// The value of option `key` on this connection (`rados_conf_get`): the conf file's,
    /// overridden by [`ClusterConfig::option`]s. Values longer than 4 KiB fail
    /// (`ENAMETOOLONG`).
    pub fn conf_get(&self, key: &str) -> Result<String> {
        let ctx = || format!("{}, option {key}", self.ctx());
        let key_c = cstring(key, "rados_conf_get", ctx)?;
        let mut buf = vec![0u8; 4096];
        // SAFETY: connected handle; key_c is a valid C string; buf is writable for its
        // length, and librados writes a NUL-terminated value of at most that length.
        let ret = unsafe {
            sys::rados_conf_get(
                self.handle.raw,
                key_c.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        check(ret, "rados_conf_get", ctx)?;
        Ok(from_buf(&buf))
    }

    /// Opens an I/O context on `pool` (`rados_ioctx_create`).
    pub fn ioctx(&self, pool: &str) -> Result<IoCtx> {
        self.ioctx_ns(pool, "")
    }

    /// Opens an I/O context on `pool` inside the RADOS/RBD namespace `namespace`
    /// (`rados_ioctx_create` + `rados_ioctx_set_namespace`; "" is the default namespace).
    pub fn ioctx_ns(&self, pool: &str, namespace: &str) -> Result<IoCtx> {
        let ctx = || format!("{}, pool {pool}", self.ctx());
        let pool_c = cstring(pool, "rados_ioctx_create", ctx)?;
        let ns_c = cstring(namespace, "rados_ioctx_set_namespace", ctx)?;
        let mut raw: sys::rados_ioctx_t = ptr::null_mut();
        // SAFETY: connected handle, valid C string, valid out-pointer.
        let ret = unsafe { sys::rados_ioctx_create(self.handle.raw, pool_c.as_ptr(), &mut raw) };
        check(ret, "rados_ioctx_create", ctx)?;
        let io = IoCtx {
            raw,
            cluster: self.clone(),
            pool: pool.to_string(),
            namespace: namespace.to_string(),
        };
        if !namespace.is_empty() {
            // SAFETY: io.raw is a fresh ioctx not yet shared with anyone; ns_c is valid.
            unsafe { sys::rados_ioctx_set_namespace(io.raw, ns_c.as_ptr()) };
        }
        Ok(io)
    }

    /// The local mirror site name (`rbd_mirror_site_name_get`; defaults to the fsid).
    pub fn mirror_site_name(&self) -> Result<String> {
        grow_string_with_len(
            "rbd_mirror_site_name_get",
            || self.ctx(),
            |buf, len| {
                // SAFETY: buf is writable for *len bytes, len is a valid pointer.
                unsafe { librbd_sys::rbd_mirror_site_name_get(self.handle.raw, buf, len) }
            },
        )
    }

    /// Sets the local mirror site name (`rbd_mirror_site_name_set`).
    pub fn set_mirror_site_name(&self, name: &str) -> Result<()> {
        let c = cstring(name, "rbd_mirror_site_name_set", || self.ctx())?;
        // SAFETY: connected handle, valid C string.
        let ret = unsafe { librbd_sys::rbd_mirror_site_name_set(self.handle.raw, c.as_ptr()) };
        check(ret, "rbd_mirror_site_name_set", || self.ctx())?;
        Ok(())
    }

    /// Runs a monitor command (`rados_mon_command`), `cmd` is its JSON; returns the output
    /// buffer as text. A failure carries the monitor's status string as detail.
    pub fn mon_command(&self, cmd: &str) -> Result<String> {
        self.command(cmd, CommandTarget::Mon)
    }

    /// Runs a command on one named monitor (`rados_mon_command_target`), such as `sessions`,
    /// which only the monitor itself answers (`ceph tell mon.NAME ...`).
    pub fn mon_command_target(&self, mon: &str, cmd: &str) -> Result<String> {
        self.command(cmd, CommandTarget::OneMon(mon))
    }

    /// Runs a mgr command (`rados_mgr_command`), e.g. `{"prefix":"service dump"}`.
    pub fn mgr_command(&self, cmd: &str) -> Result<String> {
        self.command(cmd, CommandTarget::Mgr)
    }

    fn command(&self, cmd: &str, target: CommandTarget<'_>) -> Result<String> {
        let op = match target {
            CommandTarget::Mgr => "rados_mgr_command",
            CommandTarget::Mon => "rados_mon_command",
            CommandTarget::OneMon(_) => "rados_mon_command_target",
        };
        let mgr = matches!(target, CommandTarget::Mgr);
        let ctx = || format!("{}, command {cmd}", self.ctx());
        let cmd_c: CString = cstring(cmd, op, ctx)?;
        let mon_c: Option<CString> = match target {
            CommandTarget::OneMon(name) => Some(cstring(name, op, ctx)?),
            _ => None,
        };
        let mut cmds = [cmd_c.as_ptr()];
        let mut outbuf: *mut c_char = ptr::null_mut();
        let mut outlen: size_t = 0;
        let mut outs: *mut c_char = ptr::null_mut();
        let mut outslen: size_t = 0;
        // SAFETY: one valid command string (and a valid monitor name for the targeted call); empty input; out-pointers valid. librados
        // allocates outbuf/outs, which are freed below with rados_buffer_free.
        let ret = unsafe {
            if mgr {
                sys::rados_mgr_command(
                    self.handle.raw,
                    cmds.as_mut_ptr(),
                    1,
                    ptr::null(),
                    0,
                    &mut outbuf,
                    &mut outlen,
                    &mut outs,
                    &mut outslen,
                )
            } else if let Some(mon) = &mon_c {
                sys::rados_mon_command_target(
                    self.handle.raw,
                    mon.as_ptr(),
                    cmds.as_mut_ptr(),
                    1,
                    ptr::null(),
                    0,
                    &mut outbuf,
                    &mut outlen,
                    &mut outs,
                    &mut outslen,
                )
            } else {
                sys::rados_mon_command(
                    self.handle.raw,
                    cmds.as_mut_ptr(),
                    1,
                    ptr::null(),
                    0,
                    &mut outbuf,
                    &mut outlen,
                    &mut outs,
                    &mut outslen,
                )
            }
        };
        // SAFETY: librados set outbuf/outs to buffers of outlen/outslen bytes (or NULL).
        let (out, status) = unsafe {
            let out = take_buffer(outbuf, outlen);
            let status = take_buffer(outs, outslen);
            (out, status)
        };
        check(ret, op, ctx).map_err(|e| e.with_detail(status))?;
        Ok(out)
    }

    /// Health of the rbd-mirror daemons for one pool, computed like `rbd mirror pool
    /// status` does: `service dump` (daemons) + `service status` (per-pool JSON reported
    /// by each daemon: leader, callouts) through [`Cluster::mgr_command`].
    pub fn mirror_daemon_health(&self, io: &IoCtx) -> Result<MirrorDaemonHealth> {
        let dump = self.mgr_command(r#"{"prefix":"service dump","format":"json"}"#)?;
        let status = self.mgr_command(r#"{"prefix":"service status","format":"json"}"#)?;
        let pool_id = io.pool_id();
        parse_daemon_health(&dump, &status, pool_id).map_err(|why| {
            RbdError::malformed(
                "rados_mgr_command",
                format!("{}, service map", self.ctx()),
                why,
            )
        })
    }
}

/// Where [`Cluster::command`] sends a command.
#[derive(Clone, Copy)]
enum CommandTarget<'a> {
    /// Any monitor (`rados_mon_command`).
    Mon,
    /// The named monitor (`rados_mon_command_target`).
    OneMon(&'a str),
    /// The active manager (`rados_mgr_command`).
    Mgr,
}

/// Copies and frees a librados-allocated output buffer.
///
/// # Safety
/// `p` must be NULL or a buffer of `len` bytes allocated by librados.
unsafe fn take_buffer(p: *mut c_char, len: size_t) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: caller guarantees p points to len readable bytes.
    let bytes = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) };
    let s = String::from_utf8_lossy(bytes).into_owned();
    // SAFETY: p was allocated by librados and is freed exactly once here.
    unsafe { sys::rados_buffer_free(p) };
    s
}

/// Health levels of `rbd mirror pool status` (ordered: Ok < Unknown < Warning < Error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MirrorHealth {
    /// All good.
    Ok,
    /// Not known.
    Unknown,
    /// Degraded (no leader, a daemon not reporting, warning callouts).
    Warning,
    /// Broken (no daemon reports this pool, error callouts).
    Error,
}

/// One rbd-mirror daemon as seen in the service map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorDaemon {
    /// Service map key (the daemon's gid).
    pub service_id: String,
    /// The daemon's client id (`rbd-mirror.<id>`), from metadata.
    pub client_id: String,
    /// Host it runs on.
    pub hostname: String,
    /// `ceph_version_short`.
    pub version: String,
    /// Instance id reported for this pool.
    pub instance_id: Option<String>,
    /// Whether it is the leader for this pool.
    pub leader: bool,
    /// Its health for this pool.
    pub health: MirrorHealth,
    /// Its callouts (problem descriptions).
    pub callouts: Vec<String>,
    /// `last_beacon` from `service status`: when the manager last heard from it.
    pub last_beacon: Option<String>,
}

/// Daemon health for one pool: overall level plus the daemons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorDaemonHealth {
    /// Overall: Error when no daemon reports the pool (also when there are no daemons),
    /// Warning without a leader, else the worst daemon health.
    pub health: MirrorHealth,
    /// Daemons registered in the service map.
    pub daemons: Vec<MirrorDaemon>,
}

fn parse_daemon_health(
    dump: &str,
    status: &str,
    pool_id: i64,
) -> std::result::Result<MirrorDaemonHealth, String> {
    use serde_json::Value;
    let dump: Value = serde_json::from_str(dump).map_err(|e| format!("service dump: {e}"))?;
    let status: Value = serde_json::from_str(status).map_err(|e| format!("service status: {e}"))?;
    let mut daemons = Vec::new();
    if let Some(map) = dump
        .pointer("/services/rbd-mirror/daemons")
        .and_then(Value::as_object)
    {
        for (service_id, d) in map {
            let Some(meta) = d.get("metadata").and_then(Value::as_object) else {
                continue; // the "summary" string and other non-daemon entries
            };
            let s = |k: &str| {
                meta.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            daemons.push(MirrorDaemon {
                service_id: service_id.clone(),
                client_id: s("id"),
                hostname: s("hostname"),
                version: s("ceph_version_short"),
                instance_id: None,
                leader: false,
                health: MirrorHealth::Ok,
                callouts: Vec::new(),
                last_beacon: None,
            });
        }
    }
    let (mut found_pool, mut found_leader) = (false, false);
    let statuses = status.get("rbd-mirror").and_then(Value::as_object);
    for daemon in &mut daemons {
        let entry = statuses.and_then(|m| m.get(&daemon.service_id));
        daemon.last_beacon = entry
            .and_then(|d| d.get("last_beacon"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let json = entry
            .and_then(|d| d.pointer("/status/json"))
            .and_then(Value::as_str);
        let Some(json) = json else {
            daemon.callouts.push("not reporting status".into());
            daemon.health = MirrorHealth::Warning;
            continue;
        };
        let parsed: Value =
            serde_json::from_str(json).map_err(|e| format!("daemon status json: {e}"))?;
        let Some(pool) = parsed.get(pool_id.to_string()) else {
            daemon.callouts.push("not reporting status for pool".into());
            daemon.health = MirrorHealth::Warning;
            continue;
        };
        found_pool = true;
        daemon.instance_id = pool
            .get("instance_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        if pool.get("leader").and_then(Value::as_bool) == Some(true) {
            daemon.leader = true;
            found_leader = true;
        }
        let mut health = MirrorHealth::Ok;
        if let Some(callouts) = pool.get("callouts").and_then(Value::as_object) {
            for callout in callouts.values() {
                match callout.get("level").and_then(Value::as_str) {
                    Some("error") => health = health.max(MirrorHealth::Error),
                    Some("warning") => health = health.max(MirrorHealth::Warning),
                    _ => {}
                }
                if let Some(text) = callout.get("text").and_then(Value::as_str) {
                    daemon.callouts.push(text.to_string());
                }
            }
        }
        daemon.health = health;
    }
    let mut health = if !found_pool {
        MirrorHealth::Error
    } else if !found_leader {
        MirrorHealth::Warning
    } else {
        MirrorHealth::Ok
    };
    for d in &daemons {
        health = health.max(d.health);
    }
    Ok(MirrorDaemonHealth { health, daemons })
}

/// An I/O context on one pool (and namespace) of a [`Cluster`] (wraps `rados_ioctx_t`).
pub struct IoCtx {
    pub(super) raw: sys::rados_ioctx_t,
    pub(super) cluster: Cluster,
    pool: String,
    namespace: String,
}

// SAFETY: librados ioctx handles may be used from any thread; the only non-thread-safe
// operations are those changing ioctx state (namespace, snap context, locator), which this
// type does once, in Cluster::ioctx_ns, before the value is shared. It keeps its cluster
// alive through `cluster`.
unsafe impl Send for IoCtx {}
// SAFETY: see Send: after construction the ioctx is only read.
unsafe impl Sync for IoCtx {}

impl Drop for IoCtx {
    fn drop(&mut self) {
        // SAFETY: raw came from rados_ioctx_create and is destroyed exactly once, here,
        // while `cluster` (dropped after this) still keeps rados_t alive.
        unsafe { sys::rados_ioctx_destroy(self.raw) };
    }
}

impl std::fmt::Debug for IoCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoCtx")
            .field("cluster", &self.cluster.handle.name)
            .field("pool", &self.pool)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl IoCtx {
    /// Pool name.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// Namespace ("" = default).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The cluster this pool belongs to.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Pool id (`rados_ioctx_get_id`).
    pub fn pool_id(&self) -> i64 {
        // SAFETY: raw is a valid ioctx.
        unsafe { sys::rados_ioctx_get_id(self.raw) }
    }

    /// "cluster C, pool P[/NS]" for error contexts.
    pub(crate) fn ctx(&self) -> String {
        if self.namespace.is_empty() {
            format!("cluster {}, pool {}", self.cluster.handle.name, self.pool)
        } else {
            format!(
                "cluster {}, pool {}/{}",
                self.cluster.handle.name, self.pool, self.namespace
            )
        }
    }

    /// "cluster C, image P[/NS]/NAME" for error contexts.
    pub(crate) fn image_ctx(&self, image: &str) -> String {
        if self.namespace.is_empty() {
            format!(
                "cluster {}, image {}/{image}",
                self.cluster.handle.name, self.pool
            )
        } else {
            format!(
                "cluster {}, image {}/{}/{image}",
                self.cluster.handle.name, self.pool, self.namespace
            )
        }
    }

    /// Reads every omap key/value of `oid` whose key starts with `prefix`
    /// (`rados_read_op_omap_get_vals` + `rados_read_op_operate`, paged).
    pub fn omap_get_vals(&self, oid: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        const PAGE: u64 = 512;
        let ctx = || format!("{}, object {oid}", self.ctx());
        let oid_c = cstring(oid, "rados_read_op_operate", ctx)?;
        let prefix_c = cstring(prefix, "rados_read_op_omap_get_vals", ctx)?;
        let mut out = Vec::new();
        let mut start_after = CString::default();
        loop {
            let page = self.omap_page(&oid_c, &start_after, &prefix_c, PAGE, &ctx)?;
            let n = page.len();
            if let Some((last, _)) = page.last() {
                start_after = cstring(last, "rados_read_op_omap_get_vals", ctx)?;
            }
            out.extend(page);
            if (n as u64) < PAGE {
                return Ok(out);
            }
        }
    }

    fn omap_page(
        &self,
        oid: &CString,
        start_after: &CString,
        prefix: &CString,
        max: u64,
        ctx: &dyn Fn() -> String,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        /// Releases the read op (and its iterator) however the function returns.
        struct ReadOp(sys::rados_read_op_t, sys::rados_omap_iter_t);
        impl Drop for ReadOp {
            fn drop(&mut self) {
                // SAFETY: the iterator (if set by a successful operate) and the op were
                // created by librados and are released once, iterator first.
                unsafe {
                    if !self.1.is_null() {
                        sys::rados_omap_get_end(self.1);
                    }
                    sys::rados_release_read_op(self.0);
                }
            }
        }
        // SAFETY: plain allocation by librados.
        let mut op = ReadOp(unsafe { sys::rados_create_read_op() }, ptr::null_mut());
        let mut prval: c_int = 0;
        let mut iter: sys::rados_omap_iter_t = ptr::null_mut();
        // SAFETY: op is valid; strings outlive the operate call below; iter/prval are
        // written when the op runs, and both locals outlive it.
        unsafe {
            sys::rados_read_op_omap_get_vals(
                op.0,
                start_after.as_ptr(),
                prefix.as_ptr(),
                max,
                &mut iter,
                &mut prval,
            );
        }
        // SAFETY: op, ioctx and oid are valid.
        let ret = unsafe { sys::rados_read_op_operate(op.0, self.raw, oid.as_ptr(), 0) };
        op.1 = iter;
        check(ret, "rados_read_op_operate", ctx)?;
        check(prval, "rados_read_op_omap_get_vals", ctx)?;
        let mut out = Vec::new();
        loop {
            let mut key: *mut c_char = ptr::null_mut();
            let mut val: *mut c_char = ptr::null_mut();
            let mut len: size_t = 0;
            // SAFETY: iter is valid until rados_omap_get_end (in ReadOp::drop).
            let ret = unsafe { sys::rados_omap_get_next(op.1, &mut key, &mut val, &mut len) };
            check(ret, "rados_omap_get_next", ctx)?;
            if key.is_null() {
                return Ok(out);
            }
            // SAFETY: key is a NUL-terminated string and val points to len bytes, both
            // owned by the iterator and valid until the next call; we copy them.
            let entry = unsafe {
                let k = from_c(key);
                let v = if val.is_null() {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(val.cast::<u8>(), len).to_vec()
                };
                (k, v)
            };
            out.push(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_health_follows_rbd_mirror_pool_status_rules() {
        let dump = r#"{"services":{"rbd-mirror":{"daemons":{"summary":"","4125":{"metadata":{"id":"b","hostname":"vm","ceph_version_short":"16.2.15"}}}}}}"#;
        let ok = r#"{"rbd-mirror":{"4125":{"status":{"json":"{\"2\":{\"callouts\":{},\"image_assigned_count\":0,\"instance_id\":\"4127\",\"leader\":true}}"}}}}"#;
        let h = parse_daemon_health(dump, ok, 2).unwrap();
        assert_eq!(h.health, MirrorHealth::Ok);
        assert_eq!(h.daemons.len(), 1);
        assert!(h.daemons[0].leader);
        assert_eq!(h.daemons[0].instance_id.as_deref(), Some("4127"));
        // same daemon, other pool: nobody reports pool 3
        let h = parse_daemon_health(dump, ok, 3).unwrap();
        assert_eq!(h.health, MirrorHealth::Error);
        // no daemons at all
        let h = parse_daemon_health(r#"{"services":{}}"#, "{}", 2).unwrap();
        assert_eq!(h.health, MirrorHealth::Error);
        assert!(h.daemons.is_empty());
        let warn = r#"{"rbd-mirror":{"4125":{"status":{"json":"{\"2\":{\"callouts\":{\"x\":{\"level\":\"warning\",\"text\":\"slow\"}},\"leader\":true}}"}}}}"#;
        let h = parse_daemon_health(dump, warn, 2).unwrap();
        assert_eq!(h.health, MirrorHealth::Warning);
        assert_eq!(h.daemons[0].callouts, vec!["slow".to_string()]);
    }
}
