//! Generates the inventory service's gRPC code (`proto/inventory.proto`) with a vendored `protoc`,
//! so a fresh `cargo build` needs no system package.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.protoc_arg(format!("--proto_path={}", protoc_bin_vendored::include_path()?.display()));
    tonic_prost_build::configure().compile_with_config(
        config,
        &[root.join("inventory.proto")],
        std::slice::from_ref(&root),
    )?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
