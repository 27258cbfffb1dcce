//! The `dtx` binary: see `dtx --help`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    dtx_server::cli::main().await
}
