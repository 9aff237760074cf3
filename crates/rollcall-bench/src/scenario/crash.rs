//! Leave after a crash: node K holds N subscriptions (100 connections × N/100 channels), a
//! subscriber on node A asked for join/leave on all those channels and saw every join; K gets
//! SIGKILL, and we time every leave push reaching the subscriber. Once with heartbeat
//! 250 ms / node_timeout 1 s, once with the defaults 1 s / 3 s. The baseline column is the
//! designed bound, node_timeout + heartbeat_interval.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use super::{Ctx, many};
use crate::procs::{Engine, Nats, Server, token};
use crate::report::{Chart, Report, Row, Target};
use crate::ws::{self, Conn};

/// Connections on the node that is killed.
const HOLDERS: usize = 100;

pub async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    for (hb, timeout, bound) in [("250ms", "1s", 1.25), ("1s", "3s", 4.0)] {
        one(ctx, report, hb, timeout, bound).await?;
    }
    Ok(())
}

async fn one(
    ctx: &Ctx,
    report: &mut Report,
    heartbeat: &'static str,
    node_timeout: &'static str,
    bound: f64,
) -> anyhow::Result<()> {
    let subs = ctx.sizes.crash_subs;
    let channels = subs / HOLDERS;
    let nats = Nats::start()?;
    let engine = Engine::Nats {
        url: nats.url(),
        heartbeat,
        node_timeout,
    };
    let a = Server::rollcall(&ctx.bin, "node-a", &engine).await?;
    let mut k = Server::rollcall(&ctx.bin, "node-k", &engine).await?;
    a.wait_http("/ready", Duration::from_secs(15)).await?;
    k.wait_http("/ready", Duration::from_secs(15)).await?;

    let mut sub = Conn::connect(&a.ws_url(), &token("subscriber")).await?;
    sub.subscribe_all((0..channels).map(|c| format!("ev:crash{c}")), true)
        .await?;
    let counts = Arc::new(Leaves::default());
    let receiver = tokio::spawn(count_pushes(sub, counts.clone()));

    let url = k.ws_url();
    let holders = many(HOLDERS, 32, |h| {
        let url = url.clone();
        async move {
            let mut c = Conn::connect(&url, &token(&format!("holder-{h}"))).await?;
            c.subscribe_all((0..channels).map(|c| format!("ev:crash{c}")), false)
                .await?;
            anyhow::Ok(c)
        }
    })
    .await?;
    let mut idle = JoinSet::new();
    for h in holders {
        h.idle(&mut idle);
    }
    let total = (HOLDERS * channels) as u64;
    wait_for(&counts.joins, total, Duration::from_secs(60))
        .await
        .context("joins from node K did not all reach node A")?;

    let killed = k.kill9();
    counts.start(killed);
    let within = Duration::from_secs_f64(bound * 3.0 + 5.0);
    let complete = wait_for(&counts.leaves, total, within).await.is_ok();
    let times = counts.times();
    let got = times.len();
    let last = times.last().copied().unwrap_or(f64::NAN);
    let first = times.first().copied().unwrap_or(f64::NAN);
    let value = if complete { last } else { f64::INFINITY };
    report.row(
        Row::new(
            "crash",
            format!("all leaves after SIGKILL (hb {heartbeat}, timeout {node_timeout})"),
            value,
            "s",
        )
        .baseline(bound, "designed bound: node_timeout + heartbeat_interval")
        .target(Target::AtMost(bound))
        .note(format!(
            "{got}/{total} leaves delivered, first after {first:.3} s, last after {last:.3} s"
        )),
    );
    let n = got.max(1) as f64;
    let mut points = vec![(0.0, 0.0)];
    points.extend(
        times
            .iter()
            .enumerate()
            .map(|(i, &t)| (t, (i + 1) as f64 / n)),
    );
    report.series(
        Chart::Crash,
        format!("hb {heartbeat} / timeout {node_timeout}"),
        false,
        points,
    );
    receiver.abort();
    idle.abort_all();
    Ok(())
}

async fn wait_for(counter: &AtomicU64, want: u64, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let got = counter.load(Ordering::Acquire);
        if got >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{got} of {want} within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The subscriber's reader: counts joins; timestamps leaves relative to the kill.
async fn count_pushes(mut sub: Conn, counts: Arc<Leaves>) -> anyhow::Result<()> {
    while let Some(msg) = sub.ws.next().await {
        let Message::Text(text) = msg? else { continue };
        let mut pong = false;
        for line in ws::lines(text.as_str()) {
            let line = line?;
            if line.is_ping() {
                pong = true;
            } else if let Some(push) = &line.push {
                if push.join.is_some() {
                    counts.joins.fetch_add(1, Ordering::AcqRel);
                } else if push.leave.is_some() {
                    counts.leave();
                }
            }
        }
        if pong {
            sub.ws.send(Message::Text("{}".into())).await?;
        }
    }
    Ok(())
}

/// The counters shared by the subscriber's reader and the scenario.
#[derive(Default)]
struct Leaves {
    joins: AtomicU64,
    leaves: AtomicU64,
    killed: Mutex<Option<Instant>>,
    times: Mutex<Vec<f64>>,
}

impl Leaves {
    fn start(&self, killed: Instant) {
        *self.killed.lock().expect("not poisoned") = Some(killed);
    }

    fn leave(&self) {
        let at = Instant::now();
        if let Some(k) = *self.killed.lock().expect("not poisoned") {
            self.times
                .lock()
                .expect("not poisoned")
                .push(at.duration_since(k).as_secs_f64());
        }
        self.leaves.fetch_add(1, Ordering::AcqRel);
    }

    /// Seconds from the kill to each leave, in arrival order.
    fn times(&self) -> Vec<f64> {
        self.times.lock().expect("not poisoned").clone()
    }
}
