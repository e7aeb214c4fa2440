//! The `shardcache` command: `serve` and `check-config`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shardcache::config::Config;

#[derive(Parser)]
#[command(version, about = "A caching read-through S3 proxy for GPU training nodes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve S3 on the configured listener until SIGTERM/SIGINT.
    Serve {
        /// Config file.
        #[arg(short, long, default_value = "config/shardcache.yaml")]
        config: PathBuf,
    },
    /// Check a config file; names the bad field and exits non-zero if it is invalid.
    CheckConfig {
        /// Config file.
        #[arg(default_value = "config/shardcache.yaml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHARDCACHE_LOG").unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().command {
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", config.display());
                ExitCode::FAILURE
            }
        },
        Command::Serve { config: path } => {
            let result = Config::load(&path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
                .and_then(|config| Ok(shardcache::app::run(config, Default::default())?));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
