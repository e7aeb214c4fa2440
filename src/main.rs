//! The `shardcache` command: `serve`, `check-config`, and the operator commands `warm`,
//! `lineage`, `stats` and `probe` that talk to a running shardcache.
//!
//! It parses the command line and hands over to `app` (serve, check-config) or `ops`; it owns
//! nothing else.

use std::path::PathBuf;
use std::process::ExitCode;

use aws_credential_types::Credentials;
use clap::{Parser, Subcommand};
use shardcache::config::Config;
use shardcache::ops::{self, Endpoint};

/// Shown under `--help`: the environment that shapes the logs.
const LOG_HELP: &str = "Logs go to standard output. SHARDCACHE_LOG (or RUST_LOG) sets what is logged, \
as tracing-subscriber filter directives: `info` (default), `debug` (a line per request), \
`shardcache=debug,pingora=warn`. Colour only on a terminal, and never with NO_COLOR set.";

#[derive(Parser)]
#[command(version, about = "A caching read-through S3 proxy for GPU training nodes", after_help = LOG_HELP)]
struct Cli {
    /// Log line format: `text`, or `json` (one object per line, for log pipelines).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Installs the log subscriber: filter from SHARDCACHE_LOG, else RUST_LOG, else `info`.
fn init_logs(format: LogFormat) -> Result<(), String> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;

    let mut filter = EnvFilter::new("info");
    for var in ["SHARDCACHE_LOG", "RUST_LOG"] {
        if let Ok(directives) = std::env::var(var) {
            filter = EnvFilter::try_new(&directives).map_err(|e| format!("{var}={directives:?}: {e}"))?;
            break;
        }
    }
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => logs.with_ansi(colour).init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
    Ok(())
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
        /// shardcache's admin listener (does the warming); `https://` when `tls.admin` is on
        /// (trusting the system's roots, or `SSL_CERT_FILE`).
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        admin: Endpoint,
        /// File holding the admin token (`auth.admin_token_file` of the running shardcache).
        /// Without it, and with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` set, the warm
        /// calls are SigV4-signed with that key, whose principal needs `shardcache:Warm`. The
        /// listing is signed with that key whenever it is set.
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
        /// The region shardcache's `auth.region` expects signatures for.
        #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
        region: String,
        /// Objects warmed at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Print the object versions a training job read (its lineage), from a running shardcache.
    Lineage {
        /// The job (its `x-shardcache-job`, or the principal that read).
        job: String,
        /// shardcache's admin listener.
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        admin: Endpoint,
        /// `json` or `csv`.
        #[arg(long, default_value = "json")]
        format: String,
        /// File holding the admin token; without it, and with `AWS_ACCESS_KEY_ID` and
        /// `AWS_SECRET_ACCESS_KEY` set, the call is SigV4-signed (the principal needs
        /// `shardcache:GetLineage` on the job).
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
        /// The region shardcache's `auth.region` expects signatures for.
        #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
        region: String,
    },
    /// Measure what shardcache buys on your own bucket: read a sample of a prefix directly from
    /// the upstream, then through a running shardcache (cold, then warm), and print throughput,
    /// time to first byte, upstream requests and bytes per pass, and the egress saved per epoch.
    Probe(Probe),
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

/// `shardcache probe`'s flags.
#[derive(clap::Args)]
struct Probe {
    /// What to probe: s3://BUCKET/PREFIX (the same bucket name through shardcache).
    target: String,
    /// The upstream's endpoint, for stores other than AWS S3 (addressed path-style), e.g.
    /// https://s3.us-west-004.backblazeb2.com, https://ACCOUNT.r2.cloudflarestorage.com or a
    /// MinIO URL. Without it: AWS S3 in --region.
    #[arg(long)]
    upstream_endpoint: Option<Endpoint>,
    /// The upstream's region (what requests are signed for; AWS's endpoint).
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
    /// Send the upstream's requests unsigned (a public bucket). Otherwise they are signed with
    /// credentials from the AWS default chain: AWS_* variables, AWS_PROFILE and the shared
    /// config files, web identity, ECS, EC2 instance metadata.
    #[arg(long)]
    no_sign_request: bool,
    /// shardcache's S3 listener. Requests to it are signed with SHARDCACHE_ACCESS_KEY_ID and
    /// SHARDCACHE_SECRET_ACCESS_KEY when set (a key of its `auth.keys`), else unsigned.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    endpoint: Endpoint,
    /// The region shardcache's `auth.region` expects signatures for.
    #[arg(long, default_value = "us-east-1")]
    proxy_region: String,
    /// shardcache's admin listener: its /metrics gives the upstream requests and bytes of
    /// the passes through shardcache, and its cache's capacity.
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    admin: Endpoint,
    /// Objects in the sample, at most.
    #[arg(long, default_value_t = 64, value_parser = positive)]
    max_objects: usize,
    /// Bytes in the sample, at most: a number of bytes, or with a unit (500MB, 2GiB). Never
    /// more than shardcache's cache holds, so that the warm pass can be warm.
    #[arg(long, default_value = "2GiB", value_parser = ops::probe::parse_size)]
    max_bytes: u64,
    /// Objects listed, at most; the projection covers those listed.
    #[arg(long, default_value_t = 1_000_000, value_parser = positive)]
    list_max: usize,
    /// Readers at once in each pass.
    #[arg(long, default_value_t = 8, value_parser = positive)]
    readers: usize,
    /// Dollars per GB (10^9 bytes) of egress. AWS S3 to the internet 0.09 (the first 10 TB of
    /// a month), between AWS regions 0.02; Backblaze B2 0.01 (free up to three times the
    /// data stored); Cloudflare R2 0.
    #[arg(long, default_value_t = 0.09)]
    price_per_gb: f64,
    /// The sample's seed (printed; the same seed draws the same objects). Default: the clock.
    #[arg(long)]
    seed: Option<u64>,
    /// Seconds to wait at most for an answer, or for the next piece of a body.
    #[arg(long, default_value_t = 60)]
    timeout_seconds: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// A count of at least 1.
fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

impl Probe {
    fn run(self) -> ExitCode {
        let endpoint = match (
            std::env::var("SHARDCACHE_ACCESS_KEY_ID"),
            std::env::var("SHARDCACHE_SECRET_ACCESS_KEY"),
        ) {
            (Ok(id), Ok(secret)) if !id.is_empty() => {
                let credentials = Credentials::new(id, secret, None, None, "environment");
                self.endpoint.with_sigv4(credentials, self.proxy_region)
            }
            _ => self.endpoint,
        };
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        let args = ops::probe::ProbeArgs {
            target: self.target,
            upstream: ops::probe::Upstream {
                endpoint: self.upstream_endpoint,
                region: self.region,
                credentials: None,
                unsigned: self.no_sign_request,
            },
            endpoint,
            admin: self.admin,
            max_objects: self.max_objects,
            max_bytes: self.max_bytes,
            list_max: self.list_max,
            readers: self.readers,
            price_per_gb: self.price_per_gb,
            seed,
            deadline: std::time::Duration::from_secs(self.timeout_seconds.max(1)),
        };
        probe(args, self.json)
    }
}

fn probe(args: ops::probe::ProbeArgs, json: bool) -> ExitCode {
    // Ctrl-C drops the probe: its connections close and nothing is left running.
    let result = client(async move {
        tokio::select! {
            report = ops::probe::run(args) => report.map(Some),
            _ = tokio::signal::ctrl_c() => Ok(None),
        }
    });
    match result {
        Ok(Some(report)) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                print!("{report}");
            }
            if report.passes.iter().any(|p| !p.errors.is_empty()) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Ok(None) => {
            eprintln!("\nshardcache probe: interrupted");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("shardcache probe: {e}");
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

/// `e` signing its calls with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and
/// `AWS_SESSION_TOKEN`) for `region`, when they are set.
fn signed(e: Endpoint, region: &str) -> Endpoint {
    match (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Ok(id), Ok(secret)) if !id.is_empty() => {
            let token = std::env::var("AWS_SESSION_TOKEN").ok().filter(|t| !t.is_empty());
            e.with_sigv4(
                Credentials::new(id, secret, token, None, "environment"),
                region.to_owned(),
            )
        }
        _ => e,
    }
}

/// The admin endpoint with the admin token from `token_file`, else signed.
fn admin_credentials(admin: Endpoint, token_file: Option<PathBuf>, region: &str) -> Result<Endpoint, String> {
    match token_file {
        Some(file) => {
            let token =
                std::fs::read_to_string(&file).map_err(|e| format!("--admin-token-file {}: {e}", file.display()))?;
            Ok(admin.with_bearer(token.trim().to_owned()))
        }
        None => Ok(signed(admin, region)),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logs(cli.log_format) {
        eprintln!("shardcache: {e}");
        return ExitCode::FAILURE;
    }
    match cli.command {
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
            admin_token_file,
            region,
            concurrency,
        } => {
            let admin = match admin_credentials(admin, admin_token_file, &region) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("shardcache warm: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let endpoint = signed(endpoint, &region);
            warm(ops::warm::WarmArgs {
                target,
                manifest,
                endpoint,
                admin,
                concurrency,
            })
        }
        Command::Lineage {
            job,
            admin,
            format,
            admin_token_file,
            region,
        } => {
            let printed = admin_credentials(admin, admin_token_file, &region).and_then(|admin| {
                client(async move {
                    let path = format!(
                        "/lineage?job={}&format={}",
                        ops::query_value(&job),
                        ops::query_value(&format)
                    );
                    let reply = admin.call(http::Method::GET, &path).await?;
                    match reply.status {
                        200 => Ok(reply.text()),
                        status => Err(format!("GET /lineage: HTTP {status}: {}", reply.text().trim())),
                    }
                })
            });
            match printed {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("shardcache lineage: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Stats { admin } => stats(admin),
        Command::Probe(p) => p.run(),
        Command::Serve { config: path } => {
            let result = Config::load(&path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
                .and_then(|config| Ok(shardcache::app::run(config, Some(path.clone()), None)?));
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
