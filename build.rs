//! Compiles Basalt's protobuf contracts, and the CSI specification's vendored beside them
//! (`proto/csi/v1`), with the vendored `protoc`, so a build never needs a system-wide protobuf
//! compiler. The descriptor sets feed gRPC server reflection.

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "proto/basalt/v1/common.proto",
    "proto/basalt/v1/volume.proto",
    "proto/basalt/v1/node.proto",
    "proto/basalt/v1/capacity.proto",
];

/// The CSI specification's contract, as released (never edited here).
const CSI_PROTO: &str = "proto/csi/v1/csi.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { env::set_var("PROTOC", protoc) };
    let well_known_types = protoc_bin_vendored::include_path()?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let protos: Vec<PathBuf> = PROTOS.iter().map(PathBuf::from).collect();
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("basalt_descriptor.bin"))
        .compile_protos(&protos, &[PathBuf::from("proto"), well_known_types.clone()])?;
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("csi_descriptor.bin"))
        .compile_protos(&[PathBuf::from(CSI_PROTO)], &[PathBuf::from("proto"), well_known_types])?;

    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
