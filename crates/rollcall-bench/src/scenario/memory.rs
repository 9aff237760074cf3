//! Memory per idle connection: the server's RSS growth (`VmRSS`) while N WebSocket clients
//! connect and each subscribes to its own presence channel (`chat:mem<i>`: presence and
//! join/leave), against a bare axum WebSocket echo server with rollcall's buffer settings
//! receiving the very same frames. RSS is sampled as clients are added (the memory curve).

use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use super::{Ctx, many};
use crate::procs::{Engine, Server, token};
use crate::report::{Chart, Report, Row, Target};
use crate::ws::{self, Ws};

/// What one server's RSS did.
struct Curve {
    /// (clients, RSS KiB).
    points: Vec<(usize, u64)>,
    per_conn_kib: f64,
}

pub async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let n = ctx.sizes.memory_clients;
    let steps = ctx.sizes.memory_steps;
    let bare = {
        let mut server = Server::bare_ws().await?;
        measure(&mut server, n, steps).await?
    };
    let ours = {
        let mut server = Server::rollcall(&ctx.bin, "node-memory", &Engine::Memory).await?;
        measure(&mut server, n, steps).await?
    };
    let note = if n < ctx.sizes.memory_wanted {
        format!(
            "{n} clients (capped by RLIMIT_NOFILE from {}); each connected + subscribed, then idle",
            ctx.sizes.memory_wanted
        )
    } else {
        format!("{n} clients, each connected + subscribed, then idle")
    };
    report.row(
        Row::new(
            "memory",
            "memory per idle connection",
            ours.per_conn_kib,
            "KiB",
        )
        .baseline(
            bare.per_conn_kib,
            "bare axum WebSocket echo server, same frames and buffer sizes",
        )
        .target(Target::AtMost(8.0))
        .note(note),
    );
    let mib = |c: &Curve| {
        c.points
            .iter()
            .map(|&(x, kib)| (x as f64, kib as f64 / 1024.0))
            .collect()
    };
    report.series(Chart::Memory, "rollcall", false, mib(&ours));
    report.series(Chart::Memory, "bare axum WebSocket", true, mib(&bare));
    Ok(())
}

async fn measure(server: &mut Server, n: usize, steps: usize) -> anyhow::Result<Curve> {
    // Let start-up allocations settle before the reference sample.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = server.rss_kib()?;
    let mut points = vec![(0, rss0)];
    let mut idle = JoinSet::new();
    let url = server.ws_url();
    let step = n.div_ceil(steps);
    let t = Instant::now();
    let mut done = 0;
    while done < n {
        let batch = step.min(n - done);
        let conns = many(batch, 128, |i| open_and_subscribe(url.clone(), done + i)).await?;
        done += batch;
        for ws in conns {
            ws::keep_idle(ws, &mut idle);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        points.push((done, server.rss_kib()?));
    }
    // Idle for a moment: what stays is what an idle connection costs.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = server.rss_kib()?;
    points.push((n, rss));
    eprintln!(
        "   {}: {n} clients in {:.1}s, RSS {} → {} KiB",
        server.name,
        t.elapsed().as_secs_f64(),
        rss0,
        rss
    );
    // A graceful stop while every client is still connected, so that a heap profiler wrapped
    // around the server (ROLLCALL_BIN=a valgrind --tool=massif wrapper) writes its peak.
    server.terminate();
    idle.abort_all();
    Ok(Curve {
        points,
        per_conn_kib: rss.saturating_sub(rss0) as f64 / n as f64,
    })
}

/// Opens a socket and sends connect + subscribe in one frame; waits for the answer (both
/// replies from rollcall, the echo from the bare server).
async fn open_and_subscribe(url: String, i: usize) -> anyhow::Result<Ws> {
    let mut ws = ws::open(&url).await?;
    let frame = format!(
        "{{\"id\":1,\"connect\":{{\"token\":\"{}\"}}}}\n{{\"id\":2,\"subscribe\":{{\"channel\":\"chat:mem{i}\"}}}}",
        token(&format!("user-{i}"))
    );
    ws.send(Message::Text(frame.into())).await?;
    let mut seen = [false; 2];
    let deadline = tokio::time::Instant::now() + ws::STEP;
    while !(seen[0] && seen[1]) {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await?;
        let Some(Ok(Message::Text(text))) = msg else {
            bail!("connection {i} closed before its replies: {msg:?}");
        };
        // Loosely parsed: the bare server echoes the commands themselves.
        for line in text.as_str().split('\n').filter(|l| !l.trim().is_empty()) {
            let line: serde_json::Value = serde_json::from_str(line)?;
            if let Some(e) = line.get("error") {
                bail!("connection {i}: error {e}");
            }
            if let Some(id @ 1..=2) = line.get("id").and_then(serde_json::Value::as_u64) {
                seen[id as usize - 1] = true;
            }
        }
    }
    Ok(ws)
}
