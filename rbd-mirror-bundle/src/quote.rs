//! How plan values become script text: every name goes through [`sh_quote`] once, into a
//! variable assignment at the top of a script or section; JSON bodies and URL parts are
//! encoded first and then quoted the same way.

use std::fmt::Write as _;

use rbd_mirror_core::features::Features;

/// Quote `s` for POSIX sh: one single-quoted word whose value is exactly `s` (a `'` becomes
/// `'\''`). Safe for any string, including `$(...)`, backticks, `;`, `*` and newlines.
pub fn sh_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// A JSON string literal for `s` (quotes included).
pub(crate) fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Percent-encode everything but unreserved characters (for a path part of an rbd:// URL).
pub(crate) fn url_part(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Space-separated `rbd` names of a feature set, as the scripts compare them.
pub(crate) fn names(f: Features) -> String {
    f.names().join(" ")
}
