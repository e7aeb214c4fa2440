//! The `shardcache` command: `serve`, `check-config`, and the operator commands `warm` and
//! `stats` that talk to a running shardcache.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shardcache::config::Config;
use shardcache::ops::{self, Endpoint};

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
    /// Ask a running shardcache to bring a prefix (or a manifest of keys) into its cache.
    Warm {
        /// What to warm: s3://BUCKET/PREFIX (with --manifest: the bucket of relative keys).
        target: String,
        /// File of keys to warm instead of listing the prefix, one per line (`#` comments;
        /// lines may be s3://BUCKET/KEY).
        #[arg(long)]
        manifest: Option<String>,
        /// shardcache's S3 listener (lists the prefix).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        endpoint: Endpoint,
        /// shardcache's admin listener (does the warming).
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        admin: Endpoint,
        /// Objects warmed at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Print hit ratio, bytes served by tier, egress avoided and tier usage of a running shardcache.
    Stats {
        /// shardcache's admin listener.
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        admin: Endpoint,
    },
}

/// Runs an operator command on a small runtime of its own.
fn client<T>(f: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?
        .block_on(f)
}

fn warm(args: ops::warm::WarmArgs) -> ExitCode {
    match client(ops::warm::run(args)) {
        Ok(summary) => {
            for (object, why) in summary.failed.iter().take(20) {
                eprintln!("failed: {object}: {why}");
            }
            println!("{summary}");
            if summary.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("shardcache warm: {e}");
            ExitCode::FAILURE
        }
    }
}

fn stats(admin: Endpoint) -> ExitCode {
    let scrape = client(async move {
        let reply = admin.call(http::Method::GET, "/metrics").await?;
        match reply.status {
            200 => Ok(reply.text()),
            status => Err(format!("GET /metrics: HTTP {status}")),
        }
    });
    match scrape {
        Ok(text) => {
            print!("{}", ops::stats::render(&text));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shardcache stats: {e}");
            ExitCode::FAILURE
        }
    }
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
        Command::Warm {
            target,
            manifest,
            endpoint,
            admin,
            concurrency,
        } => warm(ops::warm::WarmArgs {
            target,
            manifest,
            endpoint,
            admin,
            concurrency,
        }),
        Command::Stats { admin } => stats(admin),
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
