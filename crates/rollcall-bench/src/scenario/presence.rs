//! HTTP presence queries: `presence_stats` and `presence` for channels of 10, 1 000 and
//! 10 000 members (one WebSocket client per member), against a static axum endpoint in its
//! own process returning a body of exactly the same bytes, both under the same closed-loop
//! load of N keep-alive connections.

use std::time::Duration;

use anyhow::ensure;
use tokio::task::JoinSet;

use super::{Ctx, many};
use crate::http;
use crate::procs::{Engine, Server, token};
use crate::report::{Chart, Report, Row, Target, quantile_points};
use crate::ws::Conn;

pub async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let sz = &ctx.sizes;
    let node = Server::rollcall(&ctx.bin, "node-presence", &Engine::Memory).await?;
    // Members: one connection each, `pres:m<size>` (presence, no join/leave pushes).
    let mut channel_of = Vec::new();
    for &n in &sz.presence_members {
        channel_of.extend(std::iter::repeat_n(format!("pres:m{n}"), n));
    }
    let url = node.ws_url();
    let t = std::time::Instant::now();
    let conns = many(channel_of.len(), 64, |i| {
        let (url, ch) = (url.clone(), channel_of[i].clone());
        async move {
            let mut c = Conn::connect(&url, &token(&format!("user-{i}"))).await?;
            c.subscribe_all([ch], false).await?;
            anyhow::Ok(c)
        }
    })
    .await?;
    eprintln!(
        "   {} members connected in {:.1}s",
        conns.len(),
        t.elapsed().as_secs_f64()
    );
    let mut idle = JoinSet::new();
    for c in conns {
        c.idle(&mut idle);
    }

    // The cases, and the real response of each, which the static endpoint will serve.
    let mut cases = vec![(
        "presence_stats".to_string(),
        "stats".to_string(),
        "presence_stats",
        format!(
            r#"{{"channel":"pres:m{}"}}"#,
            sz.presence_members[1.min(sz.presence_members.len() - 1)]
        ),
    )];
    for &n in &sz.presence_members {
        cases.push((
            format!("presence {n} members"),
            format!("m{n}"),
            "presence",
            format!(r#"{{"channel":"pres:m{n}"}}"#),
        ));
    }
    let files = tempfile::tempdir()?;
    for (_, file, method, params) in &cases {
        let body = http::api(node.addr, method, params).await?;
        if *method == "presence" {
            let got = body["result"]["presence"]
                .as_object()
                .map_or(0, |m| m.len());
            let want: usize = file[1..].parse()?;
            ensure!(
                got == want,
                "presence of {params} has {got} members, expected {want}"
            );
        }
        std::fs::write(files.path().join(file), serde_json::to_vec(&body)?)?;
    }
    let fixed = Server::static_endpoint(files.path()).await?;

    let warmup = Duration::from_millis(300);
    let secs = Duration::from_secs_f64(sz.http_secs);
    for (figure, file, method, params) in &cases {
        let cpu = fixed.cpu_time();
        let theirs = http::load(
            fixed.addr,
            http::api_request(file, params),
            ctx.http_conns,
            warmup,
            secs,
        )
        .await?;
        let their_cpu = fixed.cpu_time().saturating_sub(cpu);
        let cpu = node.cpu_time();
        let ours = http::load(
            node.addr,
            http::api_request(method, params),
            ctx.http_conns,
            warmup,
            secs,
        )
        .await?;
        let our_cpu = node.cpu_time().saturating_sub(cpu);
        ensure!(
            ours.errors == 0 && theirs.errors == 0,
            "{figure}: {} error responses from rollcall, {} from the static endpoint",
            ours.errors,
            theirs.errors
        );
        let label = format!("static axum endpoint, same {} B body", theirs.body_len);
        // Server CPU per request (warm-up included on both sides: an estimate).
        let per_req = |cpu: Duration, l: &http::Load| {
            let total = l.requests as f64 * (1.0 + warmup.as_secs_f64() / secs.as_secs_f64());
            cpu.as_secs_f64() * 1e6 / total.max(1.0)
        };
        let note = format!(
            "{} keep-alive connections, body {} B; server CPU ≈ {:.0} µs/request (static: {:.0} µs)",
            ctx.http_conns,
            ours.body_len,
            per_req(our_cpu, &ours),
            per_req(their_cpu, &theirs)
        );
        let mut rps = Row::new("presence", format!("{figure} req/s"), ours.rps(), "req/s")
            .baseline(theirs.rps(), label.clone())
            .note(note);
        if *method == "presence_stats" {
            rps = rps.target(Target::RatioAtLeast(0.5));
        }
        report.row(rps);
        let p99 = |l: &http::Load| l.latency.value_at_quantile(0.99) as f64 / 1000.0;
        let mut lat = Row::new("presence", format!("{figure} p99"), p99(&ours), "ms")
            .baseline(p99(&theirs), label);
        if figure == "presence 1000 members" {
            lat = lat.target(Target::AtMost(2.0));
        }
        report.row(lat);
        report.series(
            Chart::Presence,
            format!("rollcall {figure}"),
            false,
            quantile_points(&ours.latency, 1000.0),
        );
        report.series(
            Chart::Presence,
            format!("static {figure}"),
            true,
            quantile_points(&theirs.latency, 1000.0),
        );
    }
    idle.abort_all();
    Ok(())
}
