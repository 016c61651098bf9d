//! Which volume capabilities Basalt volumes offer: a filesystem (ext4 by default, xfs, btrfs) or
//! a raw block device, written by one node (RWO, RWOP), read by many, or written by many nodes as
//! raw block on a multiattach volume type only (a filesystem of ext4 or xfs is not a cluster
//! filesystem, so two writers would corrupt it).

use basalt::csi::{
    VolumeCapability,
    volume_capability::{AccessType, access_mode::Mode},
};
use tonic::Status;

pub const DEFAULT_FS: &str = "ext4";
pub const FILESYSTEMS: [&str; 3] = ["ext4", "xfs", "btrfs"];

/// How a capability wants the volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub block: bool,
    pub fs_type: String,
    pub mount_flags: Vec<String>,
    pub mount_group: String,
    pub mode: Mode,
}

impl Wanted {
    /// A single-node mode: only one node may have the volume published at a time.
    pub fn single_node(&self) -> bool {
        matches!(
            self.mode,
            Mode::SingleNodeWriter
                | Mode::SingleNodeReaderOnly
                | Mode::SingleNodeSingleWriter
                | Mode::SingleNodeMultiWriter
        )
    }

    /// A mode in which nobody writes.
    pub fn read_only(&self) -> bool {
        matches!(self.mode, Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly)
    }

    /// Several nodes write at once.
    pub fn many_writers(&self) -> bool {
        matches!(self.mode, Mode::MultiNodeMultiWriter | Mode::MultiNodeSingleWriter)
    }
}

/// Parses and checks one capability; `multiattach` says whether the volume (type) may be attached
/// by several hosts at once.
pub fn check(capability: &VolumeCapability, multiattach: bool) -> Result<Wanted, Status> {
    let mode = capability
        .access_mode
        .as_ref()
        .and_then(|access| Mode::try_from(access.mode).ok())
        .filter(|mode| *mode != Mode::Unknown)
        .ok_or_else(|| Status::invalid_argument("a volume capability needs an access mode"))?;
    let (block, fs_type, mount_flags, mount_group) = match &capability.access_type {
        Some(AccessType::Block(_)) => (true, String::new(), Vec::new(), String::new()),
        Some(AccessType::Mount(mount)) => {
            let fs_type = if mount.fs_type.is_empty() { DEFAULT_FS.to_owned() } else { mount.fs_type.clone() };
            if !FILESYSTEMS.contains(&fs_type.as_str()) {
                return Err(Status::invalid_argument(format!(
                    "filesystem {} is not offered: use {}",
                    basalt::error::excerpt(&fs_type),
                    FILESYSTEMS.join(", ")
                )));
            }
            for flag in &mount.mount_flags {
                check_mount_flag(flag)?;
            }
            (false, fs_type, mount.mount_flags.clone(), mount.volume_mount_group.clone())
        }
        None => return Err(Status::invalid_argument("a volume capability needs an access type: mount or block")),
    };
    let wanted = Wanted { block, fs_type, mount_flags, mount_group, mode };
    if wanted.many_writers() && !(block && multiattach) {
        return Err(Status::invalid_argument(
            "several nodes may write a volume only as raw block, and only on a multiattach volume type \
             (multiattach=\"<is> True\"): ext4, xfs and btrfs are not cluster filesystems",
        ));
    }
    if wanted.mode == Mode::MultiNodeReaderOnly && !multiattach {
        return Err(Status::invalid_argument(
            "several nodes may read a volume only on a multiattach volume type (multiattach=\"<is> True\")",
        ));
    }
    Ok(wanted)
}

/// Checks every capability; at least one is required.
pub fn check_all(capabilities: &[VolumeCapability], multiattach: bool) -> Result<Vec<Wanted>, Status> {
    if capabilities.is_empty() {
        return Err(Status::invalid_argument("volume_capabilities are required"));
    }
    capabilities.iter().map(|capability| check(capability, multiattach)).collect()
}

/// Mount flags reach `mount -o`: letters, digits and `=,._-:/` only, so none can smuggle another
/// argument in.
fn check_mount_flag(flag: &str) -> Result<(), Status> {
    let fine = !flag.is_empty()
        && flag.len() <= 255
        && flag.bytes().all(|b| b.is_ascii_alphanumeric() || b"=,._-:/+".contains(&b));
    if !fine {
        return Err(Status::invalid_argument(format!(
            "mount flag {} is not allowed: use letters, digits and =,._-:/+",
            basalt::error::excerpt(flag)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use basalt::csi::volume_capability::{AccessMode, BlockVolume, MountVolume};

    use super::*;

    fn capability(block: bool, fs_type: &str, mode: Mode) -> VolumeCapability {
        let access_type = if block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume { fs_type: fs_type.into(), ..Default::default() })
        };
        VolumeCapability { access_type: Some(access_type), access_mode: Some(AccessMode { mode: mode as i32 }) }
    }

    #[test]
    fn filesystems_default_to_ext4_and_are_checked() {
        assert_eq!(check(&capability(false, "", Mode::SingleNodeWriter), false).unwrap().fs_type, "ext4");
        assert!(check(&capability(false, "xfs", Mode::SingleNodeSingleWriter), false).is_ok());
        assert!(check(&capability(false, "ntfs", Mode::SingleNodeWriter), false).is_err());
        assert!(check(&VolumeCapability::default(), false).is_err());
    }

    #[test]
    fn many_writers_only_on_raw_block_of_multiattach_types() {
        assert!(check(&capability(true, "", Mode::MultiNodeMultiWriter), true).is_ok());
        assert!(check(&capability(true, "", Mode::MultiNodeMultiWriter), false).is_err());
        assert!(check(&capability(false, "ext4", Mode::MultiNodeMultiWriter), true).is_err());
        assert!(check(&capability(false, "ext4", Mode::MultiNodeReaderOnly), true).is_ok());
        assert!(check(&capability(false, "ext4", Mode::MultiNodeReaderOnly), false).is_err());
    }

    #[test]
    fn mount_flags_cannot_carry_another_argument() {
        assert!(check_mount_flag("noatime").is_ok());
        assert!(check_mount_flag("discard,nobarrier").is_ok());
        for bad in ["", "-o x", "a b", "x;rm", "$(id)"] {
            assert!(check_mount_flag(bad).is_err(), "{bad:?}");
        }
    }
}
