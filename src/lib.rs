//! Basalt's one contract crate: the generated protobuf code, ID newtypes, the error-code table and
//! the plumbing every service shares (client channels, gRPC server set-up, the capacity bus,
//! tracing).

pub mod bus;
pub mod channel;
pub mod command;
pub mod context;
#[cfg(feature = "db")]
mod db_values;
pub mod error;
pub mod hex;
pub mod ids;
pub mod listener;
pub mod locks;
pub mod metrics;
pub mod policy;
pub mod server;
pub mod status;
pub mod telemetry;
pub mod tls;

/// Generated code of `proto/basalt/v1`.
pub mod proto {
    tonic::include_proto!("basalt.v1");

    /// Encoded `FileDescriptorSet` of every Basalt proto, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("basalt_descriptor");
}

/// Generated code of the Container Storage Interface, `proto/csi/v1/csi.proto` (v1.12.0, vendored
/// as released with its Apache-2.0 licence).
pub mod csi {
    #![allow(clippy::all)]
    tonic::include_proto!("csi.v1");

    /// Encoded `FileDescriptorSet` of `csi.proto`, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("csi_descriptor");
}

pub use error::{ErrorCode, ServiceError};

/// Bytes in a GiB: Basalt sizes volumes in whole GiB, as Cinder does.
pub const GIB_BYTES: u64 = 1 << 30;
