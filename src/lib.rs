//! Basalt's one contract crate: the generated protobuf code, ID newtypes, the error-code table and
//! the plumbing every service shares (client channels, gRPC server set-up, the capacity bus,
//! tracing).

pub mod bus;
pub mod channel;
pub mod context;
pub mod error;
pub mod ids;
pub mod listener;
pub mod server;
pub mod status;
pub mod telemetry;

/// Generated code of `proto/basalt/v1`.
pub mod proto {
    tonic::include_proto!("basalt.v1");

    /// Encoded `FileDescriptorSet` of every Basalt proto, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("basalt_descriptor");
}

pub use error::{ErrorCode, ServiceError};
