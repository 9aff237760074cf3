//! A minimal HTTP/1.1 keep-alive client and closed-loop load generator.
//!
//! Hand-rolled on purpose: the generator shares two cores with the server it measures, so it
//! must cost little per request, and it treats the server and the static baseline exactly
//! alike. It understands what axum sends: a status line, headers, a `Content-Length` body.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::procs::API_KEY;

/// One keep-alive connection.
pub struct Conn {
    stream: BufReader<TcpStream>,
    line: Vec<u8>,
    body: Vec<u8>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Ok(Conn {
            stream: BufReader::with_capacity(64 * 1024, tcp),
            line: Vec::with_capacity(256),
            body: Vec::new(),
        })
    }

    /// Sends `request` (complete bytes) and reads the response. Returns the status; the body
    /// is in [`Conn::body`] until the next call.
    pub async fn send(&mut self, request: &[u8]) -> anyhow::Result<u16> {
        self.stream.get_mut().write_all(request).await?;
        self.line.clear();
        if self.stream.read_until(b'\n', &mut self.line).await? == 0 {
            bail!("connection closed before the status line");
        }
        let status: u16 = std::str::from_utf8(&self.line)
            .ok()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .context("bad status line")?;
        let mut length = 0usize;
        loop {
            self.line.clear();
            if self.stream.read_until(b'\n', &mut self.line).await? == 0 {
                bail!("connection closed in the headers");
            }
            if self.line == b"\r\n" {
                break;
            }
            let l = std::str::from_utf8(&self.line).unwrap_or("");
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().context("bad content-length")?;
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    bail!("chunked responses are not supported by the bench client");
                }
            }
        }
        self.body.resize(length, 0);
        self.stream.read_exact(&mut self.body).await?;
        Ok(status)
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

/// A `POST /api/<method>` request with the bench API key.
pub fn api_request(method: &str, params: &str) -> Vec<u8> {
    format!(
        "POST /api/{method} HTTP/1.1\r\nHost: bench\r\nX-API-Key: {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{params}",
        params.len()
    )
    .into_bytes()
}

/// Calls an API method once on a fresh connection; returns the parsed body.
pub async fn api(
    addr: SocketAddr,
    method: &str,
    params: &str,
) -> anyhow::Result<serde_json::Value> {
    let mut c = Conn::open(addr).await?;
    let status = c.send(&api_request(method, params)).await?;
    if status != 200 {
        bail!("{method}: HTTP {status}");
    }
    Ok(serde_json::from_slice(c.body())?)
}

/// `GET path` on a fresh connection: the status (an error if the server does not answer).
pub async fn get_status(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    let mut c = tokio::time::timeout(Duration::from_millis(500), Conn::open(addr)).await??;
    let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    tokio::time::timeout(Duration::from_secs(2), c.send(req.as_bytes())).await?
}

/// What a load run measured.
pub struct Load {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Request latency in microseconds.
    pub latency: Histogram<u64>,
    pub body_len: usize,
}

impl Load {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// Closed loop: `conns` keep-alive connections each send `request` again as soon as the
/// previous response is read, for `warmup` (not counted) then `duration`.
pub async fn load(
    addr: SocketAddr,
    request: Vec<u8>,
    conns: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Load> {
    let request = std::sync::Arc::new(request);
    let start = Instant::now() + warmup;
    let end = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let mut c = Conn::open(addr).await?;
            let (mut n, mut errors, mut body_len) = (0u64, 0u64, 0usize);
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let status = c.send(&request).await?;
                let done = Instant::now();
                if t >= start {
                    if status == 200 {
                        n += 1;
                        h.saturating_record(done.duration_since(t).as_micros() as u64);
                    } else {
                        errors += 1;
                    }
                }
                body_len = c.body().len();
            }
            anyhow::Ok((n, errors, h, body_len))
        }));
    }
    let mut out = Load {
        requests: 0,
        errors: 0,
        elapsed: duration,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds"),
        body_len: 0,
    };
    for t in tasks {
        let (n, e, h, len) = t.await??;
        out.requests += n;
        out.errors += e;
        out.latency.add(&h).expect("same bounds");
        out.body_len = len;
    }
    Ok(out)
}
