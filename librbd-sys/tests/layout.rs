//! Checks the struct layouts and constants declared in `librbd-sys` against the installed
//! C headers (`rbd/librbd.h`), the cheap version of git2-rs's ctest-based `systest`: a tiny
//! C program prints `sizeof`/`offsetof`/constant values, and they must equal Rust's.
//!
//! Needs a C compiler (`cc`) and librbd-dev, like building the crate needs librbd.

use std::collections::HashMap;
use std::mem::{offset_of, size_of};
use std::process::Command;

use librbd_sys::*;

macro_rules! fields {
    ($out:ident, $ty:ident { $($f:ident),* }) => {{
        $out.push((format!("sizeof {}", stringify!($ty)), size_of::<$ty>() as i128));
        $( $out.push((format!("offsetof {}.{}", stringify!($ty), stringify!($f)),
                      offset_of!($ty, $f) as i128)); )*
    }};
}

fn rust_values() -> Vec<(String, i128)> {
    let mut v = Vec::new();
    fields!(v, rbd_image_spec_t { id, name });
    fields!(v, rbd_snap_info_t { id, size, name });
    fields!(
        v,
        rbd_image_info_t {
            size,
            obj_size,
            num_objs,
            order,
            block_name_prefix,
            parent_pool,
            parent_name
        }
    );
    fields!(
        v,
        rbd_mirror_peer_site_t {
            uuid,
            direction,
            site_name,
            mirror_uuid,
            client_name,
            last_seen
        }
    );
    fields!(
        v,
        rbd_mirror_image_info_t {
            global_id,
            state,
            primary
        }
    );
    fields!(
        v,
        rbd_mirror_image_site_status_t {
            mirror_uuid,
            state,
            description,
            last_update,
            up
        }
    );
    fields!(
        v,
        rbd_mirror_image_global_status_t {
            name,
            info,
            site_statuses_count,
            site_statuses
        }
    );
    fields!(
        v,
        rbd_snap_mirror_namespace_t {
            state,
            mirror_peer_uuids_count,
            mirror_peer_uuids,
            complete,
            primary_mirror_uuid,
            primary_snap_id,
            last_copied_object_number
        }
    );
    fields!(v, rbd_image_watcher_t { addr, id, cookie });
    for (name, value) in [
        ("RBD_FEATURE_LAYERING", RBD_FEATURE_LAYERING as i128),
        (
            "RBD_FEATURE_EXCLUSIVE_LOCK",
            RBD_FEATURE_EXCLUSIVE_LOCK as i128,
        ),
        ("RBD_FEATURE_OBJECT_MAP", RBD_FEATURE_OBJECT_MAP as i128),
        ("RBD_FEATURE_FAST_DIFF", RBD_FEATURE_FAST_DIFF as i128),
        ("RBD_FEATURE_DEEP_FLATTEN", RBD_FEATURE_DEEP_FLATTEN as i128),
        ("RBD_FEATURE_JOURNALING", RBD_FEATURE_JOURNALING as i128),
        ("RBD_FEATURE_DATA_POOL", RBD_FEATURE_DATA_POOL as i128),
        ("RBD_FEATURE_NON_PRIMARY", RBD_FEATURE_NON_PRIMARY as i128),
        (
            "RBD_FLAG_OBJECT_MAP_INVALID",
            RBD_FLAG_OBJECT_MAP_INVALID as i128,
        ),
        (
            "RBD_FLAG_FAST_DIFF_INVALID",
            RBD_FLAG_FAST_DIFF_INVALID as i128,
        ),
        (
            "RBD_IMAGE_OPTION_FEATURES",
            RBD_IMAGE_OPTION_FEATURES as i128,
        ),
        ("RBD_IMAGE_OPTION_ORDER", RBD_IMAGE_OPTION_ORDER as i128),
        (
            "RBD_IMAGE_OPTION_DATA_POOL",
            RBD_IMAGE_OPTION_DATA_POOL as i128,
        ),
        ("RBD_MIRROR_MODE_POOL", RBD_MIRROR_MODE_POOL as i128),
        (
            "RBD_MIRROR_PEER_DIRECTION_RX_TX",
            RBD_MIRROR_PEER_DIRECTION_RX_TX as i128,
        ),
        (
            "RBD_MIRROR_IMAGE_MODE_SNAPSHOT",
            RBD_MIRROR_IMAGE_MODE_SNAPSHOT as i128,
        ),
        (
            "RBD_MIRROR_IMAGE_DISABLED",
            RBD_MIRROR_IMAGE_DISABLED as i128,
        ),
        (
            "MIRROR_IMAGE_STATUS_STATE_STOPPED",
            MIRROR_IMAGE_STATUS_STATE_STOPPED as i128,
        ),
        (
            "RBD_SNAP_MIRROR_STATE_NON_PRIMARY_DEMOTED",
            RBD_SNAP_MIRROR_STATE_NON_PRIMARY_DEMOTED as i128,
        ),
        (
            "RBD_SNAP_NAMESPACE_TYPE_MIRROR",
            RBD_SNAP_NAMESPACE_TYPE_MIRROR as i128,
        ),
        ("RBD_LOCK_MODE_SHARED", RBD_LOCK_MODE_SHARED as i128),
        ("RBD_SNAP_REMOVE_FORCE", RBD_SNAP_REMOVE_FORCE as i128),
        ("RBD_MAX_BLOCK_NAME_SIZE", RBD_MAX_BLOCK_NAME_SIZE as i128),
        ("RBD_MAX_IMAGE_NAME_SIZE", RBD_MAX_IMAGE_NAME_SIZE as i128),
    ] {
        v.push((format!("const {name}"), value));
    }
    v
}

/// The C expression for one key: `sizeof T`, `offsetof T.f` or `const NAME`.
fn c_expr(key: &str) -> String {
    if let Some(ty) = key.strip_prefix("sizeof ") {
        format!("(long long)sizeof({ty})")
    } else if let Some(tf) = key.strip_prefix("offsetof ") {
        let (ty, f) = tf.split_once('.').expect("T.f");
        format!("(long long)offsetof({ty}, {f})")
    } else {
        format!(
            "(long long)({})",
            key.strip_prefix("const ").expect("const")
        )
    }
}

#[test]
fn struct_layouts_and_constants_match_librbd_h() {
    let values = rust_values();
    let mut c = String::from(
        "#include <stddef.h>\n#include <stdio.h>\n#include <rbd/librbd.h>\nint main(void) {\n",
    );
    for (key, _) in &values {
        c.push_str(&format!(
            "  printf(\"%s=%lld\\n\", \"{key}\", {});\n",
            c_expr(key)
        ));
    }
    c.push_str("  return 0;\n}\n");
    let dir = std::env::temp_dir().join(format!("librbd-sys-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("layout.c");
    let bin = dir.join("layout");
    std::fs::write(&src, c).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .arg(&src)
        .arg("-o")
        .arg(&bin)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cc} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&bin).output().unwrap();
    assert!(out.status.success());
    let c_values: HashMap<String, i128> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once('=').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    let mismatches: Vec<String> = values
        .iter()
        .filter(|(k, v)| c_values.get(k) != Some(v))
        .map(|(k, v)| format!("{k}: rust {v}, C {:?}", c_values.get(k)))
        .collect();
    assert!(
        mismatches.is_empty(),
        "layout mismatches:\n{}",
        mismatches.join("\n")
    );
    assert_eq!(c_values.len(), values.len());
}
