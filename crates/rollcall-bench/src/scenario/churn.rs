//! Churn: subscribe + unsubscribe pairs one node sustains, pipelined over a few connections
//! (each frame holds P pairs on P channels of the `ev` namespace: presence and join/leave),
//! with the latency of every command (frame sent → its reply read). The baseline is the same
//! load of `ping` commands, which costs the same transport and framing but no presence work.
//! Per core = pairs per second of server CPU time (utime + stime from /proc), since the load
//! generator shares the machine.

use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::Message;

use super::{Ctx, many};
use crate::procs::{Engine, Nats, Server, token};
use crate::report::{Chart, Report, Row, Target, quantile_points};
use crate::ws::{self, Conn};

struct Run {
    commands: u64,
    elapsed: Duration,
    server_cpu: Duration,
    latency: Histogram<u64>,
}

impl Run {
    fn pairs_per_s(&self) -> f64 {
        self.commands as f64 / 2.0 / self.elapsed.as_secs_f64()
    }
    fn pairs_per_cpu_s(&self) -> f64 {
        self.commands as f64 / 2.0 / self.server_cpu.as_secs_f64().max(1e-3)
    }
    fn p99_ms(&self) -> f64 {
        self.latency.value_at_quantile(0.99) as f64 / 1000.0
    }
}

pub async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let nats = Nats::start()?;
    let engines = [
        ("memory engine", Engine::Memory),
        (
            "nats engine",
            Engine::Nats {
                url: nats.url(),
                heartbeat: "1s",
                node_timeout: "3s",
            },
        ),
    ];
    for (label, engine) in engines {
        let node = Server::rollcall(&ctx.bin, "node-churn", &engine).await?;
        node.wait_http("/ready", Duration::from_secs(15)).await?;
        let pings = load(ctx, &node, false).await?;
        let churn = load(ctx, &node, true).await?;
        let cores = churn.server_cpu.as_secs_f64() / churn.elapsed.as_secs_f64();
        report.row(
            Row::new(
                "churn",
                format!("churn pairs/s ({label})"),
                churn.pairs_per_s(),
                "pairs/s",
            )
            .baseline(
                pings.pairs_per_s(),
                "ping commands, same pipelining (2 pings = 1 pair)",
            )
            .note(format!(
                "{} connections × {} pairs per frame; server used {cores:.2} cores",
                ctx.sizes.churn_conns, ctx.sizes.churn_pairs_per_frame
            )),
        );
        report.row(
            Row::new(
                "churn",
                format!("churn pairs per server CPU-second ({label})"),
                churn.pairs_per_cpu_s(),
                "pairs/s",
            )
            .baseline(
                pings.pairs_per_cpu_s(),
                "ping commands per server CPU-second / 2",
            )
            .target(Target::AtLeast(20_000.0)),
        );
        report.row(
            Row::new(
                "churn",
                format!("churn command p99 ({label})"),
                churn.p99_ms(),
                "ms",
            )
            .baseline(pings.p99_ms(), "ping commands, same pipelining"),
        );
        report.series(
            Chart::Churn,
            format!("sub/unsub, {label}"),
            false,
            quantile_points(&churn.latency, 1000.0),
        );
        report.series(
            Chart::Churn,
            format!("ping, {label}"),
            true,
            quantile_points(&pings.latency, 1000.0),
        );
    }
    Ok(())
}

/// Closed loop per connection: send a frame of P pairs (or 2P pings), read all 2P replies,
/// repeat. The same ids each round, since a round ends when all its replies are in.
async fn load(ctx: &Ctx, node: &Server, churn: bool) -> anyhow::Result<Run> {
    let sz = &ctx.sizes;
    let url = node.ws_url();
    let kind = if churn { "churn" } else { "ping" };
    let conns = many(sz.churn_conns, 8, |c| {
        let url = url.clone();
        async move { Conn::connect(&url, &token(&format!("{kind}-{c}"))).await }
    })
    .await?;
    let warmup = Duration::from_millis(300);
    let start = Instant::now() + warmup;
    let end = start + Duration::from_secs_f64(sz.churn_secs);
    let mut tasks = Vec::new();
    for (c, conn) in conns.into_iter().enumerate() {
        let p = sz.churn_pairs_per_frame;
        let mut lines = Vec::with_capacity(2 * p);
        for k in 0..p {
            let (a, b) = (2 * k as u32 + 2, 2 * k as u32 + 3);
            if churn {
                let ch = format!("ev:churn{c}-{k}");
                lines.push(format!(r#"{{"id":{a},"subscribe":{{"channel":"{ch}"}}}}"#));
                lines.push(format!(
                    r#"{{"id":{b},"unsubscribe":{{"channel":"{ch}"}}}}"#
                ));
            } else {
                lines.push(format!(r#"{{"id":{a},"ping":{{}}}}"#));
                lines.push(format!(r#"{{"id":{b},"ping":{{}}}}"#));
            }
        }
        let frame = lines.join("\n");
        let n = 2 * p as u32;
        tasks.push(tokio::spawn(round_trips(conn, frame, n, start, end)));
    }
    // Server CPU over the measured window only.
    tokio::time::sleep_until(start.into()).await;
    let cpu0 = node.cpu_time();
    let t0 = Instant::now();
    tokio::time::sleep_until(end.into()).await;
    let cpu1 = node.cpu_time();
    let elapsed = t0.elapsed();
    let mut out = Run {
        commands: 0,
        elapsed,
        server_cpu: cpu1.saturating_sub(cpu0),
        latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds"),
    };
    for t in tasks {
        let (n, h) = t.await??;
        out.commands += n;
        out.latency.add(&h).expect("same bounds");
    }
    Ok(out)
}

async fn round_trips(
    mut conn: Conn,
    frame: String,
    n: u32,
    start: Instant,
    end: Instant,
) -> anyhow::Result<(u64, Histogram<u64>)> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut commands = 0u64;
    let frame: tokio_tungstenite::tungstenite::Utf8Bytes = frame.into();
    loop {
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        conn.ws.send(Message::Text(frame.clone())).await?;
        let mut seen = 0;
        while seen < n {
            let Some(msg) = tokio::time::timeout(ws::STEP, conn.ws.next()).await? else {
                bail!("connection closed");
            };
            let at = Instant::now();
            let Message::Text(text) = msg? else { continue };
            let mut pong = false;
            for line in ws::lines(text.as_str()) {
                let line = line?;
                if line.is_ping() {
                    pong = true;
                    continue;
                }
                if let Some(e) = &line.error {
                    bail!("command {} failed: {} {}", line.id, e.code, e.message);
                }
                if line.id >= 2 && line.id < 2 + n {
                    seen += 1;
                    if sent >= start && at < end {
                        commands += 1;
                        h.saturating_record(at.duration_since(sent).as_micros().max(1) as u64);
                    }
                }
            }
            if pong {
                conn.ws.send(Message::Text("{}".into())).await?;
            }
        }
    }
    Ok((commands, h))
}
