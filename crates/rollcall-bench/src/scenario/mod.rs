//! The scenarios of `quality.md`, one module each, and what they share: sizes, the context, a
//! bounded-concurrency connector and an open-loop pacer.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{StreamExt, TryStreamExt};

use crate::report::Report;

mod churn;
mod crash;
mod memory;
mod presence;
mod propagation;
mod sync;

/// One figure of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Propagation,
    Presence,
    Memory,
    Crash,
    Sync,
    Churn,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::Propagation,
        Scenario::Presence,
        Scenario::Memory,
        Scenario::Crash,
        Scenario::Sync,
        Scenario::Churn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Propagation => "propagation",
            Scenario::Presence => "presence",
            Scenario::Memory => "memory",
            Scenario::Crash => "crash",
            Scenario::Sync => "sync",
            Scenario::Churn => "churn",
        }
    }

    pub fn parse(name: &str) -> anyhow::Result<Scenario> {
        match Scenario::ALL.iter().find(|s| s.name() == name) {
            Some(s) => Ok(*s),
            None => bail!(
                "unknown scenario {name:?}; one of: {}",
                Scenario::ALL.map(|s| s.name()).join(", ")
            ),
        }
    }

    pub async fn run(self, ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
        match self {
            Scenario::Propagation => propagation::run(ctx, report).await,
            Scenario::Presence => presence::run(ctx, report).await,
            Scenario::Memory => memory::run(ctx, report).await,
            Scenario::Crash => crash::run(ctx, report).await,
            Scenario::Sync => sync::run(ctx, report).await,
            Scenario::Churn => churn::run(ctx, report).await,
        }
    }
}

/// What every scenario gets.
pub struct Ctx {
    pub bin: PathBuf,
    pub sizes: Sizes,
    pub http_conns: usize,
}

/// The sizes and durations of a run.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Measured seconds per propagation rate (a warm-up of `warmup` precedes each).
    pub prop_secs: f64,
    pub prop_rates: Vec<u32>,
    pub warmup: Duration,
    /// Connections on node B whose subscribes make the joins, and the channels they cycle
    /// through: `joiners × channels` joins at most.
    pub prop_joiners: usize,
    pub prop_channels: usize,
    /// Channel sizes of the `presence` calls.
    pub presence_members: Vec<usize>,
    pub http_secs: f64,
    pub memory_clients: usize,
    /// What `memory_clients` would be without the file-descriptor cap.
    pub memory_wanted: usize,
    pub memory_steps: usize,
    pub crash_subs: usize,
    pub sync_entries: usize,
    pub churn_secs: f64,
    pub churn_conns: usize,
    pub churn_pairs_per_frame: usize,
}

/// File descriptors kept free for everything that is not a client socket.
const FD_RESERVE: u64 = 96;

impl Sizes {
    /// The sizes of `quality.md`, capped by the file-descriptor limit (each client is one
    /// descriptor in this process and one in the server).
    pub fn full(nofile: u64) -> Sizes {
        let max_clients = nofile.saturating_sub(FD_RESERVE) as usize;
        let mut members = vec![10, 1000, 10000];
        for m in &mut members {
            *m = (*m).min(max_clients.saturating_sub(1010));
        }
        Sizes {
            prop_secs: 5.0,
            prop_rates: vec![1000, 5000],
            warmup: Duration::from_millis(500),
            prop_joiners: 100,
            prop_channels: 400,
            presence_members: members,
            http_secs: 3.0,
            memory_clients: 20_000.min(max_clients),
            memory_wanted: 20_000,
            memory_steps: 20,
            crash_subs: 10_000,
            sync_entries: 100_000,
            churn_secs: 5.0,
            churn_conns: 4,
            churn_pairs_per_frame: 32,
        }
    }

    /// Small and short: checks the suite works, in about half a minute.
    pub fn quick(nofile: u64) -> Sizes {
        let max_clients = nofile.saturating_sub(FD_RESERVE) as usize;
        Sizes {
            prop_secs: 1.0,
            prop_rates: vec![1000, 5000],
            warmup: Duration::from_millis(200),
            prop_joiners: 50,
            prop_channels: 160,
            presence_members: vec![10, 1000.min(max_clients.saturating_sub(20))],
            http_secs: 0.7,
            memory_clients: 2000.min(max_clients),
            memory_wanted: 2000,
            memory_steps: 5,
            crash_subs: 1000,
            sync_entries: 10_000,
            churn_secs: 1.0,
            churn_conns: 4,
            churn_pairs_per_frame: 32,
        }
    }
}

/// Runs `make(i)` for `i in 0..n`, at most `concurrency` at a time; all must succeed.
pub async fn many<T, F, Fut>(n: usize, concurrency: usize, make: F) -> anyhow::Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    futures_util::stream::iter(0..n)
        .map(make)
        .buffer_unordered(concurrency)
        .try_collect()
        .await
}

/// Open-loop pacing: calls `send(i)` for `i in 0..rate×secs` so that `i` goes out at
/// `start + i/rate`, whether or not earlier sends were answered. Tokio's timer has 1 ms
/// granularity, so at 5 000/s sends go in bursts of ~5 per millisecond. Returns the worst lag
/// behind schedule.
pub async fn pace<F, Fut>(rate: u32, secs: f64, mut send: F) -> anyhow::Result<Duration>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let total = (rate as f64 * secs).round() as u64;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0u64;
    let mut worst = Duration::ZERO;
    while sent < total {
        tick.tick().await;
        let now = start.elapsed();
        let due = ((now.as_secs_f64() * rate as f64) as u64 + 1).min(total);
        while sent < due {
            let scheduled = Duration::from_secs_f64(sent as f64 / rate as f64);
            worst = worst.max(start.elapsed().saturating_sub(scheduled));
            send(sent).await?;
            sent += 1;
        }
    }
    Ok(worst)
}

/// Nanoseconds since `base`, never 0 (0 marks "not set" in the timing arrays).
pub fn nanos_since(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64 + 1
}
