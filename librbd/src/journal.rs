//! Journal-mode replication progress, read from the image's journal header object.
//!
//! librbd has no C API for journal status. The header object `journal.<image id>` (in the
//! image's pool) keeps one omap entry per registered client, `client_<id>`, whose value is
//! an encoded `cls::journal::Client` (id, client data, commit position, state). The image
//! itself is the client with id "" (its commit position is the master position); each
//! rbd-mirror daemon replaying the image is a client whose id is the mirror uuid of the
//! daemon's (destination) pool and whose data is a `MirrorPeerClientMeta` (syncing or
//! replaying). The exact completion signal for journal mode is: the peer is replaying,
//! has no pending sync points, and its newest commit position equals the master's — the
//! same comparison rbd-mirror makes for "entries_behind_primary".
//!
//! Decoding follows Ceph's encoding (little-endian integers, `u32`-length strings and
//! buffers, `ENCODE_START` headers: version `u8`, compat `u8`, length `u32`) for
//! `cls/journal/cls_journal_types.cc` and `librbd/journal/Types.cc`.

use super::cluster::IoCtx;
use super::error::{RbdError, Result};

/// One position in a journal (`cls::journal::ObjectPosition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalPosition {
    /// Journal object number.
    pub object_number: u64,
    /// Tag (epoch of primary ownership).
    pub tag_tid: u64,
    /// Entry within the tag.
    pub entry_tid: u64,
}

/// Connection state of a journal client (`cls::journal::ClientState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalClientState {
    /// Connected.
    Connected,
    /// Disconnected (fell too far behind; needs a resync).
    Disconnected,
    /// A value this wrapper does not know.
    Unknown(u8),
}

/// rbd-mirror's replay state in a peer client (`MirrorPeerState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorPeerState {
    /// Initial/full image sync in progress.
    Syncing,
    /// Replaying journal entries.
    Replaying,
    /// A value this wrapper does not know.
    Unknown(u32),
}

/// What kind of client registered (`librbd::journal::ClientData`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalClientMeta {
    /// The image itself (client id ""): its position is the master position.
    Image {
        /// Tag class of the image.
        tag_class: u64,
        /// Whether a resync was requested.
        resync_requested: bool,
    },
    /// An rbd-mirror daemon replaying the image.
    MirrorPeer {
        /// Id of the replica image on the peer.
        image_id: String,
        /// Syncing or replaying.
        state: MirrorPeerState,
        /// Objects copied by the current sync.
        sync_object_count: u64,
        /// Pending sync points (non-zero: a sync is not finished).
        sync_points: u32,
    },
    /// The `rbd` CLI (e.g. `rbd journal export`).
    Cli,
    /// Unknown or undecodable meta type.
    Unknown(u32),
}

/// A registered journal client (`cls::journal::Client`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalClient {
    /// Client id ("" = the image itself; else a mirror uuid).
    pub id: String,
    /// Decoded client data.
    pub meta: JournalClientMeta,
    /// Commit position, newest first (one entry per active journal object splay).
    pub commit_position: Vec<JournalPosition>,
    /// Connected or not.
    pub state: JournalClientState,
}

impl JournalClient {
    /// Newest commit position, if any entry was committed.
    pub fn newest(&self) -> Option<JournalPosition> {
        self.commit_position.first().copied()
    }
}

/// All clients of an image's journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalStatus {
    /// Image id the journal belongs to.
    pub image_id: String,
    /// Registered clients.
    pub clients: Vec<JournalClient>,
}

/// How far a mirror peer is behind the master position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalLag {
    /// Peer is replaying (not syncing), has no sync points, is connected, and its newest
    /// commit position has the master's tag and entry: the replica has everything.
    pub caught_up: bool,
    /// Entries behind, when both positions have the same tag (like rbd-mirror's
    /// `entries_behind_primary`).
    pub entries_behind: Option<u64>,
}

impl JournalStatus {
    /// The image's own client (id ""): master position.
    pub fn master(&self) -> Option<&JournalClient> {
        self.clients.iter().find(|c| c.id.is_empty())
    }

    /// The client registered by the rbd-mirror daemon of the peer whose pool mirror uuid is
    /// `mirror_uuid` (see [`IoCtx::mirror_uuid`] on the destination pool).
    pub fn mirror_peer(&self, mirror_uuid: &str) -> Option<&JournalClient> {
        self.clients.iter().find(|c| c.id == mirror_uuid)
    }

    /// All rbd-mirror peer clients.
    pub fn mirror_peers(&self) -> impl Iterator<Item = &JournalClient> {
        self.clients
            .iter()
            .filter(|c| matches!(c.meta, JournalClientMeta::MirrorPeer { .. }))
    }

    /// Lag of `peer` against the master position; `None` if there is no master client.
    ///
    /// Exact only when the image is closed everywhere (no watchers): an open image writes
    /// its own commit position lazily (every `rbd_journal_commit_age`, 5 s by default, and
    /// on close), so while it is open the master position can trail the journal and an
    /// idle-looking peer may still have entries to replay. For live images use the orderly
    /// demote / replay / promote protocol instead.
    pub fn lag(&self, peer: &JournalClient) -> Option<JournalLag> {
        let master = self.master()?;
        let m = master.newest();
        let p = peer.newest();
        let replaying = matches!(
            peer.meta,
            JournalClientMeta::MirrorPeer {
                state: MirrorPeerState::Replaying,
                sync_points: 0,
                ..
            }
        );
        let same = match (m, p) {
            (None, None) => true,
            (Some(m), Some(p)) => m.tag_tid == p.tag_tid && m.entry_tid == p.entry_tid,
            _ => false,
        };
        let entries_behind = match (m, p) {
            (None, None) => Some(0),
            (Some(m), Some(p)) if m.tag_tid == p.tag_tid => {
                Some(m.entry_tid.saturating_sub(p.entry_tid))
            }
            _ => None,
        };
        Some(JournalLag {
            caught_up: replaying && same && peer.state == JournalClientState::Connected,
            entries_behind,
        })
    }
}

impl IoCtx {
    /// Reads and decodes the clients of the journal of image `image_id`
    /// (`rados_read_op_omap_get_vals` on `journal.<image_id>`, keys `client_*`).
    /// `NotFound` if the image has no journal (journaling disabled).
    pub fn journal_status(&self, image_id: &str) -> Result<JournalStatus> {
        let oid = format!("journal.{image_id}");
        let vals = self.omap_get_vals(&oid, "client_")?;
        let mut clients = Vec::with_capacity(vals.len());
        for (key, val) in vals {
            let client = decode_client(&val).map_err(|why| {
                RbdError::malformed(
                    "rados_read_op_omap_get_vals",
                    format!("{}, object {oid}, key {key}", self.ctx()),
                    why,
                )
            })?;
            clients.push(client);
        }
        Ok(JournalStatus {
            image_id: image_id.to_string(),
            clients,
        })
    }
}

/// Little-endian reader over Ceph's encoding.
struct Dec<'a> {
    buf: &'a [u8],
}

type DecResult<T> = std::result::Result<T, String>;

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> DecResult<&'a [u8]> {
        if self.buf.len() < n {
            return Err(format!(
                "truncated: need {n} bytes, have {}",
                self.buf.len()
            ));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u8(&mut self) -> DecResult<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> DecResult<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> DecResult<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn bytes(&mut self) -> DecResult<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> DecResult<String> {
        Ok(String::from_utf8_lossy(self.bytes()?).into_owned())
    }
    /// `DECODE_START`: returns the struct version and a reader over exactly its payload.
    fn start(&mut self) -> DecResult<(u8, Dec<'a>)> {
        let v = self.u8()?;
        let _compat = self.u8()?;
        let body = self.bytes()?;
        Ok((v, Dec { buf: body }))
    }
}

fn decode_position(d: &mut Dec<'_>) -> DecResult<JournalPosition> {
    let (_, mut p) = d.start()?;
    Ok(JournalPosition {
        object_number: p.u64()?,
        tag_tid: p.u64()?,
        entry_tid: p.u64()?,
    })
}

fn decode_meta(data: &[u8]) -> DecResult<JournalClientMeta> {
    if data.is_empty() {
        return Ok(JournalClientMeta::Unknown(u32::MAX));
    }
    let (_, mut d) = Dec { buf: data }.start()?;
    let ty = d.u32()?;
    Ok(match ty {
        0 => JournalClientMeta::Image {
            tag_class: d.u64()?,
            resync_requested: d.u8()? != 0,
        },
        1 => {
            let image_id = d.string()?;
            let state = match d.u32()? {
                0 => MirrorPeerState::Syncing,
                1 => MirrorPeerState::Replaying,
                other => MirrorPeerState::Unknown(other),
            };
            let sync_object_count = d.u64()?;
            // Sync points and snap seqs follow; their count is all we need.
            let sync_points = d.u32()?;
            JournalClientMeta::MirrorPeer {
                image_id,
                state,
                sync_object_count,
                sync_points,
            }
        }
        2 => JournalClientMeta::Cli,
        other => JournalClientMeta::Unknown(other),
    })
}

fn decode_client(val: &[u8]) -> DecResult<JournalClient> {
    let (_, mut d) = Dec { buf: val }.start()?;
    let id = d.string()?;
    let data = d.bytes()?;
    let (_, mut pos) = d.start()?;
    let n = pos.u32()?;
    let mut commit_position = Vec::with_capacity(n.min(1024) as usize);
    for _ in 0..n {
        commit_position.push(decode_position(&mut pos)?);
    }
    let state = match d.u8()? {
        0 => JournalClientState::Connected,
        1 => JournalClientState::Disconnected,
        other => JournalClientState::Unknown(other),
    };
    Ok(JournalClient {
        id,
        meta: decode_meta(data)?,
        commit_position,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(v: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![v, 1];
        out.extend((body.len() as u32).to_le_bytes());
        out.extend(body);
        out
    }
    fn s(x: &str) -> Vec<u8> {
        let mut out = (x.len() as u32).to_le_bytes().to_vec();
        out.extend(x.as_bytes());
        out
    }
    fn client(id: &str, data: &[u8], positions: &[(u64, u64, u64)], state: u8) -> Vec<u8> {
        let mut pos_body = (positions.len() as u32).to_le_bytes().to_vec();
        for &(o, t, e) in positions {
            let mut p = o.to_le_bytes().to_vec();
            p.extend(t.to_le_bytes());
            p.extend(e.to_le_bytes());
            pos_body.extend(start(1, &p));
        }
        let mut body = s(id);
        body.extend((data.len() as u32).to_le_bytes());
        body.extend(data);
        body.extend(start(1, &pos_body));
        body.push(state);
        start(1, &body)
    }
    fn peer_meta(state: u32, sync_points: u32) -> Vec<u8> {
        let mut body = 1u32.to_le_bytes().to_vec();
        body.extend(s("replica-id"));
        body.extend(state.to_le_bytes());
        body.extend(7u64.to_le_bytes());
        body.extend(sync_points.to_le_bytes());
        body.extend(0u32.to_le_bytes()); // empty snap_seqs map
        start(2, &body)
    }
    fn image_meta() -> Vec<u8> {
        let mut body = 0u32.to_le_bytes().to_vec();
        body.extend(3u64.to_le_bytes());
        body.push(0);
        start(2, &body)
    }

    #[test]
    fn decodes_master_and_peer_and_compares_positions() {
        let master =
            decode_client(&client("", &image_meta(), &[(1, 2, 40), (0, 2, 39)], 0)).unwrap();
        assert_eq!(
            master.meta,
            JournalClientMeta::Image {
                tag_class: 3,
                resync_requested: false
            }
        );
        assert_eq!(master.newest().unwrap().entry_tid, 40);
        let behind = decode_client(&client("uuid-b", &peer_meta(1, 0), &[(0, 2, 35)], 0)).unwrap();
        let status = JournalStatus {
            image_id: "x".into(),
            clients: vec![master.clone(), behind.clone()],
        };
        let lag = status.lag(status.mirror_peer("uuid-b").unwrap()).unwrap();
        assert_eq!(
            lag,
            JournalLag {
                caught_up: false,
                entries_behind: Some(5)
            }
        );

        let done = decode_client(&client("uuid-b", &peer_meta(1, 0), &[(1, 2, 40)], 0)).unwrap();
        let status = JournalStatus {
            image_id: "x".into(),
            clients: vec![master.clone(), done],
        };
        assert!(status.lag(&status.clients[1]).unwrap().caught_up);

        // same position but still syncing: not complete
        let syncing = decode_client(&client("uuid-b", &peer_meta(0, 1), &[(1, 2, 40)], 0)).unwrap();
        let status = JournalStatus {
            image_id: "x".into(),
            clients: vec![master, syncing],
        };
        assert!(!status.lag(&status.clients[1]).unwrap().caught_up);
    }

    #[test]
    fn a_peer_client_written_by_a_reef_rbd_mirror_decodes_like_a_pacific_one() {
        // client data a Ceph 18.2.7 (Reef) rbd-mirror registered in a Pacific (16.2.15)
        // image's journal, as `rbd journal status` printed it (make test-matrix's pair): same
        // encoding (v2) as Pacific's, here with one snap_seqs entry after the sync points
        let reef_meta: [u8; 62] = [
            0x02, 0x01, 0x38, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x00,
            0x31, 0x30, 0x31, 0x65, 0x35, 0x65, 0x65, 0x65, 0x64, 0x66, 0x61, 0x62, 0x01, 0x00,
            0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x01, 0x00, 0x00, 0x00, 0x21, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x21, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        let peer = decode_client(&client("uuid-b", &reef_meta, &[(3, 1, 3)], 0)).unwrap();
        assert_eq!(
            peer.meta,
            JournalClientMeta::MirrorPeer {
                image_id: "101e5eeedfab".into(),
                state: MirrorPeerState::Replaying,
                sync_object_count: 2,
                sync_points: 0,
            }
        );
    }

    /// The bytes of a `rados listomapvals` hex dump (`00000000  01 01 75 ...  |..u|` lines).
    fn from_hexdump(dump: &str) -> Vec<u8> {
        dump.lines()
            .filter_map(|l| l.trim().split_once("  "))
            .flat_map(|(_, rest)| {
                let hex = rest.split('|').next().unwrap_or("");
                hex.split_whitespace()
                    .map(|b| u8::from_str_radix(b, 16).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Decodes a whole `client_<uuid>` value a newer rbd-mirror wrote (captured as a hex
    /// dump) and checks it reads as the replaying peer `uuid` of replica `replica`.
    fn assert_replaying_peer(dump: &str, uuid: &str, replica: &str) {
        let value = from_hexdump(dump);
        assert_eq!(value.len(), 123, "the dump was read whole");
        let peer = decode_client(&value).unwrap();
        assert_eq!(peer.id, uuid);
        assert_eq!(
            peer.meta,
            JournalClientMeta::MirrorPeer {
                image_id: replica.into(),
                state: MirrorPeerState::Replaying,
                sync_object_count: 7,
                sync_points: 0,
            }
        );
        assert!(peer.commit_position.is_empty());
        assert_eq!(peer.state, JournalClientState::Connected);
    }

    // Both values: `rados listomapvals journal.<id>` of a Pacific (16.2.15) image replayed by
    // the newer rbd-mirror of `make test-matrix` (matrix_real's journal client test, whose
    // site-b reported the replica id checked here), 2026-12-04.

    #[test]
    fn a_whole_client_record_a_reef_rbd_mirror_wrote_decodes_as_a_replaying_peer() {
        // Ceph 18.2.7 (Debian 13)
        assert_replaying_peer(
            "00000000  01 01 75 00 00 00 24 00  00 00 61 65 30 63 35 63  |..u...$...ae0c5c|
             00000010  39 66 2d 63 37 64 61 2d  34 35 64 37 2d 62 65 64  |9f-c7da-45d7-bed|
             00000020  39 2d 31 39 33 64 35 37  39 61 62 33 63 62 3e 00  |9-193d579ab3cb>.|
             00000030  00 00 02 01 38 00 00 00  01 00 00 00 0c 00 00 00  |....8...........|
             00000040  31 30 31 65 39 34 31 31  63 39 37 37 01 00 00 00  |101e9411c977....|
             00000050  07 00 00 00 00 00 00 00  00 00 00 00 01 00 00 00  |................|
             00000060  10 00 00 00 00 00 00 00  19 00 00 00 00 00 00 00  |................|
             00000070  01 01 04 00 00 00 00 00  00 00 00                 |...........|",
            "ae0c5c9f-c7da-45d7-bed9-193d579ab3cb",
            "101e9411c977",
        );
    }

    #[test]
    fn a_whole_client_record_a_tentacle_rbd_mirror_wrote_decodes_as_a_replaying_peer() {
        // Ceph 20.2.4 (Debian sid)
        assert_replaying_peer(
            "00000000  01 01 75 00 00 00 24 00  00 00 65 32 39 32 30 61  |..u...$...e2920a|
             00000010  34 63 2d 61 34 61 33 2d  34 31 30 65 2d 39 32 35  |4c-a4a3-410e-925|
             00000020  38 2d 33 65 33 63 32 30  62 65 38 64 32 62 3e 00  |8-3e3c20be8d2b>.|
             00000030  00 00 02 01 38 00 00 00  01 00 00 00 0c 00 00 00  |....8...........|
             00000040  31 30 32 32 34 33 37 63  33 39 34 34 01 00 00 00  |1022437c3944....|
             00000050  07 00 00 00 00 00 00 00  00 00 00 00 01 00 00 00  |................|
             00000060  0c 00 00 00 00 00 00 00  09 00 00 00 00 00 00 00  |................|
             00000070  01 01 04 00 00 00 00 00  00 00 00                 |...........|",
            "e2920a4c-a4a3-410e-9258-3e3c20be8d2b",
            "1022437c3944",
        );
    }

    #[test]
    fn truncated_value_is_an_error_not_a_panic() {
        let full = client("", &image_meta(), &[(1, 2, 3)], 0);
        for cut in 0..full.len() {
            assert!(decode_client(&full[..cut]).is_err(), "cut at {cut}");
        }
    }
}
