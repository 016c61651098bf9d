//! The CSI plugin (controller and node) lands with its own issue; see the README's roadmap. It
//! will call `VolumeService` like any other client and never touch the database.
