//! Leave after a crash: node K holds N subscriptions (100 connections × N/100 channels of the
//! `ev` namespace). On node A, 10 watchers each asked for join/leave on a tenth of those
//! channels (so each receives N/10 leaves), and one wide watcher on all of them (N leaves in
//! one burst). Once every join has arrived, K gets SIGKILL and we time every leave push.
//! Once with heartbeat 250 ms / node_timeout 1 s, once with the defaults 1 s / 3 s. The
//! baseline column is the designed bound, node_timeout + heartbeat_interval.

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
/// Watchers sharing the channels on node A.
const WATCHERS: usize = 10;
/// The user-id prefix of K's clients: only their joins and leaves are counted.
const HOLDER: &str = "holder-";

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
    let channels = (ctx.sizes.crash_subs / HOLDERS).max(WATCHERS);
    let total = (HOLDERS * channels) as u64;
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

    let watched = Arc::new(Counts::default());
    let wide = Arc::new(Counts::default());
    let mut readers = JoinSet::new();
    for w in 0..WATCHERS {
        let mut c = Conn::connect(&a.ws_url(), &token(&format!("watcher-{w}"))).await?;
        let mine = (0..channels).filter(|c| c % WATCHERS == w);
        c.subscribe_all(mine.map(|c| format!("ev:crash{c}")), true)
            .await?;
        readers.spawn(count_pushes(c, watched.clone()));
    }
    let mut c = Conn::connect(&a.ws_url(), &token("wide-watcher")).await?;
    c.subscribe_all((0..channels).map(|c| format!("ev:crash{c}")), true)
        .await?;
    readers.spawn(count_pushes(c, wide.clone()));

    let url = k.ws_url();
    let holders = many(HOLDERS, 32, |h| {
        let url = url.clone();
        async move {
            let mut c = Conn::connect(&url, &token(&format!("{HOLDER}{h}"))).await?;
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
    for (who, counts) in [("watchers", &watched), ("the wide watcher", &wide)] {
        wait_for(&counts.joins, total, Duration::from_secs(60))
            .await
            .with_context(|| format!("joins from node K did not all reach {who} on node A"))?;
    }

    let killed = k.kill9();
    watched.start(killed);
    wide.start(killed);
    let within = Duration::from_secs_f64(bound * 3.0 + 5.0);
    let complete = wait_for(&watched.leaves, total, within).await.is_ok();
    // The wide watcher either has them all by now or was disconnected.
    let _ = wait_for(&wide.leaves, total, Duration::from_secs(2)).await;
    let times = watched.times();
    let last = times.last().copied().unwrap_or(f64::NAN);
    let first = times.first().copied().unwrap_or(f64::NAN);
    report.row(
        Row::new(
            "crash",
            format!("all leaves after SIGKILL (hb {heartbeat}, timeout {node_timeout})"),
            if complete { last } else { f64::INFINITY },
            "s",
        )
        .baseline(bound, "designed bound: node_timeout + heartbeat_interval")
        .target(Target::AtMost(bound))
        .note(format!(
            "{}/{total} leaves to {WATCHERS} watchers of {} each, first after {first:.3} s, last after {last:.3} s",
            times.len(),
            total / WATCHERS as u64
        )),
    );
    let got = wide.leaves.load(Ordering::Acquire);
    let closed = wide.closed.lock().expect("not poisoned").clone();
    report.row(
        Row::new(
            "crash",
            format!("leaves to one watcher of all {total} (hb {heartbeat})"),
            got as f64,
            "",
        )
        .target(Target::AtLeast(total as f64))
        .note(match closed {
            Some(c) => format!("{got}/{total} leaves, then the server closed it: {c}"),
            None => format!("{got}/{total} leaves, connection kept"),
        }),
    );
    // The delivery curve, at most ~500 points.
    let n = times.len().max(1);
    let every = n.div_ceil(500);
    let mut points = vec![(0.0, 0.0)];
    points.extend(
        times
            .iter()
            .enumerate()
            .filter(|(i, _)| i % every == 0 || i + 1 == n)
            .map(|(i, &t)| (t, (i + 1) as f64 / n as f64)),
    );
    report.series(
        Chart::Crash,
        format!("hb {heartbeat} / timeout {node_timeout}"),
        false,
        points,
    );
    readers.abort_all();
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

/// A watcher's reader: counts joins of K's clients, timestamps their leaves relative to the
/// kill, notes a close.
async fn count_pushes(mut c: Conn, counts: Arc<Counts>) {
    while let Some(msg) = c.ws.next().await {
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(f)) => {
                let why = f.map_or("no close frame".into(), |f| {
                    format!("{} {}", f.code, f.reason)
                });
                *counts.closed.lock().expect("not poisoned") = Some(why);
                return;
            }
            Ok(_) => continue,
            Err(e) => {
                *counts.closed.lock().expect("not poisoned") = Some(e.to_string());
                return;
            }
        };
        let mut pong = false;
        for line in ws::lines(text.as_str()).flatten() {
            if line.is_ping() {
                pong = true;
            } else if let Some(push) = &line.push {
                if let Some(j) = &push.join
                    && j.info.user.starts_with(HOLDER)
                {
                    counts.joins.fetch_add(1, Ordering::AcqRel);
                } else if let Some(l) = &push.leave
                    && l.info.user.starts_with(HOLDER)
                {
                    counts.leave();
                }
            }
        }
        if pong && c.ws.send(Message::Text("{}".into())).await.is_err() {
            return;
        }
    }
}

/// What readers saw, shared with the scenario.
#[derive(Default)]
struct Counts {
    joins: AtomicU64,
    leaves: AtomicU64,
    killed: Mutex<Option<Instant>>,
    times: Mutex<Vec<f64>>,
    closed: Mutex<Option<String>>,
}

impl Counts {
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
