//! The one RabbitMQ node both Cinder deployments use, kept apart by virtual hosts.
//!
//! Two Cinders on one broker and one vhost would both consume the `cinder-scheduler` and
//! `cinder-volume` queues: Cinder 21 (Zed) has no `scheduler_topic`/`volume_topic` options any
//! more, and oslo.messaging names topic queues after the topic alone, so a distinct
//! `control_exchange` would still share the queues. Each cloud therefore gets its own vhost
//! (named after its site). The vhosts, the `openstack` user and its permissions are created by
//! a definitions file imported at boot (no `rabbitmqctl` round trips, ~1.5 s each). When a
//! definitions file is imported RabbitMQ does not create the default `guest` user, so the user
//! comes with a salted SHA-256 hash in RabbitMQ's format.
//!
//! Ports are private (AMQP 5682, distribution 25682, epmd 4379) so the node never meets the
//! reference fixtures' node (5692/25692/4389). The node's epmd daemonizes outside our process
//! group: `down` stops it with `epmd -kill` on our epmd port only.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use sha2::{Digest, Sha256};

use super::process::{self, Daemon};
use super::{Error, RABBIT_DIST_PORT, RABBIT_EPMD_PORT, RABBIT_PORT};

/// The broker user both Cinders log in as (one vhost each).
pub(crate) const USER: &str = "openstack";
/// Its password (test-only).
pub(crate) const PASSWORD: &str = "rabbit-secret";
/// Erlang node name.
const NODE: &str = "rbdrelay@localhost";

/// The directory of the node's files.
pub(crate) fn dir(root: &Path) -> PathBuf {
    root.join("rabbit")
}

/// The daemon record.
pub(crate) fn daemon(root: &Path) -> Daemon {
    Daemon::new(root, "rabbitmq")
}

/// RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt ++ sha256(salt ++ password)).
fn password_hash(password: &str) -> String {
    let uuid = uuid::Uuid::new_v4();
    let salt = &uuid.as_bytes()[..4];
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    let mut bytes = salt.to_vec();
    bytes.extend_from_slice(&h.finalize());
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The transport URL of `vhost`.
pub(crate) fn transport_url(vhost: &str) -> String {
    format!("rabbit://{USER}:{PASSWORD}@127.0.0.1:{RABBIT_PORT}/{vhost}")
}

/// Writes the node's config and definitions and starts it (not waited for: it boots in ~5 s
/// while Keystone and the databases are prepared).
pub(crate) fn start(root: &Path, vhosts: &[&str]) -> Result<(), Error> {
    let d = dir(root);
    for sub in ["mnesia", "log", "home"] {
        let p = d.join(sub);
        fs::create_dir_all(&p).map_err(|e| Error::io("create", &p, e))?;
    }
    let defs = serde_json::json!({
        "users": [{
            "name": USER,
            "password_hash": password_hash(PASSWORD),
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": "",
        }],
        "vhosts": vhosts.iter().map(|v| serde_json::json!({"name": v})).collect::<Vec<_>>(),
        "permissions": vhosts.iter().map(|v| serde_json::json!({
            "user": USER, "vhost": v, "configure": ".*", "write": ".*", "read": ".*",
        })).collect::<Vec<_>>(),
    });
    let defs_path = d.join("definitions.json");
    super::write(&defs_path, &defs.to_string())?;
    super::write(&d.join("enabled_plugins"), "[].\n")?;
    super::write(
        &d.join("rabbitmq.conf"),
        &format!(
            "listeners.tcp.default = 127.0.0.1:{RABBIT_PORT}\n\
             vm_memory_high_watermark.absolute = 512MiB\n\
             disk_free_limit.absolute = 50MB\n\
             definitions.import_backend = local_filesystem\n\
             definitions.local.path = {}\n",
            defs_path.display()
        ),
    )?;
    let s = |p: &str| d.join(p).display().to_string();
    let envs: Vec<(String, String)> = [
        ("HOME", s("home")),
        ("ERL_EPMD_PORT", RABBIT_EPMD_PORT.to_string()),
        ("ERL_EPMD_ADDRESS", "127.0.0.1".into()),
        ("ERL_CRASH_DUMP", s("log/erl_crash.dump")),
        ("RABBITMQ_NODENAME", NODE.into()),
        ("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1".into()),
        ("RABBITMQ_NODE_PORT", RABBIT_PORT.to_string()),
        ("RABBITMQ_DIST_PORT", RABBIT_DIST_PORT.to_string()),
        ("RABBITMQ_MNESIA_BASE", s("mnesia")),
        ("RABBITMQ_LOG_BASE", s("log")),
        ("RABBITMQ_PID_FILE", s("rabbit.pid")),
        ("RABBITMQ_ENABLED_PLUGINS_FILE", s("enabled_plugins")),
        ("RABBITMQ_CONFIG_FILE", s("rabbitmq")),
        (
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
            "-kernel inet_dist_use_interface {127,0,0,1}".into(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    daemon(root).start(
        Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server"),
        &[],
        &envs,
    )?;
    Ok(())
}

/// Waits for the broker's "completed" line (cheap, unlike `rabbitmqctl`), failing fast on
/// "BOOT FAILED" or a dead process.
pub(crate) fn wait_ready(root: &Path, timeout: Duration) -> Result<(), Error> {
    let dmn = daemon(root);
    process::wait_for(
        "rabbitmq broker start",
        timeout,
        Duration::from_millis(200),
        || {
            let text = fs::read_to_string(&dmn.log).unwrap_or_default();
            if text.contains("Starting broker... completed") {
                return Ok(true);
            }
            if text.contains("BOOT FAILED") {
                return Err(Error::Died {
                    service: dmn.name.clone(),
                    log: dmn.log.clone(),
                    tail: process::tail(&text, 1500),
                });
            }
            dmn.ensure_running()?;
            Ok(false)
        },
    )
}

/// Stops the node, then the epmd on our port (it outlives the node).
pub(crate) fn stop(root: &Path) -> Result<(), Error> {
    process::stop(&daemon(root).pid_file, Duration::from_secs(15))?;
    let port = RABBIT_EPMD_PORT.to_string();
    let names = Command::new("epmd")
        .arg("-names")
        .env("ERL_EPMD_PORT", &port)
        .output();
    if matches!(names, Ok(ref o) if o.status.success()) {
        let _ = Command::new("epmd")
            .arg("-kill")
            .env("ERL_EPMD_PORT", &port)
            .output();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn password_hash_is_rabbitmq_salted_sha256() {
        let b64 = password_hash("pw");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(bytes.len(), 4 + 32);
        let (salt, digest) = bytes.split_at(4);
        let mut h = Sha256::new();
        h.update(salt);
        h.update(b"pw");
        assert_eq!(digest, h.finalize().as_slice());
    }

    #[test]
    fn each_cloud_has_its_own_vhost() {
        assert_eq!(
            transport_url("site-b"),
            "rabbit://openstack:rabbit-secret@127.0.0.1:5682/site-b"
        );
    }
}
