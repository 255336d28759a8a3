//! Connecting an [`RbdCeph`] and the handles its calls open: cluster, pool contexts, images
//! (read-write or read-only), and the monitor commands it reads (`df`, pool ids, sessions).

use super::memory;
use super::replies::{parse_df, parse_pool_ids, DfPool};
use super::{OrOps, RbdCeph};
use librbd::{Cluster, ClusterConfig, Image, IoCtx};
use rbd_mirror_core::ops::{ErrorKind, OpsError, OpsResult, ReadPin};
use rbd_mirror_core::spec::{ClusterSpec, ImageSpec, PoolSpec};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Client global id -> cephx name, from every monitor's `sessions` (each monitor lists only
/// the clients connected to it). Empty when the monitors cannot be asked (a client without
/// the caps): the caller then knows users only by id and address.
fn session_names_of(cluster: &Cluster) -> std::collections::HashMap<i64, String> {
    #[derive(serde::Deserialize)]
    struct MonMap {
        mons: Vec<Mon>,
    }
    #[derive(serde::Deserialize)]
    struct Mon {
        name: String,
    }
    #[derive(serde::Deserialize)]
    struct Session {
        #[serde(default)]
        entity_name: String,
        #[serde(default)]
        global_id: i64,
    }
    let mut names = std::collections::HashMap::new();
    let Ok(dump) = cluster.mon_command(r#"{"prefix":"mon dump","format":"json"}"#) else {
        return names;
    };
    let Ok(map) = serde_json::from_str::<MonMap>(&dump) else {
        return names;
    };
    for mon in map.mons {
        let Ok(out) =
            cluster.mon_command_target(&mon.name, r#"{"prefix":"sessions","format":"json"}"#)
        else {
            continue;
        };
        if let Ok(sessions) = serde_json::from_str::<Vec<Session>>(&out) {
            for s in sessions {
                if s.global_id > 0 && !s.entity_name.is_empty() {
                    names.insert(s.global_id, s.entity_name);
                }
            }
        }
    }
    names
}

impl RbdCeph {
    /// See [`session_names_of`].
    pub(super) fn session_names(&self) -> std::collections::HashMap<i64, String> {
        session_names_of(&self.cluster)
    }

    /// Connect to the cluster of `spec` (conf, client id); fails fast when it is unreachable.
    pub fn connect(spec: &ClusterSpec) -> OpsResult<Self> {
        // the engine's memory bound (see `memory`): librbd's settings on this connection,
        // and freed I/O buffers returned to the system
        let config = memory::connection_options().into_iter().fold(
            ClusterConfig::new(spec.name.clone())
                .conf(spec.conf.clone())
                .client_id(spec.client_id.clone()),
            |config, (key, value)| config.option(key, value),
        );
        memory::bound_allocator();
        if !spec.conf.exists() {
            return Err(OpsError::new(
                ErrorKind::NotFound,
                "connect",
                format!(
                    "no conf file {} for cluster '{}'; pass --from-conf/--to-conf or install the conf and keyring under /etc/ceph",
                    spec.conf.display(),
                    spec.name
                ),
            ));
        }
        let cluster = Cluster::connect(&config).ops()?;
        Ok(Self {
            name: spec.name.clone(),
            cluster,
            pinned: Mutex::new(None),
            image_opens: AtomicU64::new(0),
        })
    }

    /// The underlying connection (for callers that need more than [`CephOps`](rbd_mirror_core::ops::CephOps)).
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    pub(super) fn io(&self, pool: &PoolSpec) -> OpsResult<IoCtx> {
        self.cluster.ioctx_ns(&pool.pool, &pool.namespace).ops()
    }

    pub(super) fn open(&self, image: &ImageSpec) -> OpsResult<Image> {
        let io = self.io(&image.pool)?;
        self.image_opens.fetch_add(1, Ordering::Relaxed);
        io.open_image(&image.image).ops()
    }

    pub(super) fn open_ro(&self, image: &ImageSpec) -> OpsResult<Image> {
        self.open_ro_at(image, None)
    }

    /// Opens read-only at user snapshot `snap` (`None`: the head).
    pub(super) fn open_ro_at(&self, image: &ImageSpec, snap: Option<&str>) -> OpsResult<Image> {
        let io = self.io(&image.pool)?;
        self.open_ro_in(&io, &image.image, snap)
    }

    /// Opens `name` in `io` read-only at user snapshot `snap` (`None`: the head): every
    /// read-only open of this connection goes through here (counted in [`Self::image_opens`]).
    pub(super) fn open_ro_in(
        &self,
        io: &IoCtx,
        name: &str,
        snap: Option<&str>,
    ) -> OpsResult<Image> {
        self.image_opens.fetch_add(1, Ordering::Relaxed);
        Image::open_read_only(io, name, snap).ops()
    }

    /// Runs `read` with a read-only handle of `image`'s head: the handle pinned by
    /// [`CephOps::pin_read_only`](rbd_mirror_core::ops::CephOps::pin_read_only) when it is
    /// that image's and free, otherwise a new one, closed when `read` is done.
    pub(super) fn with_read_only<T>(
        &self,
        image: &ImageSpec,
        read: impl FnOnce(&Image) -> OpsResult<T>,
    ) -> OpsResult<T> {
        if let Ok(guard) = self.pinned.try_lock() {
            if let Some(p) = guard.as_ref().filter(|p| &p.spec == image) {
                return read(&p.image);
            }
        }
        read(&self.open_ro(image)?)
    }

    /// Pins a read-only handle of `image` for [`Self::with_read_only`]; the guard unpins and
    /// closes it. One image at a time per connection: holds nothing when another image is
    /// pinned (its reads then open their own handles, as without a pin) or when this one
    /// cannot be opened.
    pub(super) fn pin(&self, image: &ImageSpec) -> ReadPin<'_> {
        let Ok(mut slot) = self.pinned.lock() else {
            return ReadPin::none();
        };
        if slot.is_some() {
            return ReadPin::none();
        }
        let Ok(handle) = self.open_ro(image) else {
            return ReadPin::none();
        };
        *slot = Some(Pinned {
            spec: image.clone(),
            image: handle,
        });
        drop(slot);
        ReadPin::releasing(move || {
            // taken out under the lock, closed after it
            let pinned = self.pinned.lock().map(|mut s| s.take()).unwrap_or_default();
            drop(pinned);
        })
    }

    /// How many image handles this connection has opened so far (read-write and read-only),
    /// for diagnostics and tests: each open of a clone also opens its parent, and each
    /// close closes both.
    pub fn image_opens(&self) -> u64 {
        self.image_opens.load(Ordering::Relaxed)
    }

    /// The pools of the cluster with their usage (mon command `df`).
    pub(super) fn df(&self) -> OpsResult<Vec<DfPool>> {
        let out = self
            .cluster
            .mon_command(r#"{"prefix":"df","format":"json"}"#)
            .ops()?;
        parse_df(&out)
    }

    /// The pools of the cluster by name and id, from the OSD map (`osd pool ls detail`):
    /// `df` comes from the manager's statistics, which list a new pool only seconds later.
    pub(super) fn pool_ids(&self) -> OpsResult<Vec<(String, i64)>> {
        let out = self
            .cluster
            .mon_command(r#"{"prefix":"osd pool ls","detail":"detail","format":"json"}"#)
            .ops()?;
        parse_pool_ids(&out)
    }

    /// The data pool of an open image, by name, when it is not the image's own pool.
    pub(super) fn data_pool_of(&self, io: &IoCtx, img: &Image) -> OpsResult<Option<String>> {
        let id = img.data_pool_id().ops()?;
        if id == io.pool_id() {
            return Ok(None);
        }
        match self.pool_ids()?.into_iter().find(|p| p.1 == id) {
            Some((name, _)) => Ok(Some(name)),
            None => Err(OpsError::new(
                ErrorKind::NotFound,
                "rbd_get_data_pool_id",
                format!(
                    "the data pool (id {id}) of an image in pool {} is not in the OSD map",
                    io.pool()
                ),
            )),
        }
    }
}

/// The read-only handle held by a [`ReadPin`], and whose it is.
pub(super) struct Pinned {
    spec: ImageSpec,
    image: Image,
}
