//! The state file (`state.json` in the state directory): what a running environment looks
//! like to clients. It is written (atomically) only once the pair is up and healthy, so its
//! presence plus live daemons means "up". It holds no secret: keys stay in the keyrings.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layout::{Objectstore, Release};
use crate::openstack::OpenStackInfo;
use crate::CephSite;

/// Version of the state file format.
pub(crate) const STATE_VERSION: u32 = 1;

/// Contents of `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct State {
    pub version: u32,
    pub objectstore: Objectstore,
    /// site-a, then site-b.
    pub sites: Vec<CephSite>,
    /// Ceph release site-b's daemons run (site-a always runs the host's). Missing in state
    /// files written before releases could be chosen: those ran Pacific.
    #[serde(default)]
    pub site_b_release: Release,
    /// Admin socket of the rbd-mirror daemon (on site-b).
    pub rbd_mirror_asok: PathBuf,
    /// The clouds, once `openstack::up` has run.
    #[serde(default)]
    pub openstack: Option<OpenStackInfo>,
}

impl State {
    /// Reads the state file; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<State>> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", path, e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| Error::StateFile {
                path: path.to_path_buf(),
                source,
            })
    }

    /// Writes the state file atomically (temporary file + rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|source| Error::StateFile {
            path: path.to_path_buf(),
            source,
        })?;
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, text + "\n").map_err(|e| Error::io("write", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io("rename", &tmp, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_missing_file_is_none() {
        let dir = std::env::temp_dir().join(format!("testenv-state-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let _ = fs::remove_file(&path);
        assert_eq!(State::load(&path).unwrap(), None);
        let state = State {
            version: STATE_VERSION,
            objectstore: Objectstore::Bluestore,
            sites: vec![CephSite {
                name: "site-a".into(),
                conf: "/etc/ceph/site-a.conf".into(),
                admin_keyring: "/etc/ceph/site-a.client.admin.keyring".into(),
                fsid: "x".into(),
            }],
            site_b_release: Release::Reef,
            rbd_mirror_asok: "/a.asok".into(),
            openstack: None,
        };
        state.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), Some(state));
        fs::write(&path, "{").unwrap();
        assert!(matches!(State::load(&path), Err(Error::StateFile { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }
}
