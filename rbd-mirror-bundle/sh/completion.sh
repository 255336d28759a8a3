# shellcheck shell=sh disable=SC2016,SC2034,SC2153
# (a fragment: its variables are used or assigned by the other sections and the rendered
# script, which the tests shellcheck whole without these exceptions but SC2016)
# The completion decisions of the bundle, each written once in shell: the twins of
# rbd_mirror_core::wait's journal_completion and snapshot_completion. The bundle's unit tests
# (src/completion_tests.rs) run these functions on recorded `rbd` outputs and assert that
# they decide as the Rust twins do.
# Sections start at a line `#@ NAME` and end before the next one; rbd-mirror-bundle renders them in
# (src/template.rs), so each section's text is what the rendered script holds. Names come only
# from variables assigned above the section, each written once through sh_quote.

#@ snapshot_source
# newest_primary_mirror_snapshot JSON: the id of the newest complete primary mirror snapshot
# of an `rbd snap ls --all --format json` output; nothing when there is none yet (the twin of
# wait::newest_primary_mirror_snapshot, the first half of wait::snapshot_completion)
newest_primary_mirror_snapshot() {
    mirror_snapshots "$1" | awk '($2 == "primary" || $2 == "primary-demoted") && $3 == "true" { print $1 }' | sort -n | tail -n 1
}

#@ snapshot_replica
# replica_snapshot_complete JSON ID: whether the replica's `rbd snap ls --all --format json`
# output holds a complete non-primary mirror snapshot of the source's primary snapshot ID
# (the second half of wait::snapshot_completion: the replica is complete)
replica_snapshot_complete() {
    mirror_snapshots "$1" | awk -v want="$2" '$2 != "primary" && $2 != "primary-demoted" && $3 == "true" && $4 == want { found = 1 } END { exit !found }'
}

#@ journal
# journal_completion: the journal-mode completion decision (the twin of
# wait::journal_completion), from `rbd journal status --format json` on stdin. The image's
# own client (id "") holds the master commit position; a mirror peer is a client whose data
# is a MirrorPeerClientMeta, read from its hex dump: ENCODE_START header (6 bytes), meta type
# (u32, 1 = mirror peer), image id (u32 length + bytes), state (u32, 1 = replaying), sync
# object count (u64), number of sync points (u32). Peers are judged in the order listed, sync
# state first, then positions (the newest commit position's tag and entry tid). Prints one of:
#   complete                 every peer is connected, replaying with no sync point left, and
#                            its newest position is the master's
#   complete unknown-state   the same, except that the data of a peer could not be decoded
#                            (another Ceph release): its position alone says complete
#   pending no-peer          no mirror peer has registered yet
#   pending disconnected ID  peer ID's journal client is disconnected
#   pending syncing ID       peer ID is in its initial image sync (or has a sync point left)
#   pending behind ID        peer ID has not replayed up to the master position
journal_completion() {
    awk '
    function byte(k) { return (index("0123456789abcdef", substr(hex, 2 * k + 1, 1)) - 1) * 16 + index("0123456789abcdef", substr(hex, 2 * k + 2, 1)) - 1 }
    function u32(k) { return byte(k) + 256 * (byte(k + 1) + 256 * (byte(k + 2) + 256 * byte(k + 3))) }
    # newest(p): "TAG_TID ENTRY_TID" of the first (newest) commit position of client text p,
    # "" when it has none
    function newest(p,    s, q, t, e) {
        s = index(p, "\"object_positions\":[{")
        if (s == 0) return ""
        q = substr(p, s + 21)
        q = substr(q, 1, index(q, "}"))
        t = q
        sub(/.*"tag_tid":/, "", t)
        sub(/[^0-9].*/, "", t)
        e = q
        sub(/.*"entry_tid":/, "", e)
        sub(/[^0-9].*/, "", e)
        return t " " e
    }
    # data_hex(p): the bytes of the client data of client text p as hex digits, "" if absent
    function data_hex(p,    s, e, d, nl, lines, j, h, out) {
        s = index(p, "\"data\":\"")
        e = index(p, "\",\"commit_position\"")
        if (s == 0 || e == 0) return ""
        d = substr(p, s + 8, e - s - 8)
        nl = split(d, lines, /\\n/)
        out = ""
        for (j = 1; j <= nl; j++) {
            if (length(lines[j]) <= 10) continue
            h = substr(lines[j], 11, 48)
            gsub(/[^0-9a-f]/, "", h)
            out = out h
        }
        return out
    }
    {
        n = split($0, parts, /\{"id":"/)
        for (i = 2; i <= n; i++) {
            p = parts[i]
            id = p
            sub(/".*/, "", id)
            if (id == "") {
                master = newest(p)
                continue
            }
            hex = data_hex(p)
            if (length(hex) < 28) {
                state = "unknown"
            } else if (u32(6) != 1) {
                continue
            } else {
                off = 14 + u32(10)
                if (length(hex) < 2 * (off + 16)) state = "unknown"
                else state = (u32(off) == 1 && u32(off + 12) == 0) ? "replaying" : "syncing"
            }
            if (index(p, "\"state\":\"connected\"") == 0) state = "disconnected"
            peers++
            peer_id[peers] = id
            peer_state[peers] = state
            peer_position[peers] = newest(p)
        }
    }
    END {
        if (peers == 0) {
            print "pending no-peer"
            exit
        }
        for (k = 1; k <= peers; k++) {
            if (peer_state[k] == "disconnected" || peer_state[k] == "syncing") {
                print "pending", peer_state[k], peer_id[k]
                exit
            }
        }
        for (k = 1; k <= peers; k++) {
            if (peer_position[k] != master) {
                print "pending behind", peer_id[k]
                exit
            }
        }
        for (k = 1; k <= peers; k++) {
            if (peer_state[k] == "unknown") {
                print "complete unknown-state"
                exit
            }
        }
        print "complete"
    }'
}
