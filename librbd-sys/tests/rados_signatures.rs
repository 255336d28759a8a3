//! Checks the librados declarations in `librbd-sys` against the installed C header
//! (`rados/librados.h`): each declared function is assigned to a Rust function pointer of the
//! expected type (so the Rust declaration cannot drift), and a C program assigns each C
//! function to a pointer of the matching C type, compiled with incompatible pointer types
//! as errors (so the header cannot disagree with the type written here).
//!
//! Needs a C compiler (`cc`) and librados-dev, like building the crate needs librados.

use std::process::Command;

use libc::{c_char, c_int, size_t};
use librbd_sys::*;

/// One row per declared librados function: the Rust name, its Rust pointer type, and the
/// same parameter and return types in C. Both sides are checked from this one table.
macro_rules! signatures {
    ($( $name:ident: fn($($rty:ty),*) $(-> $rret:ty)? = $cret:literal ($($cty:literal),*); )*) => {{
        let mut rows: Vec<(&'static str, String)> = Vec::new();
        $(
            let _: unsafe extern "C" fn($($rty),*) $(-> $rret)? = $name;
            let params: Vec<&str> = vec![$($cty),*];
            let params = if params.is_empty() { "void".to_string() } else { params.join(", ") };
            rows.push((stringify!($name), format!("{} (*)({})", $cret, params)));
        )*
        rows
    }};
}

fn declared() -> Vec<(&'static str, String)> {
    signatures! {
        rados_create2: fn(*mut rados_t, *const c_char, *const c_char, u64) -> c_int =
            "int"("rados_t *", "const char *const", "const char *const", "uint64_t");
        rados_conf_read_file: fn(rados_t, *const c_char) -> c_int =
            "int"("rados_t", "const char *");
        rados_conf_set: fn(rados_t, *const c_char, *const c_char) -> c_int =
            "int"("rados_t", "const char *", "const char *");
        rados_conf_get: fn(rados_t, *const c_char, *mut c_char, size_t) -> c_int =
            "int"("rados_t", "const char *", "char *", "size_t");
        rados_connect: fn(rados_t) -> c_int = "int"("rados_t");
        rados_shutdown: fn(rados_t) = "void"("rados_t");
        rados_cluster_fsid: fn(rados_t, *mut c_char, size_t) -> c_int =
            "int"("rados_t", "char *", "size_t");
        rados_ioctx_create: fn(rados_t, *const c_char, *mut rados_ioctx_t) -> c_int =
            "int"("rados_t", "const char *", "rados_ioctx_t *");
        rados_ioctx_destroy: fn(rados_ioctx_t) = "void"("rados_ioctx_t");
        rados_ioctx_get_id: fn(rados_ioctx_t) -> i64 = "int64_t"("rados_ioctx_t");
        rados_ioctx_set_namespace: fn(rados_ioctx_t, *const c_char) =
            "void"("rados_ioctx_t", "const char *");
        rados_mon_command: fn(
            rados_t, *mut *const c_char, size_t, *const c_char, size_t,
            *mut *mut c_char, *mut size_t, *mut *mut c_char, *mut size_t
        ) -> c_int = "int"(
            "rados_t", "const char **", "size_t", "const char *", "size_t",
            "char **", "size_t *", "char **", "size_t *"
        );
        rados_mon_command_target: fn(
            rados_t, *const c_char, *mut *const c_char, size_t, *const c_char, size_t,
            *mut *mut c_char, *mut size_t, *mut *mut c_char, *mut size_t
        ) -> c_int = "int"(
            "rados_t", "const char *", "const char **", "size_t", "const char *", "size_t",
            "char **", "size_t *", "char **", "size_t *"
        );
        rados_mgr_command: fn(
            rados_t, *mut *const c_char, size_t, *const c_char, size_t,
            *mut *mut c_char, *mut size_t, *mut *mut c_char, *mut size_t
        ) -> c_int = "int"(
            "rados_t", "const char **", "size_t", "const char *", "size_t",
            "char **", "size_t *", "char **", "size_t *"
        );
        rados_buffer_free: fn(*mut c_char) = "void"("char *");
        rados_create_read_op: fn() -> rados_read_op_t = "rados_read_op_t"();
        rados_release_read_op: fn(rados_read_op_t) = "void"("rados_read_op_t");
        rados_read_op_omap_get_vals: fn(
            rados_read_op_t, *const c_char, *const c_char, u64, *mut rados_omap_iter_t,
            *mut c_int
        ) = "void"(
            "rados_read_op_t", "const char *", "const char *", "uint64_t",
            "rados_omap_iter_t *", "int *"
        );
        rados_read_op_operate: fn(rados_read_op_t, rados_ioctx_t, *const c_char, c_int)
            -> c_int = "int"("rados_read_op_t", "rados_ioctx_t", "const char *", "int");
        rados_omap_get_next: fn(rados_omap_iter_t, *mut *mut c_char, *mut *mut c_char,
            *mut size_t) -> c_int =
            "int"("rados_omap_iter_t", "char **", "char **", "size_t *");
        rados_omap_get_end: fn(rados_omap_iter_t) = "void"("rados_omap_iter_t");
    }
}

/// `int (*)(rados_t)` with a name: `int (*p_NAME)(rados_t)`.
fn c_pointer_decl(name: &str, ty: &str) -> String {
    ty.replacen("(*)", &format!("(*p_{name})"), 1)
}

#[test]
fn librados_declarations_match_librados_h() {
    let rows = declared();
    let mut c = String::from("#include <stdint.h>\n#include <rados/librados.h>\n");
    for (name, ty) in &rows {
        c.push_str(&format!("{} = {name};\n", c_pointer_decl(name, ty)));
    }
    c.push_str("int main(void) { return 0; }\n");
    let dir = std::env::temp_dir().join(format!("librbd-sys-rados-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("rados_signatures.c");
    std::fs::write(&src, &c).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    // -Wno-deprecated-declarations: rados_read_op_omap_get_vals is marked deprecated.
    let out = Command::new(&cc)
        .args([
            "-fsyntax-only",
            "-Werror=incompatible-pointer-types",
            "-Werror=implicit-function-declaration",
            "-Wno-deprecated-declarations",
        ])
        .arg(&src)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "a librados declaration disagrees with librados.h ({cc}):\n{}\n--- program:\n{c}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rows.len(), 21, "every declared librados function has a row");
}

#[test]
fn the_signature_check_rejects_a_wrong_parameter_type() {
    // The C side of the check must be able to fail: a pointer type that differs from the
    // header (size_t* where the header has size_t) is a compile error.
    let c = "#include <stdint.h>\n#include <rados/librados.h>\n\
             int (*p)(rados_t, char *, size_t *) = rados_cluster_fsid;\n\
             int main(void) { return 0; }\n";
    let dir = std::env::temp_dir().join(format!("librbd-sys-rados-neg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("wrong.c");
    std::fs::write(&src, c).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-fsyntax-only", "-Werror=incompatible-pointer-types"])
        .arg(&src)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success(), "cc accepted a wrong signature");
}
