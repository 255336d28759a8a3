//! A site on a newer Ceph release than the host's: its daemons run inside a Debian chroot
//! (trixie for Reef, sid for Tentacle) that shares the host's loopback network, so the
//! host's own Pacific tools and librbd talk to it like to any other cluster.
//!
//! The chroot is built once (debootstrap + apt from the archive the host's apt uses) and
//! cached beside the state directory: `<state dir>/../rbd-relay-chroots/<suite>-ceph`. While
//! a site runs in it, `/proc`, `/dev`, `/etc/ceph` and the state directory are bind-mounted
//! into it at their host paths, so the daemons' confs, keyrings, pid files and logs are the
//! same files the host sees. Teardown unmounts them again.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::layout::{Release, ETC_CEPH};

/// The script that builds a chroot (run with `sh -c`, so the binary carries it).
const BUILD_SCRIPT: &str = include_str!("chroot/build-ceph-chroot.sh");
/// The script that adds the suite's OpenStack services to a finished chroot.
const OPENSTACK_SCRIPT: &str = include_str!("chroot/add-openstack.sh");
/// File written into a chroot once its OpenStack packages are installed.
const OPENSTACK_MARKER: &str = ".rbd-relay-openstack-complete";
/// File written into a chroot once its build finished; a directory without it is not used.
const COMPLETE_MARKER: &str = ".rbd-relay-chroot-complete";
/// Where the host's apt sources are read from, to find the archive.
const APT_SOURCES: [&str; 2] = ["/etc/apt/sources.list.d", "/etc/apt/sources.list"];

/// Directory holding the cached chroots for environments in `state_root`.
pub(crate) fn cache_dir(state_root: &Path) -> PathBuf {
    state_root
        .parent()
        .unwrap_or(Path::new("/"))
        .join("rbd-relay-chroots")
}

/// The chroot of `release` for environments in `state_root`, `None` for the host's release.
pub(crate) fn root_for(state_root: &Path, release: Release) -> Option<PathBuf> {
    release
        .chroot_suite()
        .map(|suite| cache_dir(state_root).join(format!("{suite}-ceph")))
}

/// The Debian archive URL of the host's apt sources: the first source (deb822 stanza with
/// `URIs:`/`Suites:`, or one-line `deb URL SUITE ...`) that carries the host's own suite
/// `codename` (e.g. bookworm). Third-party repositories (other suites) and the security
/// archive (`bookworm-security`) are never chosen: debootstrap needs the Debian archive.
pub(crate) fn archive_from_sources(texts: &[String], codename: &str) -> Option<String> {
    let mut sources: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    for text in texts {
        let (mut uris, mut suites) = (Vec::new(), Vec::new());
        for line in text.lines().chain(std::iter::once("")) {
            let line = line.trim();
            if line.is_empty() {
                if !uris.is_empty() {
                    sources.push((std::mem::take(&mut uris), std::mem::take(&mut suites)));
                }
                suites.clear();
            } else if let Some(rest) = line.strip_prefix("URIs:") {
                uris = rest.split_whitespace().map(str::to_string).collect();
            } else if let Some(rest) = line.strip_prefix("Suites:") {
                suites = rest.split_whitespace().map(str::to_string).collect();
            } else if let Some(rest) = line.strip_prefix("deb ") {
                let mut words = rest.split_whitespace().skip_while(|w| w.starts_with('['));
                if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
                    sources.push((vec![uri.to_string()], vec![suite.to_string()]));
                }
            }
        }
    }
    sources
        .into_iter()
        .find(|(_, suites)| suites.iter().any(|s| s == codename))
        .and_then(|(uris, _)| uris.into_iter().next())
}

fn host_codename() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "bookworm".to_string())
}

fn host_archive() -> Result<String> {
    let mut texts = Vec::new();
    for p in APT_SOURCES {
        let path = Path::new(p);
        let files: Vec<PathBuf> = if path.is_dir() {
            std::fs::read_dir(path)
                .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
                .unwrap_or_default()
        } else {
            vec![path.to_path_buf()]
        };
        // apt reads only *.sources and *.list files (not *.disabled, *.save ...)
        for f in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "sources" || e == "list"))
        {
            if let Ok(t) = std::fs::read_to_string(f) {
                texts.push(t);
            }
        }
    }
    let codename = host_codename();
    archive_from_sources(&texts, &codename).ok_or(Error::NoArchive { codename })
}

/// Makes sure the chroot of `release` exists (building it when it does not, with progress
/// on stderr) and returns its root. `Ok(None)` for the host's own release.
pub(crate) fn ensure(state_root: &Path, release: Release) -> Result<Option<PathBuf>> {
    let (Some(root), Some(suite)) = (root_for(state_root, release), release.chroot_suite()) else {
        return Ok(None);
    };
    if root.join(COMPLETE_MARKER).exists() {
        return Ok(Some(root));
    }
    let archive = host_archive()?;
    build(&root, suite, &archive, release)?;
    Ok(Some(root))
}

/// The chroot of `release` with the suite's OpenStack (Keystone, Cinder, Glance) installed
/// too, for a destination cloud on the newer OpenStack: `Ok(None)` for a release whose cloud
/// stays the host's ([`Release::openstack_release`]). Builds the chroot and installs the
/// packages when they are missing (needs the archive), with progress on stderr.
pub(crate) fn ensure_openstack(state_root: &Path, release: Release) -> Result<Option<PathBuf>> {
    if release.openstack_release().is_none() {
        return Ok(None);
    }
    let Some(root) = ensure(state_root, release)? else {
        return Ok(None);
    };
    if root.join(OPENSTACK_MARKER).exists() {
        return Ok(Some(root));
    }
    let suite = release.chroot_suite().unwrap_or("?");
    let archive = host_archive()?;
    eprintln!(
        "testenv: installing {suite}'s OpenStack into {} (once; several minutes)",
        root.display()
    );
    let out = Command::new("sh")
        .args(["-c", OPENSTACK_SCRIPT, "add-openstack"])
        .arg(&root)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .output()
        .map_err(|source| Error::Spawn {
            command: "sh -c add-openstack.sh".into(),
            source,
        })?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        eprintln!("testenv: chroot {suite}: {line}");
    }
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(Error::ChrootBuild {
            suite: suite.to_string(),
            archive,
            detail: format!("installing OpenStack: {}; {}", out.status, stderr.trim()),
        });
    }
    let marker = root.join(OPENSTACK_MARKER);
    std::fs::write(&marker, String::from_utf8_lossy(&out.stdout).as_bytes())
        .map_err(|e| Error::io("write", &marker, e))?;
    Ok(Some(root))
}

/// Builds the chroot into `<root>.build` and renames it to `root` once it is complete.
pub(crate) fn build(root: &Path, suite: &str, archive: &str, release: Release) -> Result<()> {
    let parent = root.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
    let tmp = root.with_extension("build");
    if tmp.exists() {
        // a half-built chroot of an interrupted build: never mounted (only finished ones are)
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io("remove", &tmp, e))?;
    }
    eprintln!(
        "testenv: building the Debian {suite} chroot for Ceph {release} from {archive} into {} (once; several minutes)",
        root.display()
    );
    let tmp_s = tmp.to_string_lossy().into_owned();
    let mut child = Command::new("sh")
        .args([
            "-c",
            BUILD_SCRIPT,
            "build-ceph-chroot",
            suite,
            &tmp_s,
            archive,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            command: "sh -c build-ceph-chroot.sh".into(),
            source,
        })?;
    let err_reader = child.stderr.take().map(|mut p| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut p, &mut s);
            s
        })
    });
    let mut seen = Vec::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
            eprintln!("testenv: chroot {suite}: {line}");
            seen.push(line);
        }
    }
    let status = child.wait().map_err(|source| Error::Spawn {
        command: "sh -c build-ceph-chroot.sh".into(),
        source,
    })?;
    let stderr = err_reader.and_then(|h| h.join().ok()).unwrap_or_default();
    if !status.success() {
        let detail: Vec<&str> = seen
            .iter()
            .map(String::as_str)
            .chain(stderr.lines())
            .filter(|l| l.contains("E:") || l.contains("Failed") || l.contains("error"))
            .map(str::trim)
            .collect();
        return Err(Error::ChrootBuild {
            suite: suite.to_string(),
            archive: archive.to_string(),
            detail: if detail.is_empty() {
                format!("{status}; {}", stderr.trim())
            } else {
                detail.join("; ")
            },
        });
    }
    let marker = tmp.join(COMPLETE_MARKER);
    std::fs::write(&marker, format!("{suite} {release}\n"))
        .map_err(|e| Error::io("write", &marker, e))?;
    std::fs::rename(&tmp, root).map_err(|e| Error::io("rename", &tmp, e))?;
    eprintln!("testenv: chroot {suite} ready: {}", root.display());
    Ok(())
}

/// Mount points below `root` (deepest first), from the mount table of this namespace.
pub(crate) fn mounts_below(root: &Path) -> Vec<PathBuf> {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut points: Vec<PathBuf> = table
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(root) && p != root)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

fn mount(args: &[&str]) -> Result<()> {
    crate::process::run("mount", args, None, std::time::Duration::from_secs(30)).map(|_| ())
}

/// Bind-mounts what the daemons need into `root` (idempotent): `/proc`, `/dev`, `/etc/ceph`
/// and the state directory, each at its host path.
pub(crate) fn mount_into(root: &Path, state_root: &Path) -> Result<()> {
    let present = mounts_below(root);
    for host in [
        Path::new("/proc"),
        Path::new("/dev"),
        Path::new(ETC_CEPH),
        state_root,
    ] {
        let inside = root.join(host.strip_prefix("/").unwrap_or(host));
        if present.contains(&inside) {
            continue;
        }
        std::fs::create_dir_all(&inside).map_err(|e| Error::io("create", &inside, e))?;
        let (h, i) = (host.to_string_lossy(), inside.to_string_lossy());
        if host == Path::new("/proc") {
            mount(&["-t", "proc", "proc", &i])?;
        } else {
            mount(&["--bind", &h, &i])?;
        }
    }
    Ok(())
}

/// Unmounts everything below `root` (lazily, so a straggler cannot block it). Returns how
/// many mount points went.
pub(crate) fn unmount_all(root: &Path) -> usize {
    let points = mounts_below(root);
    for p in &points {
        let p = p.to_string_lossy();
        if let Err(e) = crate::process::run(
            "umount",
            &["-l", &p],
            None,
            std::time::Duration::from_secs(30),
        ) {
            tracing::warn!(mount = %p, error = %e, "umount failed");
        }
    }
    points.len()
}

/// Every chroot of the cache for `state_root` (for teardown: whatever release ran).
pub(crate) fn all_roots(state_root: &Path) -> Vec<PathBuf> {
    [Release::Reef, Release::Tentacle]
        .into_iter()
        .filter_map(|r| root_for(state_root, r))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_is_the_source_of_the_host_suite_never_a_third_party_or_security_one() {
        // a third-party repository listed first (its file sorts first) must not be chosen
        let nodesource =
            "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n";
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n\
                      Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n";
        assert_eq!(
            archive_from_sources(&[nodesource.into(), deb822.into()], "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        let one_line = "# c\ndeb https://vendor.example/apt cloud-sdk-bookworm main\n\
                        deb [arch=amd64] http://m.example/debian bookworm main\n";
        assert_eq!(
            archive_from_sources(&[one_line.into()], "bookworm").as_deref(),
            Some("http://m.example/debian")
        );
        assert_eq!(archive_from_sources(&[nodesource.into()], "bookworm"), None);
    }

    #[test]
    fn an_unreachable_archive_is_a_clear_error_naming_it_and_leaves_no_chroot() {
        // nothing listens on port 9 of loopback: debootstrap cannot fetch the Release file
        // (and where debootstrap is missing or we are not root, the build fails just the same)
        let dir = std::env::temp_dir().join(format!("testenv-chroot-{}", std::process::id()));
        let root = dir.join("trixie-ceph");
        let archive = "http://127.0.0.1:9/debian";
        let err = build(&root, "trixie", archive, Release::Reef).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::ChrootBuild { .. }), "{text}");
        assert!(text.contains(archive) && text.contains("trixie"), "{text}");
        assert!(text.contains("is the archive reachable"), "{text}");
        assert!(
            !root.exists(),
            "a failed build must not leave a chroot that counts"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_chroot_cache_sits_beside_the_state_directory() {
        let st = Path::new("/var/tmp/mx/env");
        assert_eq!(root_for(st, Release::Pacific), None);
        assert_eq!(
            root_for(st, Release::Reef),
            Some(PathBuf::from("/var/tmp/mx/rbd-relay-chroots/trixie-ceph"))
        );
        assert_eq!(
            root_for(st, Release::Tentacle),
            Some(PathBuf::from("/var/tmp/mx/rbd-relay-chroots/sid-ceph"))
        );
    }
}
