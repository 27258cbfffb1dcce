//! Generates the test participant's gRPC code (`proto/busi.proto`) with a vendored `protoc`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.protoc_arg(format!("--proto_path={}", protoc_bin_vendored::include_path()?.display()));
    // The participant server is hand-written (it must see the raw request bytes): only the
    // client and the messages are generated.
    tonic_prost_build::configure().build_server(false).compile_with_config(
        config,
        &[root.join("busi.proto")],
        std::slice::from_ref(&root),
    )?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
