//! The `dtx` binary: see `dtx --help`.

// mimalloc instead of the system allocator: the hot path allocates many small short-lived
// buffers (docs/adr/0010-hot-path-allocator-and-statement-counts.md has the numbers).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    dtx_server::cli::main().await
}
