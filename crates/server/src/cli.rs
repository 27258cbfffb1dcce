//! The `dtx` command.

use anyhow::Context;
use clap::Parser;

use crate::config::{Cli, Command, default_toml};
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
        None => cli.settings,
    };
    let config = settings.resolve()?;
    telemetry::init(config.log_format);
    let server = Server::build(&config).await.context("dtx failed to start")?;
    server.run(shutdown_signal()).await.context("dtx stopped with an error")?;
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
