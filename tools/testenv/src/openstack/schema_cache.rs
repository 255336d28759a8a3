//! The cache of migrated, empty service databases: a schema migration costs 2-3 s of CPU per
//! service, and its result only changes with the packages.

use std::fs;
use std::path::{Path, PathBuf};

use super::{copy, Error};

/// Migrated, still empty databases (keystone, cinder, glance) kept next to the state
/// directory, keyed by the installed package versions: a schema migration costs 2-3 s of CPU
/// per service and the result only changes with the packages. Not state: `down` keeps it.
pub(crate) struct SchemaCache {
    pub(crate) dir: Option<PathBuf>,
}

impl SchemaCache {
    /// The cache for the installed packages (disabled if their versions cannot be read).
    pub(crate) fn new(state_dir: &Path) -> Self {
        Self::new_in(state_dir, None)
    }

    /// The cache for the packages installed in `chroot` (the host's when `None`).
    pub(crate) fn new_in(state_dir: &Path, chroot: Option<&Path>) -> Self {
        let out = super::command_in(chroot, Path::new("dpkg-query"))
            .args(["-W", "-f", "${Package}=${Version} "])
            .args(["python3-keystone", "python3-cinder", "python3-glance"])
            .output();
        let dir = match out {
            Ok(o) if o.status.success() => {
                use sha2::Digest;
                let mut h = sha2::Sha256::new();
                // bump when what is cached changes (v2: cinder's database not in WAL mode)
                h.update(b"schema-cache-v2 ");
                h.update(&o.stdout);
                let digest = h.finalize();
                let key: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
                Some(state_dir.join("openstack-cache").join(key))
            }
            _ => None,
        };
        SchemaCache { dir }
    }

    /// Puts a migrated `name` database at `dest`: from the cache, else by running `migrate`
    /// (which must create `dest`) and storing the result.
    pub(crate) fn migrated(
        &self,
        name: &str,
        dest: &Path,
        migrate: impl FnOnce() -> Result<(), Error>,
    ) -> Result<(), Error> {
        let cached = self.dir.as_ref().map(|d| d.join(format!("{name}.sqlite")));
        if let Some(c) = cached.as_ref().filter(|c| c.is_file()) {
            tracing::debug!("{name}: migrated schema from {}", c.display());
            return copy(c, dest);
        }
        migrate()?;
        if let (Some(c), Some(d)) = (cached, self.dir.as_ref()) {
            // best effort: a failure here only costs the next start-up time
            let tmp = c.with_extension(format!("tmp{}", std::process::id()));
            if fs::create_dir_all(d).is_ok() && fs::copy(dest, &tmp).is_ok() {
                let _ = fs::rename(&tmp, &c);
            }
        }
        Ok(())
    }
}
