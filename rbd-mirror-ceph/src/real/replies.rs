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
}
