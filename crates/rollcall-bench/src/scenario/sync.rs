//! A fresh node joining a cluster that holds N presence entries (two nodes, N/2 each, as
//! connections × 100 channels): time from process spawn to `/ready` 200, against the same
//! start into the same cluster while it held no entries (the baseline: what start-up costs
//! without any sync). Then checks that the node answered for every entry once ready.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::task::JoinSet;

use super::{Ctx, many};
use crate::http;
use crate::procs::{Engine, Nats, Server, token};
use crate::report::{Report, Row, Target};
use crate::ws::Conn;

/// Channels each populating connection subscribes to.
const CHANNELS: usize = 100;

pub async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let entries = ctx.sizes.sync_entries;
    let nats = Nats::start()?;
    let defaults = Engine::Nats {
        url: nats.url(),
        heartbeat: "1s",
        node_timeout: "3s",
    };
    let p1 = Server::rollcall(&ctx.bin, "peer-1", &defaults).await?;
    let p2 = Server::rollcall(&ctx.bin, "peer-2", &defaults).await?;
    p1.wait_http("/ready", Duration::from_secs(15)).await?;
    p2.wait_http("/ready", Duration::from_secs(15)).await?;

    // Baseline: the same start while the cluster is empty.
    let empty = fresh(ctx, &defaults, "fresh-empty").await?;

    // Fill the cluster.
    let t = Instant::now();
    let per_peer = entries / 2 / CHANNELS;
    let mut idle = JoinSet::new();
    for (p, peer) in [&p1, &p2].into_iter().enumerate() {
        let url = peer.ws_url();
        let conns = many(per_peer, 32, |i| {
            let url = url.clone();
            async move {
                let mut c = Conn::connect(&url, &token(&format!("p{p}-user-{i}"))).await?;
                c.subscribe_all((0..CHANNELS).map(|ch| format!("pres:s{ch}")), false)
                    .await?;
                anyhow::Ok(c)
            }
        })
        .await?;
        for c in conns {
            c.idle(&mut idle);
        }
    }
    let total = (per_peer * 2 * CHANNELS) as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (a, b) = (count(p1.addr).await?, count(p2.addr).await?);
        if a == total && b == total {
            break;
        }
        if Instant::now() > deadline {
            bail!("cluster did not converge on {total} entries: peer-1 has {a}, peer-2 has {b}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "   cluster holds {total} entries ({:.1}s to fill)",
        t.elapsed().as_secs_f64()
    );

    let full = fresh(ctx, &defaults, "fresh-full").await?;
    let fast = Engine::Nats {
        url: nats.url(),
        heartbeat: "250ms",
        node_timeout: "3s",
    };
    let full_fast = fresh(ctx, &fast, "fresh-full-hb250").await?;
    for r in [&full, &full_fast] {
        if r.entries != total {
            report.row(
                Row::new(
                    "sync",
                    format!("entries answered at ready ({})", r.name),
                    r.entries as f64,
                    "",
                )
                .target(Target::AtLeast(total as f64))
                .note("a ready node must answer presence for every entry of the cluster"),
            );
        }
    }
    report.row(
        Row::new("sync", format!("fresh node ready, {total} entries"), full.ready_s, "s")
            .baseline(empty.ready_s, "same start into the empty cluster")
            .target(Target::AtMost(1.0))
            .note(format!(
                "spawn → /ready 200, defaults heartbeat 1s / node_timeout 3s; answered {}/{total} entries at ready",
                full.entries
            )),
    );
    report.row(
        Row::new(
            "sync",
            format!("fresh node ready, {total} entries, its heartbeat 250ms"),
            full_fast.ready_s,
            "s",
        )
        .baseline(empty.ready_s, "start into the empty cluster, heartbeat 1s")
        .note("the new node runs heartbeat_interval 250 ms; its discovery window is at most one heartbeat_interval"),
    );
    idle.abort_all();
    Ok(())
}

struct Fresh {
    name: &'static str,
    ready_s: f64,
    entries: u64,
}

/// Spawns a node, times spawn → `/ready` 200, counts the entries it answers, stops it
/// gracefully (peers drop it at once).
async fn fresh(ctx: &Ctx, engine: &Engine, name: &'static str) -> anyhow::Result<Fresh> {
    let mut node = Server::spawn_rollcall(&ctx.bin, name, engine)?;
    let ready = node.wait_http("/ready", Duration::from_secs(30)).await?;
    let ready_s = ready.duration_since(node.spawned).as_secs_f64();
    let entries = count(node.addr).await?;
    node.terminate();
    eprintln!("   {name}: ready after {ready_s:.3}s with {entries} entries");
    Ok(Fresh {
        name,
        ready_s,
        entries,
    })
}

/// Presence entries a node answers for, over the `channels` API.
async fn count(addr: SocketAddr) -> anyhow::Result<u64> {
    let body = http::api(addr, "channels", r#"{"pattern":"pres:s*"}"#).await?;
    let channels = body["result"]["channels"]
        .as_object()
        .context("channels result missing")?;
    Ok(channels
        .values()
        .filter_map(|c| c["num_clients"].as_u64())
        .sum())
}
