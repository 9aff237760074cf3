//! `rollcall-bench`: the benchmark suite of `quality.md`, run against real `rollcall serve`
//! processes over real WebSockets, HTTP and a real `nats-server`.
//!
//! Every scenario measures its baseline in the same run (raw NATS, a static axum endpoint, a
//! bare WebSocket server, an empty cluster, ping commands), so the ratios hold on a noisy box.
//! Layout: [`procs`] (child processes: nats-server, rollcall nodes, baseline servers, config,
//! tokens), [`ws`] (a protocol client), [`http`] (a keep-alive HTTP/1.1 load generator),
//! [`baseline`] (the baseline servers, run as subcommands of this binary), [`scenario`] (one
//! module per figure), [`report`] (table and JSON), [`plot`] (PNG charts), [`machine`] (load,
//! limits, RSS and CPU time of processes).
#![forbid(unsafe_code)]

mod baseline;
mod http;
mod machine;
mod plot;
mod procs;
mod report;
mod scenario;
mod ws;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::report::Report;
use crate::scenario::{Scenario, Sizes};

/// Rollcall's benchmark suite: runs every scenario, prints one table, writes JSON and charts.
#[derive(Debug, Parser)]
#[command(name = "rollcall-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Small sizes and short runs (about 30 s in all): a smoke test of the suite itself.
    #[arg(long)]
    quick: bool,
    /// Run only these scenarios (repeatable): propagation, presence, memory, crash, sync, churn.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// Where results.json and the charts go.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// The rollcall binary (default: $ROLLCALL_BIN, else target/release/rollcall).
    #[arg(long, env = "ROLLCALL_BIN")]
    rollcall_bin: Option<PathBuf>,
    /// Concurrent keep-alive connections of the HTTP load.
    #[arg(long, default_value_t = 8)]
    http_conns: usize,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// (internal) A static axum endpoint: POST /api/<name> returns the file <dir>/<name>.
    #[command(hide = true)]
    StaticServe {
        #[arg(long)]
        dir: PathBuf,
    },
    /// (internal) A bare axum WebSocket server that echoes text frames.
    #[command(hide = true)]
    WsServe,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::StaticServe { dir }) => return baseline::static_serve(&dir),
        Some(Command::WsServe) => return baseline::ws_serve(),
        None => {}
    }
    let scenarios = if cli.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        cli.scenarios
            .iter()
            .map(|s| Scenario::parse(s))
            .collect::<Result<Vec<_>, _>>()?
    };
    let bin = cli
        .rollcall_bin
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/release/rollcall"));
    if !bin.exists() {
        bail!(
            "{} does not exist: build it with `cargo build --release -p rollcall` (make bench does)",
            bin.display()
        );
    }
    let nofile = machine::raise_nofile_limit();
    std::fs::create_dir_all(&cli.out)
        .with_context(|| format!("cannot create {}", cli.out.display()))?;
    let sizes = if cli.quick {
        Sizes::quick(nofile)
    } else {
        Sizes::full(nofile)
    };
    let ctx = scenario::Ctx {
        bin: std::fs::canonicalize(&bin)?,
        sizes,
        http_conns: cli.http_conns,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut report = Report::new(cli.quick, machine::Snapshot::now(), nofile);
    eprintln!(
        "rollcall-bench: {} mode, scenarios {:?}; load before: {}",
        if cli.quick { "quick" } else { "full" },
        scenarios.iter().map(|s| s.name()).collect::<Vec<_>>(),
        report.load_before.summary()
    );
    let started = Instant::now();
    for s in scenarios {
        let t = Instant::now();
        eprintln!("== {} ...", s.name());
        if let Err(e) = runtime.block_on(s.run(&ctx, &mut report)) {
            eprintln!("== {} FAILED: {e:#}", s.name());
            report.failure(s.name(), format!("{e:#}"));
        }
        eprintln!("== {} done in {:.1}s", s.name(), t.elapsed().as_secs_f64());
    }
    report.finish(machine::Snapshot::now(), started.elapsed());
    print!("{}", report.table());
    let json = cli.out.join("results.json");
    std::fs::write(&json, serde_json::to_vec_pretty(&report.to_json())?)?;
    std::fs::write(
        cli.out.join("summary.json"),
        serde_json::to_vec_pretty(&report.summary_json())?,
    )?;
    let charts = plot::draw(&report, &cli.out);
    eprintln!("wrote {}", json.display());
    for c in charts {
        eprintln!("{c}");
    }
    // Misses are findings, not errors: the exit code says only whether every scenario ran.
    if report.failures.is_empty() {
        Ok(())
    } else {
        bail!("{} scenario(s) failed to run", report.failures.len())
    }
}
