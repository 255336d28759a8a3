//! `3-tenant-admin.sh`: checks the verified-copy handoff, then adopts the copy as a Cinder
//! volume (manage-existing) or registers it as a Glance image by its rbd:// location, waits
//! until it is usable and passes the handoff on.

use std::fmt::Write as _;

use rbd_mirror_core::cloud::{AdoptTarget, MARKER_KEY};
use rbd_mirror_core::plan::Step;

use crate::quote::{json_string, url_part};
use crate::render::{next_command, Renderer};
use crate::template::{section, TENANT};
use crate::{sh_quote, BundleError, Flow, Script};

const VERIFIED_HANDOFF: &str = section(TENANT, "verified_handoff");
const HANDOVER_HANDOFF: &str = section(TENANT, "handover_handoff");
const PRECONDITIONS: &str = section(TENANT, "preconditions");
const STEP_ADOPT_VOLUME: &str = section(TENANT, "step_adopt_volume");
const STEP_REGISTER_IMAGE: &str = section(TENANT, "step_register_image");
const STEP_CHECK_MIN_DISK: &str = section(TENANT, "step_check_min_disk");

impl Renderer<'_> {
    /// The body of the tenant script.
    pub(crate) fn tenant(&self, s: &mut String) -> Result<(), BundleError> {
        let _ = writeln!(s, "MARKER_KEY={}", sh_quote(MARKER_KEY));
        // by copy the tenant adopts the verified copy; by clone the handed over clone
        // (verified after the adoption, the source demoted until then)
        s.push_str(match Flow::of(self.plan) {
            Flow::Copy => VERIFIED_HANDOFF,
            Flow::Clone => HANDOVER_HANDOFF,
        });
        s.push_str(PRECONDITIONS);
        for &i in self.steps {
            self.step_header(s, i);
            let step = &self.plan.steps[i];
            match step {
                Step::UploadToImage { .. } => return Err(BundleError::upload_step(step)),
                Step::RemoveCopy { .. }
                | Step::DisableSourceMirroring
                | Step::RemoveMirrorSnapshots { .. }
                | Step::RestoreOriginalFeatures { .. }
                | Step::RemoveSourceMarker
                | Step::PromoteSource
                | Step::DemoteReplica { .. } => return Err(BundleError::undo_step(step)),
                Step::WaitForCutover { .. }
                | Step::DemoteSource
                | Step::PromoteReplica
                | Step::CloneReplica { .. }
                | Step::VerifyHandover { .. }
                | Step::FlattenCopy
                | Step::ReleaseSource
                | Step::RemoveReplica { .. } => return Err(BundleError::not_in(step, "tenant")),
                Step::AdoptVolume { target, name, .. } => {
                    self.adopt_volume_names(s, target, name.as_deref());
                    s.push_str(STEP_ADOPT_VOLUME);
                }
                Step::RegisterImage { name, .. } => {
                    self.register_image_names(s, name)?;
                    s.push_str(STEP_REGISTER_IMAGE);
                }
                Step::CheckMinDisk { min_gib } => {
                    let _ = writeln!(s, "MIN_GIB={min_gib}");
                    s.push_str(STEP_CHECK_MIN_DISK);
                }
                Step::Preflight
                | Step::EnablePoolMirroring
                | Step::SetJournalPayload { .. }
                | Step::RestoreJournalPayload { .. }
                | Step::EnableFeatures { .. }
                | Step::EnableMirroring { .. }
                | Step::WaitForReplica
                | Step::CopyReplica
                | Step::SetCopyFeatures { .. }
                | Step::Verify
                | Step::DisableMirroring
                | Step::RestoreFeatures { .. }
                | Step::GrowCopy { .. }
                | Step::SnapshotAndProtect { .. } => {
                    return Err(BundleError::not_in(step, "tenant"));
                }
            }
        }
        match Flow::of(self.plan) {
            Flow::Copy => next_command(
                s,
                "the Ceph source admin runs the cleanup",
                Script::Cleanup.file_name(),
            ),
            Flow::Clone => self.hand_to_next(s),
        }
        Ok(())
    }

    /// The names of the adoption: the Cinder host or pool, the volume's name and the JSON
    /// fields of the manage request.
    fn adopt_volume_names(&self, s: &mut String, target: &AdoptTarget, name: Option<&str>) {
        let p = self.plan;
        let m = &p.migration;
        let (host, pool) = match target {
            AdoptTarget::Host { host } => (host.clone(), String::new()),
            AdoptTarget::CephPool { pool } => (String::new(), pool.clone()),
        };
        let bootable = m.adopt.as_ref().is_some_and(|a| a.bootable);
        let mut fields = format!(
            "\"ref\": {{\"source-name\": {}}}, \"bootable\": {bootable}, \"metadata\": {{{}: {}, \"rbd_relay_source\": {}}}",
            json_string(&m.dest_name),
            json_string(MARKER_KEY),
            json_string(&p.id),
            json_string(&format!("{}:{}", m.source.name, m.image))
        );
        if let Some(n) = name {
            let _ = write!(fields, ", \"name\": {}", json_string(n));
        }
        let _ = writeln!(
            s,
            "CINDER_HOST=${{CINDER_HOST:-{}}}\nCINDER_POOL={}\nVOLUME_NAME={}\nMANAGE_FIELDS={}",
            sh_quote(&host),
            sh_quote(&pool),
            sh_quote(name.unwrap_or("")),
            sh_quote(&fields)
        );
        // a bootable source volume's image metadata, as the source cloud gave it when the
        // bundle was generated (`--source-cloud`): the body of the os-set_image_metadata
        // action, empty for none
        let metadata = m
            .adopt
            .as_ref()
            .map(|a| &a.image_metadata)
            .filter(|md| !md.is_empty())
            .map(|md| {
                let pairs: Vec<String> = md
                    .iter()
                    .map(|(k, v)| format!("{}: {}", json_string(k), json_string(v)))
                    .collect();
                format!(
                    "{{\"os-set_image_metadata\": {{\"metadata\": {{{}}}}}}}",
                    pairs.join(", ")
                )
            })
            .unwrap_or_default();
        let _ = writeln!(s, "IMAGE_METADATA={}", sh_quote(&metadata));
    }

    /// The names of the registration: the image's name, min_disk and the location's path.
    fn register_image_names(&self, s: &mut String, name: &str) -> Result<(), BundleError> {
        let m = &self.plan.migration;
        let r = m.register.as_ref().ok_or(BundleError::Unsupported {
            step: "register_image",
            reason: "the plan has no registration".into(),
        })?;
        let target = m.copy_target();
        let _ = writeln!(
            s,
            "IMAGE_NAME={}\nMIN_DISK={}\nLOCATION_TAIL={}",
            sh_quote(name),
            r.min_disk_gib,
            sh_quote(&format!(
                "{}/{}/{}",
                url_part(&target.pool.pool),
                url_part(&target.image),
                url_part(&r.snapshot)
            ))
        );
        Ok(())
    }
}
