//! Parsing the monitors' JSON replies (`df`, `osd pool ls detail`, `osd pool get-quota`),
//! kept apart so that they are unit-tested against replies recorded from Ceph 16.

use rbd_mirror_core::ops::{ErrorKind, OpsError, OpsResult};

/// One pool in the monitors' `df` report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DfPool {
    pub(super) name: String,
    pub(super) id: i64,
    pub(super) stored: u64,
    pub(super) max_avail: u64,
}

fn malformed(op: &str, why: impl std::fmt::Display) -> OpsError {
    OpsError::new(ErrorKind::Other, op, format!("unexpected reply: {why}"))
}

/// The pools of `{"prefix":"df","format":"json"}`'s reply.
pub(super) fn parse_df(json: &str) -> OpsResult<Vec<DfPool>> {
    #[derive(serde::Deserialize)]
    struct Df {
        pools: Vec<Pool>,
    }
    #[derive(serde::Deserialize)]
    struct Pool {
        name: String,
        id: i64,
        stats: Stats,
    }
    #[derive(serde::Deserialize)]
    struct Stats {
        stored: u64,
        max_avail: u64,
    }
    let df: Df = serde_json::from_str(json).map_err(|e| malformed("df", e))?;
    Ok(df
        .pools
        .into_iter()
        .map(|p| DfPool {
            name: p.name,
            id: p.id,
            stored: p.stats.stored,
            max_avail: p.stats.max_avail,
        })
        .collect())
}

/// Names and ids in `{"prefix":"osd pool ls","detail":"detail","format":"json"}`'s reply.
pub(super) fn parse_pool_ids(json: &str) -> OpsResult<Vec<(String, i64)>> {
    #[derive(serde::Deserialize)]
    struct Pool {
        pool_name: String,
        pool_id: i64,
    }
    let pools: Vec<Pool> =
        serde_json::from_str(json).map_err(|e| malformed("osd pool ls detail", e))?;
    Ok(pools
        .into_iter()
        .map(|p| (p.pool_name, p.pool_id))
        .collect())
}

/// The byte quota in `{"prefix":"osd pool get-quota",...}`'s reply; `None` for none (0).
pub(super) fn parse_quota_max_bytes(json: &str) -> OpsResult<Option<u64>> {
    #[derive(serde::Deserialize)]
    struct Quota {
        quota_max_bytes: u64,
    }
    let q: Quota = serde_json::from_str(json).map_err(|e| malformed("osd pool get-quota", e))?;
    Ok((q.quota_max_bytes > 0).then_some(q.quota_max_bytes))
}

/// A daemon's options not at their defaults, from the manager's
/// `{"prefix":"config show","who":...,"format":"json"}` reply (a list of `name`, `value`,
/// `source`).
pub(super) fn parse_config_show(
    json: &str,
) -> OpsResult<std::collections::BTreeMap<String, String>> {
    #[derive(serde::Deserialize)]
    struct Entry {
        name: String,
        value: String,
    }
    let entries: Vec<Entry> =
        serde_json::from_str(json).map_err(|e| malformed("config show", e))?;
    Ok(entries.into_iter().map(|e| (e.name, e.value)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn df_and_quota_replies_are_read_as_recorded_from_ceph_16() {
        let df = r#"{"stats":{"total_bytes":6442450944},"pools":[{"name":"volumes","id":1,"stats":{"stored":83894508,"objects":37,"kb_used":81929,"bytes_used":83894508,"percent_used":0.0138,"max_avail":5978329088}}]}"#;
        assert_eq!(
            parse_df(df),
            Ok(vec![DfPool {
                name: "volumes".into(),
                id: 1,
                stored: 83894508,
                max_avail: 5978329088,
            }])
        );
        let none = r#"{"pool_name":"cinder","pool_id":3,"quota_max_objects":0,"current_num_objects":29,"quota_max_bytes":0,"current_num_bytes":64225527}"#;
        assert_eq!(parse_quota_max_bytes(none), Ok(None));
        let some = none.replace(r#""quota_max_bytes":0"#, r#""quota_max_bytes":1073741824"#);
        assert_eq!(parse_quota_max_bytes(&some), Ok(Some(1 << 30)));
        assert!(parse_df("{}").is_err());
        let ls = r#"[{"pool_name":"volumes","pool_id":1,"size":1},{"pool_name":"ec","pool_id":7}]"#;
        assert_eq!(
            parse_pool_ids(ls),
            Ok(vec![("volumes".to_string(), 1), ("ec".to_string(), 7)])
        );
    }

    #[test]
    fn config_show_gives_the_daemons_options_by_name() {
        // recorded from `ceph config show rbd-mirror.4129 -f json` (Ceph 16.2.15), shortened
        let json = r#"[{"name":"admin_socket","value":"/x/site-b-client.rbd-mirror.b.asok","source":"file"},{"name":"rbd_mirror_journal_commit_age","value":"1.000000","source":"file"},{"name":"rbd_mirror_journal_poll_age","value":"1.000000","source":"file"}]"#;
        let config = parse_config_show(json).expect("parses");
        assert_eq!(
            config
                .get("rbd_mirror_journal_poll_age")
                .map(String::as_str),
            Some("1.000000")
        );
        assert_eq!(config.get("rbd_mirror_journal_max_fetch_bytes"), None);
        assert!(parse_config_show("{}").is_err(), "not a list");
    }
}
