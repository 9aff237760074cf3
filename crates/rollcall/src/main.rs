//! The `rollcall` binary: parses arguments, sets up logging, loads config, runs a subcommand.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use rollcall_core::config::{self, Config, LogFormat};
use tokio_util::sync::CancellationToken;

/// Rollcall: a Kubernetes-native online-presence server speaking Centrifugo's protocols.
#[derive(Debug, Parser)]
#[command(name = "rollcall", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a server node.
    Serve {
        /// Config file (YAML or JSON). Default: ./rollcall.yaml if present, else built-in defaults.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Treat unknown config keys as errors instead of warnings.
        #[arg(long)]
        strict: bool,
    },
    /// Run the Kubernetes operator that renders PresenceNamespace objects into a ConfigMap.
    Operator(rollcall_operator::OperatorArgs),
    /// Print the PresenceNamespace CustomResourceDefinition as YAML.
    Crd,
    /// Print a signed HS256 connection token (the last line of output is the token).
    Gentoken {
        /// Config file holding client.token.hmac_secret_key.
        #[arg(long, short)]
        config: PathBuf,
        /// User id (the token's `sub`).
        #[arg(long)]
        user: String,
        /// Lifetime in seconds; 0 = no expiry.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// JSON for the token's `info` claim (becomes conn_info).
        #[arg(long)]
        info: Option<String>,
        /// Comma-separated server-side subscriptions (the `channels` claim).
        #[arg(long, value_delimiter = ',')]
        channels: Vec<String>,
    },
    /// Validate a config file: exit 0 if valid, else an error naming the key.
    Checkconfig {
        #[arg(long, short)]
        config: PathBuf,
        /// Treat unknown config keys as errors instead of warnings.
        #[arg(long)]
        strict: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, strict } => {
            let config = load_config(config.as_deref(), strict, true)?;
            init_tracing(&config.log.level, config.log.format)?;
            runtime()?.block_on(serve(config))
        }
        Command::Operator(args) => {
            init_tracing("info", LogFormat::Text)?;
            runtime()?.block_on(async move {
                let shutdown = CancellationToken::new();
                tokio::spawn(on_signal(shutdown.clone()));
                rollcall_operator::run(args, shutdown).await
            })
        }
        Command::Crd => {
            print!("{}", rollcall_operator::crd_yaml()?);
            Ok(())
        }
        Command::Gentoken {
            config,
            user,
            ttl,
            info,
            channels,
        } => {
            let config = load_config(Some(&config), false, false)?;
            let secret = &config.client.token.hmac_secret_key;
            if secret.is_empty() {
                bail!(
                    "client.token.hmac_secret_key is empty in the config: gentoken signs HS256 tokens with it"
                );
            }
            let mut claims = serde_json::json!({ "sub": user });
            if ttl > 0 {
                let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
                claims["exp"] = (now + ttl).into();
            }
            if let Some(info) = info {
                let value: serde_json::Value = serde_json::from_str(&info)
                    .with_context(|| format!("--info is not valid JSON: {info}"))?;
                claims["info"] = value;
            }
            if !channels.is_empty() {
                claims["channels"] = channels.into();
            }
            let token = rollcall_core::token::sign_hs256(secret, &claims);
            println!(
                "HS256 connection token for user {:?}:",
                claims["sub"].as_str().unwrap_or("")
            );
            println!("{token}");
            Ok(())
        }
        Command::Checkconfig { config, strict } => {
            let loaded = load_config(Some(&config), strict, true)?;
            rollcall_server::check(&loaded)?;
            println!("{}: valid", config.display());
            Ok(())
        }
    }
}

/// Loads the config: `path` if given (must exist), else `./rollcall.yaml` if present, else
/// defaults; env overrides apply in every case. Warnings go to stderr.
fn load_config(path: Option<&Path>, strict: bool, warn: bool) -> anyhow::Result<Config> {
    let env = std::env::vars().filter(|(k, _)| k.starts_with("ROLLCALL_"));
    let default = Path::new("rollcall.yaml");
    let loaded = match path {
        Some(p) => config::load_file(p, env, strict)?,
        None if default.exists() => config::load_file(default, env, strict)?,
        None => config::load_str("{}", env, strict)?,
    };
    if warn {
        for w in &loaded.warnings {
            eprintln!("warning: {w}");
        }
    }
    Ok(loaded.config)
}

fn init_tracing(level: &str, format: LogFormat) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .with_context(|| format!("log.level {level:?} is not a valid level"))?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(on_signal(shutdown.clone()));
    let server = rollcall_server::Server::bind(config).await?;
    server.run(shutdown).await?;
    Ok(())
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
async fn on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}
