//! The shell text of the scripts lives in `sh/*.sh`, not in Rust strings, so that it can be
//! read, shellchecked and run as shell (see the tests). The files are included at build time
//! and cut into named sections (a line `#@ NAME` starts one); every section is looked up in a
//! `const`, so a section named here and missing from its file fails the build.

/// Functions every script has.
pub(crate) const COMMON: &str = include_str!("../sh/common.sh");
/// Functions of the Ceph scripts, and each side's cluster access.
pub(crate) const CEPH: &str = include_str!("../sh/ceph.sh");
/// The completion decisions (twins of `rbd_mirror_core::wait`'s).
pub(crate) const COMPLETION: &str = include_str!("../sh/completion.sh");
/// The body of `1-source-ceph-admin.sh`.
pub(crate) const SOURCE: &str = include_str!("../sh/1-source.sh");
/// The body of `2-destination-ceph-admin.sh`.
pub(crate) const DESTINATION: &str = include_str!("../sh/2-destination.sh");
/// The body of `3-tenant-admin.sh`.
pub(crate) const TENANT: &str = include_str!("../sh/3-tenant.sh");
/// The body of `4-source-ceph-admin-cleanup.sh`.
pub(crate) const CLEANUP: &str = include_str!("../sh/4-cleanup.sh");
/// The Ceph source admin's scripts of the handover by clone (cutover, release, roll back).
pub(crate) const CLONE_SOURCE: &str = include_str!("../sh/clone-source.sh");
/// The Ceph destination admin's scripts of the handover by clone (in sync, handover,
/// verify, replica removal, roll back).
pub(crate) const CLONE_DESTINATION: &str = include_str!("../sh/clone-destination.sh");

/// Every file of `sh/` with its name (for the tests that shellcheck and run them).
#[cfg(test)]
pub(crate) const FILES: [(&str, &str); 9] = [
    ("common.sh", COMMON),
    ("ceph.sh", CEPH),
    ("completion.sh", COMPLETION),
    ("1-source.sh", SOURCE),
    ("2-destination.sh", DESTINATION),
    ("3-tenant.sh", TENANT),
    ("4-cleanup.sh", CLEANUP),
    ("clone-source.sh", CLONE_SOURCE),
    ("clone-destination.sh", CLONE_DESTINATION),
];

/// The marker that starts a section: `#@ NAME` on a line of its own.
const MARKER: &[u8] = b"#@ ";

/// Section `name` of `file`: the lines after its `#@ name` line up to the next marker line
/// (or the end), without trailing blank lines (they only separate sections in the file).
/// Use it in a `const`: it panics, which there fails the build, if the section is missing.
pub(crate) const fn section(file: &'static str, name: &str) -> &'static str {
    let src = file.as_bytes();
    let name = name.as_bytes();
    let mut start = 0;
    loop {
        if start >= src.len() {
            panic!("a section named in src/ is missing from its sh/ file");
        }
        if is_marker_line(src, start, name) {
            start += MARKER.len() + name.len() + 1;
            break;
        }
        start = next_line(src, start);
    }
    let mut end = start;
    while end < src.len() && !starts_with_at(src, end, MARKER) {
        end = next_line(src, end);
    }
    while end > start + 1 && src[end - 1] == b'\n' && src[end - 2] == b'\n' {
        end -= 1;
    }
    let (head, _) = src.split_at(end);
    let (_, text) = head.split_at(start);
    match core::str::from_utf8(text) {
        Ok(s) => s,
        Err(_) => panic!("a cut inside a character: markers are ASCII lines"),
    }
}

/// The offset of the line after the one starting at `at`.
const fn next_line(src: &[u8], mut at: usize) -> usize {
    while at < src.len() && src[at] != b'\n' {
        at += 1;
    }
    at + 1
}

/// Whether `src` has `what` at offset `at`.
const fn starts_with_at(src: &[u8], at: usize, what: &[u8]) -> bool {
    if at + what.len() > src.len() {
        return false;
    }
    let mut i = 0;
    while i < what.len() {
        if src[at + i] != what[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether the line starting at `at` is exactly `#@ NAME`.
const fn is_marker_line(src: &[u8], at: usize, name: &[u8]) -> bool {
    let end = at + MARKER.len() + name.len();
    starts_with_at(src, at, MARKER)
        && starts_with_at(src, at + MARKER.len(), name)
        && end < src.len()
        && src[end] == b'\n'
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# header\n\n#@ one\n\nfirst\n\n\n#@ two\nsecond\n#@ one_more\nthird\n";

    #[test]
    fn a_section_keeps_its_leading_blank_line_and_drops_trailing_ones() {
        const ONE: &str = section(SAMPLE, "one");
        assert_eq!(ONE, "\nfirst\n");
        assert_eq!(section(SAMPLE, "two"), "second\n");
        // a name that is a prefix of another is not that other one
        assert_eq!(section(SAMPLE, "one_more"), "third\n");
    }

    #[test]
    #[should_panic(expected = "missing")]
    fn a_missing_section_is_an_error() {
        let _ = section(SAMPLE, "three");
    }
}

/// Shellcheck of the files as they are, beside the check of whole rendered scripts in the
/// CLI's real tests: a finding points at the file and line to fix.
#[cfg(test)]
mod shellcheck {
    use super::FILES;

    #[test]
    fn every_file_in_sh_is_included_and_shellcheck_clean() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sh");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        on_disk.sort();
        let mut included: Vec<String> = FILES.iter().map(|(n, _)| n.to_string()).collect();
        included.sort();
        assert_eq!(
            on_disk, included,
            "every file in sh/ is one the renderer includes"
        );
        for name in &on_disk {
            let out = std::process::Command::new("shellcheck")
                .args(["-s", "sh", "-f", "gcc"])
                .arg(dir.join(name))
                .output()
                .expect("shellcheck must be installed (apt-get install shellcheck); this test never skips it");
            assert!(
                out.status.success(),
                "shellcheck sh/{name}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
