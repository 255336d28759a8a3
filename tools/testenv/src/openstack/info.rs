//! What the clouds look like to a client (users, regions, URLs, pools, the Cinder host
//! string): written into the environment's state file, printed by `testenv env`, read by the
//! real tests. Kept apart from starting and stopping the daemons (`mod.rs`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::CephSite;

/// A user and project to log in with (domain `Default` for both). Test-only passwords.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Project name.
    pub project_name: String,
    /// Project id (hex; Cinder URLs carry it).
    pub project_id: String,
}

/// One cloud (a Keystone region with its Cinder and Glance) as a client sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CloudInfo {
    /// Keystone region (the Ceph cluster's name).
    pub region: String,
    /// Cloud in clouds.yaml for the admin user (`SITE-admin`).
    pub admin_cloud: String,
    /// Cloud in clouds.yaml for the member user (`SITE-member`).
    pub member_cloud: String,
    /// The v3 URL of the Keystone this cloud's services use: the host's for the source
    /// cloud (and a destination on the host's OpenStack), the destination's own for a
    /// destination on a newer release.
    pub keystone_url: String,
    /// Id of the project `admin` in that Keystone (empty in records written before each
    /// cloud could have its own Keystone: then [`OpenStackInfo::admin`]'s).
    #[serde(default)]
    pub admin_project_id: String,
    /// Id of the project `demo` in that Keystone (empty: as for `admin_project_id`).
    #[serde(default)]
    pub member_project_id: String,
    /// Cinder's v3 root (`http://127.0.0.1:8776/v3`); append `/{project_id}`.
    pub cinder_url: String,
    /// Glance's root (`http://127.0.0.1:9292`); the API is under `/v2`.
    pub glance_url: String,
    /// Pool host string for manage-existing (`site-a@ceph#ceph`).
    pub cinder_host: String,
    /// Ceph cluster the cloud stores into.
    pub ceph_cluster: String,
    /// That cluster's fsid (the `rbd://FSID/...` location prefix).
    pub fsid: String,
    /// Pool of Cinder volumes.
    pub volume_pool: String,
    /// Pool of Glance images.
    pub image_pool: String,
    /// The ceph.conf Cinder and Glance use (a copy of the site's with their client sections).
    pub service_ceph_conf: PathBuf,
}

impl CloudInfo {
    /// Cinder's URL for `project_id` (`http://127.0.0.1:8776/v3/{project_id}`).
    pub fn cinder_project_url(&self, project_id: &str) -> String {
        format!("{}/{project_id}", self.cinder_url)
    }
}

/// What the clouds look like to a client: written into the environment's state file and
/// printed by `testenv env`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OpenStackInfo {
    /// clouds.yaml with `SITE-admin` and `SITE-member` for both clouds.
    pub clouds_yaml: PathBuf,
    /// The host's Keystone v3 URL (the source cloud's; see [`CloudInfo::keystone_url`]).
    pub keystone_url: String,
    /// The admin user (role admin in project `admin`); the project id is the host
    /// Keystone's.
    pub admin: Credentials,
    /// The non-admin user (role member in project `demo`).
    pub member: Credentials,
    /// The source cloud (on `sites[0]`).
    pub source: CloudInfo,
    /// The destination cloud (on `sites[1]`).
    pub destination: CloudInfo,
}

impl OpenStackInfo {
    /// `export NAME='value'` lines for a shell (`eval "$(testenv env)"`).
    pub fn env_lines(&self) -> Vec<String> {
        let mut vars: Vec<(String, String)> = vec![
            (
                "OS_CLIENT_CONFIG_FILE".into(),
                self.clouds_yaml.display().to_string(),
            ),
            ("RBD_RELAY_KEYSTONE_URL".into(), self.keystone_url.clone()),
            (
                "RBD_RELAY_OS_ADMIN_PROJECT_ID".into(),
                self.admin.project_id.clone(),
            ),
            (
                "RBD_RELAY_OS_MEMBER_PROJECT_ID".into(),
                self.member.project_id.clone(),
            ),
        ];
        for (tag, c) in [("SRC", &self.source), ("DST", &self.destination)] {
            let p = |k: &str| format!("RBD_RELAY_{tag}_{k}");
            let admin_project = if c.admin_project_id.is_empty() {
                &self.admin.project_id
            } else {
                &c.admin_project_id
            };
            vars.extend([
                (p("KEYSTONE_URL"), c.keystone_url.clone()),
                (p("CLOUD"), c.admin_cloud.clone()),
                (p("MEMBER_CLOUD"), c.member_cloud.clone()),
                (p("REGION"), c.region.clone()),
                (p("CINDER_URL"), c.cinder_project_url(admin_project)),
                (p("GLANCE_URL"), c.glance_url.clone()),
                (p("CINDER_HOST"), c.cinder_host.clone()),
            ]);
        }
        vars.into_iter()
            .map(|(k, v)| format!("export {k}='{}'", v.replace('\'', r"'\''")))
            .collect()
    }

    /// Does this record describe clouds on exactly these sites?
    pub(crate) fn matches(&self, sites: &[CephSite]) -> bool {
        let same = |c: &CloudInfo, s: &CephSite| c.ceph_cluster == s.name && c.fsid == s.fsid;
        sites.len() == 2 && same(&self.source, &sites[0]) && same(&self.destination, &sites[1])
    }
}

/// One daemon of the clouds and whether it runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceStatus {
    /// Service name (`rabbitmq`, `keystone`, `cinder-volume.site-a`, ...).
    pub name: String,
    /// Its recorded pid, if any.
    pub pid: Option<i32>,
    /// Whether that process is alive (and is still the one recorded).
    pub alive: bool,
}
