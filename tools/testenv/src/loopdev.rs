//! A bluestore OSD on a loop device, so the space of removed images goes back to the host's
//! disk ([`crate::layout::BLUESTORE_LOOP_ENV`]).
//!
//! On a plain sparse file, bluestore's allocator moves on through the whole file before it
//! reuses freed space, and nothing ever punches freed space out of the file: a bench that
//! writes and removes several copies of an 8 GiB image fills both files to their full size.
//! On a loop device bluestore can discard (`bdev_enable_discard`), and the loop driver turns
//! each discard into a hole in the backing file.
//!
//! The OSD's `block.img` (the path in the conf) becomes a symlink to the device; the data is
//! in `block.file` beside it. `teardown` detaches every loop device backed by that file before
//! the directory goes, so nothing holds the removed file's space.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::process;

/// The file that holds the data, in the OSD's directory.
const BACKING_FILE: &str = "block.file";
/// The path bluestore opens (`bluestore_block_path`), in the OSD's directory.
const BLOCK_PATH: &str = "block.img";
/// `losetup` is quick; a hung one must not hang `up` or `down`.
const LOSETUP_LIMIT: Duration = Duration::from_secs(30);

/// Creates `osd_dir/block.file` (sparse, `bytes` long), attaches it to a free loop device
/// with direct I/O (bluestore writes with O_DIRECT; no second cache in the host's page
/// cache), and points `osd_dir/block.img` at the device. Returns the device.
pub(crate) fn attach(osd_dir: &Path, bytes: u64) -> Result<PathBuf> {
    let file = osd_dir.join(BACKING_FILE);
    let f = fs::File::create(&file).map_err(|e| Error::io("create", &file, e))?;
    f.set_len(bytes).map_err(|e| Error::io("size", &file, e))?;
    drop(f);
    let file_arg = file.to_string_lossy().into_owned();
    let out = process::run(
        "losetup",
        &["--find", "--show", "--direct-io=on", &file_arg],
        None,
        LOSETUP_LIMIT,
    )
    .map_err(|e| Error::BadSetting(format!(
        "{}=1 needs a free loop device (bluestore's OSD goes on one): {e}; unset it to put the OSD on a plain file",
        crate::layout::BLUESTORE_LOOP_ENV
    )))?;
    let device = PathBuf::from(out.stdout.trim());
    let link = osd_dir.join(BLOCK_PATH);
    if let Err(e) = std::os::unix::fs::symlink(&device, &link) {
        // do not leave the device attached to a file nobody will detach
        let _ = detach_all(osd_dir);
        return Err(Error::io("symlink", &link, e));
    }
    tracing::info!(device = %device.display(), file = %file.display(), bytes, "bluestore on a loop device");
    Ok(device)
}

/// Detaches every loop device whose backing file is `osd_dir/block.file`. Returns how many.
/// Nothing to do when the file does not exist (a plain-file OSD, or already removed).
pub(crate) fn detach_all(osd_dir: &Path) -> Result<usize> {
    let file = osd_dir.join(BACKING_FILE);
    if !file.exists() {
        return Ok(0);
    }
    let file_arg = file.to_string_lossy().into_owned();
    let out = process::run(
        "losetup",
        &[
            "--noheadings",
            "--output",
            "NAME",
            "--associated",
            &file_arg,
        ],
        None,
        LOSETUP_LIMIT,
    )?;
    let devices = devices_in(&out.stdout);
    for device in &devices {
        process::run("losetup", &["--detach", device], None, LOSETUP_LIMIT)?;
        tracing::info!(device, file = %file.display(), "loop device detached");
    }
    Ok(devices.len())
}

/// The device names `losetup --noheadings --output NAME` printed, one per line.
fn devices_in(listing: &str) -> Vec<String> {
    listing
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("/dev/loop"))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loop_device_names_are_taken_from_the_listing() {
        assert_eq!(
            devices_in("/dev/loop0\n  /dev/loop12 \n\nlosetup: warning\n"),
            vec!["/dev/loop0".to_string(), "/dev/loop12".to_string()]
        );
        assert!(devices_in("").is_empty());
    }

    /// Real loop devices (root, as every test of this workspace): the device is attached to
    /// our file, `block.img` leads to it, and `detach_all` leaves none behind.
    #[test]
    fn a_loop_device_is_attached_to_the_osd_file_and_detached_again() {
        /// Detaches the device also when an assertion fails.
        struct Detach<'a>(&'a Path);
        impl Drop for Detach<'_> {
            fn drop(&mut self) {
                let _ = detach_all(self.0);
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let device = attach(dir.path(), 64 << 20).expect("attach");
        let _detach = Detach(dir.path());
        assert!(
            device.to_string_lossy().starts_with("/dev/loop"),
            "{}",
            device.display()
        );
        assert_eq!(
            fs::read_link(dir.path().join(BLOCK_PATH)).expect("block.img link"),
            device
        );
        let file = dir.path().join(BACKING_FILE);
        assert_eq!(fs::metadata(&file).expect("block.file").len(), 64 << 20);
        let backing = fs::read_to_string(format!(
            "/sys/block/{}/loop/backing_file",
            device.file_name().and_then(|n| n.to_str()).expect("name")
        ))
        .expect("backing_file");
        assert_eq!(backing.trim(), file.to_string_lossy());
        assert_eq!(detach_all(dir.path()).expect("detach"), 1);
        assert_eq!(detach_all(dir.path()).expect("detach again"), 0);
    }
}
