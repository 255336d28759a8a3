//! The one error type of the Glance adapter: Glance's own message with what was being done,
//! and the refusals that protect RBD data (member credentials, hidden locations, a record
//! that cannot be shown empty and is therefore kept).

/// Errors of the Glance adapter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Glance call failed; `action` says which.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: String,
        /// The client error (keeps Glance's message).
        source: openstack_client::Error,
    },
    /// Refused before any change: the credentials are a plain member's.
    #[error(
        "refusing to add an rbd:// location with the credentials of cloud `{cloud}` (roles: \
         {roles}): Glance's default policy (Zed) lets a plain member point an image at another \
         project's RBD snapshot, and deleting that image then deletes the other project's data. \
         Use admin or service credentials for the destination cloud, or override this check \
         explicitly if the snapshot is known to belong to this project"
    )]
    MemberCredentials {
        /// The cloud.
        cloud: String,
        /// The token's roles.
        roles: String,
    },
    /// Glance does not expose image locations (`show_multiple_locations = False`).
    #[error(
        "Glance of cloud `{cloud}` does not expose image locations, so an rbd:// location \
         cannot be added (glance-api.conf needs `show_multiple_locations = True`; Glance said: \
         {detail})"
    )]
    LocationsDisabled {
        /// The cloud.
        cloud: String,
        /// What showed it.
        detail: String,
    },
    /// The image reached a failed state.
    #[error("image {id} ended in status `{status}` instead of `active`")]
    ImageFailed {
        /// Image id.
        id: String,
        /// The status.
        status: String,
    },
    /// The image did not become active in time.
    #[error("{0}")]
    Timeout(String),
    /// The location could not be added and the empty image record could not be removed.
    #[error("{original}; also failed to delete the empty image record {id}: {cleanup}")]
    CleanupFailed {
        /// Image id left behind.
        id: String,
        /// The first failure.
        original: Box<Error>,
        /// The deletion's failure.
        cleanup: Box<Error>,
    },
    /// The location could not be added, and the image record was left in place because it
    /// cannot be shown to be empty (deleting an image deletes the RBD data it points at).
    #[error(
        "{original}; the image record {id} was NOT deleted because {reason}. Check it with \
         `openstack image show {id} -c status -c locations` as an admin of a Glance that shows \
         locations (glance-api.conf `show_multiple_locations = True`): delete it only if its \
         locations are empty; if it has an rbd:// location, deleting it deletes that RBD data"
    )]
    RecordKept {
        /// Image id left in place.
        id: String,
        /// The first failure.
        original: Box<Error>,
        /// Why it could not be shown to be empty.
        reason: String,
    },
    /// A location string is not `rbd://fsid/pool/image/snap`.
    #[error("`{0}` is not an rbd://<fsid>/<pool>/<image>/<snapshot> URL")]
    BadLocation(String),
}

impl Error {
    pub(crate) fn api(action: impl Into<String>) -> impl FnOnce(openstack_client::Error) -> Error {
        let action = action.into();
        move |source| Error::Api { action, source }
    }

    /// The underlying HTTP error, if any.
    pub fn api_error(&self) -> Option<&openstack_client::ApiError> {
        match self {
            Error::Api { source, .. } => source.api(),
            _ => None,
        }
    }
}
