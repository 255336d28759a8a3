//! The one error type of the Cinder adapter: each variant keeps Cinder's own message and says
//! what was being done, and a missing role is named with the cloud it is missing in.

use crate::Side;

/// Errors of the Cinder adapter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A volume id that is not a UUID; nothing was sent.
    #[error(
        "'{id}' is not a Cinder volume id: give the volume's UUID (8-4-4-4-12 hex digits, as \
         `openstack volume list` shows it); nothing was sent"
    )]
    InvalidVolumeId {
        /// The id as given.
        id: String,
    },
    /// Cinder refused for lack of a role (HTTP 403).
    #[error(
        "{action}: this needs an admin role in the {side} cloud `{cloud}` (Cinder said: \
         {message})"
    )]
    NeedsAdmin {
        /// What was being done.
        action: String,
        /// Source or destination.
        side: Side,
        /// The cloud.
        cloud: String,
        /// Cinder's message (names the policy).
        message: String,
    },
    /// The token has no admin role; nothing was sent.
    #[error(
        "{action}: this needs an admin role in the {side} cloud `{cloud}`; the credentials \
         have roles: {roles}"
    )]
    NotAdmin {
        /// What was to be done.
        action: String,
        /// Source or destination.
        side: Side,
        /// The cloud.
        cloud: String,
        /// The token's roles.
        roles: String,
    },
    /// Cinder offers no microversion this adapter can use (from its version document).
    #[error("cloud `{cloud}`: Cinder and rbd-relay have no microversion in common: {source}")]
    Microversion {
        /// The cloud.
        cloud: String,
        /// What the version document said.
        source: openstack_client::NegotiationError,
    },
    /// Cinder does not know the host string.
    #[error("Cinder does not know host `{host}`: {message} (known pools: {known})")]
    UnknownHost {
        /// The host string given.
        host: String,
        /// Cinder's message.
        message: String,
        /// Pools the scheduler reports, if readable.
        known: String,
    },
    /// No scheduler pool stores into the Ceph pool.
    #[error("no Cinder backend stores into Ceph pool `{pool}`{fsid} (pools: {known})")]
    PoolNotFound {
        /// The Ceph pool.
        pool: String,
        /// `" of cluster FSID"` or empty.
        fsid: String,
        /// What the scheduler reports.
        known: String,
    },
    /// Several backends store into the Ceph pool.
    #[error("several Cinder backends store into Ceph pool `{pool}`: {hosts}; give the host")]
    AmbiguousPool {
        /// The Ceph pool.
        pool: String,
        /// The candidates.
        hosts: String,
    },
    /// The RBD image is already a Cinder volume.
    #[error("RBD image `{image}` on `{host}` is already managed by Cinder{by} ({reason})")]
    AlreadyManaged {
        /// The image.
        image: String,
        /// The host string.
        host: String,
        /// `" as volume ID"` or empty.
        by: String,
        /// Cinder's reason.
        reason: String,
    },
    /// Cinder will not manage the image for another reason (`volume in use`: it has
    /// watchers, e.g. a client or rbd-mirror still has it open).
    #[error("Cinder will not manage RBD image `{image}` on `{host}`: {reason}")]
    NotManageable {
        /// The image.
        image: String,
        /// The host string.
        host: String,
        /// Cinder's reason.
        reason: String,
    },
    /// The backend does not list the image at all.
    #[error("Cinder backend `{host}` lists no RBD image named `{image}`")]
    ImageNotFound {
        /// The image.
        image: String,
        /// The host string.
        host: String,
    },
    /// The volume reached an error state.
    #[error("volume {id} ended in status `{status}`: {reason}")]
    VolumeFailed {
        /// Volume id.
        id: String,
        /// The status (`error`, `error_managing`, ...).
        status: String,
        /// Cinder's user message, or what is known.
        reason: String,
    },
    /// A wait passed its deadline.
    #[error("{0}")]
    Timeout(String),
    /// A Cinder call failed; `action` says which.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: String,
        /// The client error (keeps Cinder's message).
        source: openstack_client::Error,
    },
    /// The Glance side of upload-to-image failed.
    #[error("upload of volume {volume} to Glance: {source}")]
    Glance {
        /// The volume.
        volume: String,
        /// Glance's error.
        source: glance_rbd::Error,
    },
    /// Cinder's answer lacks something needed.
    #[error("{0}")]
    Unexpected(String),
}

impl Error {
    /// The underlying HTTP error, if any.
    pub fn api_error(&self) -> Option<&openstack_client::ApiError> {
        match self {
            Error::Api { source, .. } => source.api(),
            _ => None,
        }
    }
}
