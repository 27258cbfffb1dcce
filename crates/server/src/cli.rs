//! The `dtx` command.

use anyhow::Context;
use clap::Parser;

use crate::config::{Cli, Command, PurgeArgs, default_toml, parse_duration};
use crate::{Server, telemetry};

/// Parses the command line and runs it.
pub async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = match cli.command {
        Some(Command::PrintDefaultConfig) => {
            print!("{}", default_toml());
            return Ok(());
        }
        Some(Command::Serve(s)) => s,
        Some(Command::Purge(args)) => return purge(args).await,
        None => cli.settings,
    };
    let config = settings.resolve()?;
    let telemetry = telemetry::start(config.log_format, config.otlp_endpoint.as_deref())?;
    let server = Server::build(&config).await.context("dtx failed to start")?;
    let served = server.run(shutdown_signal()).await.context("dtx stopped with an error");
    telemetry.shutdown().await;
    served?;
    Ok(())
}

/// `dtx purge --older-than DURATION`: one retention pass over the configured store.
async fn purge(args: PurgeArgs) -> anyhow::Result<()> {
    let older_than =
        parse_duration(&args.older_than).map_err(|m| anyhow::anyhow!("invalid --older-than: {m}"))?;
    anyhow::ensure!(!older_than.is_zero(), "invalid --older-than: must be greater than zero");
    let config = args.settings.resolve()?;
    telemetry::init(config.log_format);
    let engine = crate::app::open_engine(&config).await.context("dtx purge failed to open the store")?;
    let opts = config.retention;
    let deleted = engine.purge(older_than, opts.batch, opts.pause).await.context("purge failed")?;
    println!("deleted {deleted} finished transactions last written more than {} ago", args.older_than);
    Ok(())
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
