//! Cross-node join propagation: a subscribe on node B → the join push on a subscriber of node
//! A, at fixed open-loop rates, against raw NATS publish → receive between two connections at
//! the same rates through the same `nats-server`.
//!
//! Join `g` is joiner `g % K` subscribing to channel `ev:p{g / K}`; the subscriber on A asked
//! for join/leave pushes on every such channel, the joiners did not (so B pushes to nobody
//! locally and only the cross-node path is measured). Each join's send time and delivery
//! latency live in arrays indexed by `g`, which also catches lost and duplicate joins.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

use super::{Ctx, many, nanos_since, pace};
use crate::procs::{Engine, Nats, Server, token};
use crate::report::{Chart, Report, Row, Target, quantile_points};
use crate::ws::{self, Conn};

/// Send times and latencies (ns) by join index; 0 = not yet.
struct Timings {
    base: Instant,
    sent: Vec<AtomicU64>,
    latency: Vec<AtomicU64>,
    duplicates: AtomicU64,
    unexpected: AtomicU64,
}

impl Timings {
    fn new(base: Instant, n: usize) -> Arc<Timings> {
        Arc::new(Timings {
            base,
            sent: (0..n).map(|_| AtomicU64::new(0)).collect(),
            latency: (0..n).map(|_| AtomicU64::new(0)).collect(),
            duplicates: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
        })
    }

    fn mark_sent(&self, i: usize) {
        self.sent[i].store(nanos_since(self.base), Ordering::Release);
    }

    fn mark_received(&self, i: usize, at: u64) {
        let Some(sent) = self.sent.get(i).map(|s| s.load(Ordering::Acquire)) else {
            self.unexpected.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if sent == 0 {
            self.unexpected.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let lat = at.saturating_sub(sent).max(1);
        if self.latency[i].swap(lat, Ordering::AcqRel) != 0 {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits (≤ `within`) until every join in `range` arrived; returns their latencies in µs
    /// and how many never arrived.
    async fn collect(
        &self,
        range: std::ops::Range<usize>,
        within: Duration,
    ) -> (Histogram<u64>, u64) {
        let deadline = Instant::now() + within;
        loop {
            let missing = range
                .clone()
                .filter(|&i| self.latency[i].load(Ordering::Acquire) == 0)
                .count() as u64;
            if missing == 0 || Instant::now() > deadline {
                let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
                for i in range {
                    let ns = self.latency[i].load(Ordering::Acquire);
                    if ns != 0 {
                        h.saturating_record((ns / 1000).max(1));
                    }
                }
                return (h, missing);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let sz = &ctx.sizes;
    let nats = Nats::start()?;
    let engine = Engine::Nats {
        url: nats.url(),
        heartbeat: "1s",
        node_timeout: "3s",
    };
    let a = Server::rollcall(&ctx.bin, "node-a", &engine).await?;
    let b = Server::rollcall(&ctx.bin, "node-b", &engine).await?;
    a.wait_http("/ready", Duration::from_secs(15)).await?;
    b.wait_http("/ready", Duration::from_secs(15)).await?;

    let (k, c) = (sz.prop_joiners, sz.prop_channels);
    let per_rate: usize = sz
        .prop_rates
        .iter()
        .map(|&r| (r as f64 * (sz.prop_secs + sz.warmup.as_secs_f64())).round() as usize)
        .sum();
    anyhow::ensure!(
        per_rate <= k * c,
        "{per_rate} joins need more than {k} joiners × {c} channels"
    );
    let base = Instant::now();

    // The subscriber on A, asking for join/leave on every channel.
    let mut sub = Conn::connect(&a.ws_url(), &token("subscriber")).await?;
    sub.subscribe_all((0..c).map(|i| format!("ev:p{i}")), true)
        .await?;
    // The joiners on B.
    let url = b.ws_url();
    let joiners = many(k, 32, |j| {
        let url = url.clone();
        async move { Conn::connect(&url, &token(&format!("joiner-{j}"))).await }
    })
    .await?;
    let ids: HashMap<String, usize> = joiners
        .iter()
        .enumerate()
        .map(|(j, c)| (c.client.clone(), j))
        .collect();
    let rc = Timings::new(base, k * c);
    let receiver = tokio::spawn(receive_joins(sub, ids, k, rc.clone()));
    let errors = Arc::new(AtomicU64::new(0));
    let mut sinks = Vec::new();
    let mut readers = Vec::new();
    for j in joiners {
        let (sink, stream) = j.ws.split();
        let sink = Arc::new(Mutex::new(sink));
        readers.push(tokio::spawn(drain_replies(
            stream,
            sink.clone(),
            errors.clone(),
        )));
        sinks.push(sink);
    }

    // Raw NATS: two connections through the same server.
    let nats_pub = async_nats::connect(nats.url()).await?;
    let nats_sub = async_nats::connect(nats.url()).await?;
    let mut raw = nats_sub.subscribe("bench.raw").await?;
    nats_sub.flush().await?;
    let nt = Timings::new(base, per_rate);
    let nats_rx = {
        let nt = nt.clone();
        tokio::spawn(async move {
            while let Some(msg) = raw.next().await {
                let at = nanos_since(nt.base);
                if let Some(i) = msg.payload.get(..8) {
                    let i = u64::from_le_bytes(i.try_into().expect("8 bytes"));
                    nt.mark_received(i as usize, at);
                }
            }
        })
    };

    let (mut rc_next, mut nt_next) = (0usize, 0usize);
    let warm = sz.warmup.as_secs_f64();
    for &rate in &sz.prop_rates {
        // Baseline first, then rollcall, each with its own warm-up.
        let mut nats_phase = |secs: f64| {
            let first = nt_next;
            nt_next += (rate as f64 * secs).round() as usize;
            first
        };
        let w = nats_phase(warm);
        pace(rate, warm, |i| raw_publish(&nats_pub, &nt, w + i as usize)).await?;
        let first = nats_phase(sz.prop_secs);
        let nats_lag = pace(rate, sz.prop_secs, |i| {
            raw_publish(&nats_pub, &nt, first + i as usize)
        })
        .await?;
        let (nh, nats_missing) = nt.collect(first..nt_next, Duration::from_secs(5)).await;

        let mut rc_phase = |secs: f64| {
            let first = rc_next;
            rc_next += (rate as f64 * secs).round() as usize;
            first
        };
        let w = rc_phase(warm);
        pace(rate, warm, |i| join(&sinks, &rc, k, w + i as usize)).await?;
        let first = rc_phase(sz.prop_secs);
        let lag = pace(rate, sz.prop_secs, |i| {
            join(&sinks, &rc, k, first + i as usize)
        })
        .await?;
        let (h, missing) = rc.collect(first..rc_next, Duration::from_secs(10)).await;

        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let note = format!(
            "{} joins over {:.0} s, {missing} lost, pacer lag ≤ {:.1} ms (NATS: {} msgs, {nats_missing} lost, lag ≤ {:.1} ms)",
            h.len(),
            sz.prop_secs,
            lag.as_secs_f64() * 1e3,
            nh.len(),
            nats_lag.as_secs_f64() * 1e3
        );
        let label = "raw NATS publish → receive, same rate";
        let mut p50 = Row::new(
            "propagation",
            format!("join propagation p50 @{rate}/s"),
            ms(&h, 0.5),
            "ms",
        )
        .baseline(ms(&nh, 0.5), label)
        .note(note);
        let mut p99 = Row::new(
            "propagation",
            format!("join propagation p99 @{rate}/s"),
            ms(&h, 0.99),
            "ms",
        )
        .baseline(ms(&nh, 0.99), label);
        match rate {
            1000 => {
                p50 = p50.target(Target::AtMost(1.5));
                p99 = p99.target(Target::AtMost(5.0));
            }
            5000 => p99 = p99.target(Target::AtMost(10.0)),
            _ => {}
        }
        report.row(p50);
        report.row(p99);
        report.series(
            Chart::Propagation,
            format!("rollcall {rate}/s"),
            false,
            quantile_points(&h, 1000.0),
        );
        report.series(
            Chart::Propagation,
            format!("NATS {rate}/s"),
            true,
            quantile_points(&nh, 1000.0),
        );
    }
    let dup = rc.duplicates.load(Ordering::Relaxed);
    let unexpected = rc.unexpected.load(Ordering::Relaxed);
    let errs = errors.load(Ordering::Relaxed);
    if dup + unexpected + errs > 0 {
        report.row(
            Row::new(
                "propagation",
                "join propagation anomalies",
                (dup + unexpected + errs) as f64,
                "",
            )
            .target(Target::AtMost(0.0))
            .note(format!(
                "{dup} duplicate joins, {unexpected} unexpected pushes, {errs} error replies"
            )),
        );
    }
    receiver.abort();
    nats_rx.abort();
    for r in readers {
        r.abort();
    }
    Ok(())
}

/// Sends join `g`: joiner `g % k` subscribes to `ev:p{g / k}`.
async fn join(
    sinks: &[Arc<Mutex<ws::Sink>>],
    t: &Timings,
    k: usize,
    g: usize,
) -> anyhow::Result<()> {
    let (j, ch) = (g % k, g / k);
    let cmd = format!(r#"{{"id":{},"subscribe":{{"channel":"ev:p{ch}"}}}}"#, g + 1);
    let mut sink = sinks[j].lock().await;
    t.mark_sent(g);
    sink.send(Message::Text(cmd.into()))
        .await
        .context("joiner send")
}

async fn raw_publish(client: &async_nats::Client, t: &Timings, i: usize) -> anyhow::Result<()> {
    // About the size of a one-join delta.
    let mut payload = vec![0u8; 160];
    payload[..8].copy_from_slice(&(i as u64).to_le_bytes());
    t.mark_sent(i);
    client.publish("bench.raw", payload.into()).await?;
    Ok(())
}

/// The subscriber's reader: timestamps every join push, answers pings.
async fn receive_joins(
    mut sub: Conn,
    ids: HashMap<String, usize>,
    k: usize,
    t: Arc<Timings>,
) -> anyhow::Result<()> {
    while let Some(msg) = sub.ws.next().await {
        let at = nanos_since(t.base);
        let Message::Text(text) = msg? else { continue };
        let mut pong = false;
        for line in ws::lines(text.as_str()) {
            let line = line?;
            if line.is_ping() {
                pong = true;
            } else if let Some(push) = &line.push
                && let Some(join) = &push.join
            {
                let ch: Option<usize> = push
                    .channel
                    .strip_prefix("ev:p")
                    .and_then(|n| n.parse().ok());
                match (ch, ids.get(join.info.client.as_ref())) {
                    (Some(ch), Some(&j)) => t.mark_received(ch * k + j, at),
                    _ => {
                        t.unexpected.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        if pong {
            sub.ws.send(Message::Text("{}".into())).await?;
        }
    }
    Ok(())
}

/// A joiner's reader: counts error replies, answers pings.
async fn drain_replies(mut stream: ws::Stream, sink: Arc<Mutex<ws::Sink>>, errors: Arc<AtomicU64>) {
    let mut logged = false;
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(text) = msg else { continue };
        let mut pong = false;
        for line in ws::lines(text.as_str()).flatten() {
            if line.is_ping() {
                pong = true;
            } else if let Some(e) = &line.error {
                errors.fetch_add(1, Ordering::Relaxed);
                if !logged {
                    logged = true;
                    eprintln!("   joiner error reply: {} {}", e.code, e.message);
                }
            }
        }
        if pong
            && sink
                .lock()
                .await
                .send(Message::Text("{}".into()))
                .await
                .is_err()
        {
            return;
        }
    }
}
