//! Child processes of the bench: `nats-server`, `rollcall serve` nodes and the baseline
//! servers; their configs and tokens. Every process is killed on drop.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::http;
use crate::machine;

/// The API key of every bench config.
pub const API_KEY: &str = "bench-api-key";
/// The HMAC secret signing every bench token.
pub const SECRET: &str = "bench-token-secret";

/// A free loopback port (free when asked; a start that loses the race is retried).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// A `nats-server` on a free loopback port.
pub struct Nats {
    child: Child,
    port: u16,
}

impl Nats {
    pub fn start() -> anyhow::Result<Nats> {
        let bin = find_nats()?;
        for _ in 0..5 {
            let port = free_port()?;
            let mut child = Command::new(&bin)
                .args(["-a", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("cannot run {}", bin.display()))?;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if child.try_wait()?.is_some() {
                    break; // lost the port race: try another
                }
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                    return Ok(Nats { child, port });
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("nats-server did not accept connections on port {port} within 10s");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        bail!("nats-server did not start on any of 5 free ports")
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `$NATS_SERVER`, else `nats-server` on PATH or in /usr/sbin, /usr/bin.
fn find_nats() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("NATS_SERVER") {
        return Ok(PathBuf::from(bin));
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .context("nats-server not found: `apt-get install nats-server` or `make tools-nats`")
}

/// Which presence engine a node runs.
#[derive(Debug, Clone)]
pub enum Engine {
    Memory,
    Nats {
        url: String,
        heartbeat: &'static str,
        node_timeout: &'static str,
    },
}

/// A node's config: the API key, the token secret, high channel limits, and three namespaces:
/// `chat` (presence, join/leave pushed to every subscriber), `ev` (presence, join/leave pushed
/// only to subscribers that ask with `join_leave: true`) and `pres` (presence only).
pub fn config(port: u16, name: &str, engine: &Engine) -> Value {
    let ns = |name: &str, join_leave: bool, force: bool| {
        json!({"name": name, "presence": true, "join_leave": join_leave,
               "force_push_join_leave": force, "allow_subscribe_for_client": true,
               "allow_presence_for_subscriber": true})
    };
    let engine = match engine {
        Engine::Memory => json!({"type": "memory"}),
        Engine::Nats {
            url,
            heartbeat,
            node_timeout,
        } => json!({"type": "nats", "nats": {"url": url, "prefix": "bench",
                "heartbeat_interval": heartbeat, "node_timeout": node_timeout}}),
    };
    json!({
        "http_server": {"address": "127.0.0.1", "port": port},
        "http_api": {"key": API_KEY},
        "client": {
            "token": {"hmac_secret_key": SECRET},
            "channel_limit": 100000,
            "connection_limit": 0
        },
        "channel": {"namespaces": [ns("chat", true, true), ns("ev", true, false), ns("pres", false, false)]},
        "engine": engine,
        "node": {"name": name},
        "shutdown": {"timeout": "2s"},
        "log": {"level": "warn"}
    })
}

/// A connection token for `user` with a small `info` (it becomes `conn_info` in presence).
pub fn token(user: &str) -> String {
    let claims = json!({"sub": user, "info": {"name": format!("User {user}")}});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).expect("hmac key"),
    )
    .expect("sign token")
}

/// A running child server (rollcall or a baseline), killed on drop.
pub struct Server {
    child: Option<Child>,
    /// `perf record` attached to the child when `$BENCH_PERF` names a directory.
    perf: Option<Child>,
    pub addr: SocketAddr,
    pub name: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
    /// When the process was spawned.
    pub spawned: Instant,
}

impl Server {
    /// Starts `rollcall serve` with `engine` on a free port and waits for `/health`.
    pub async fn rollcall(bin: &Path, name: &str, engine: &Engine) -> anyhow::Result<Server> {
        let s = Self::spawn_rollcall(bin, name, engine)?;
        s.wait_http("/health", Duration::from_secs(20)).await?;
        Ok(s)
    }

    /// Spawns `rollcall serve` without waiting (the caller times the start-up).
    pub fn spawn_rollcall(bin: &Path, name: &str, engine: &Engine) -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let path = dir.path().join("rollcall.json");
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&config(port, name, engine))?,
        )?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve").arg("--config").arg(&path);
        let mut s = Self::spawn(cmd, dir, port, name)?;
        s.perf = attach_perf(&s);
        Ok(s)
    }

    /// Starts this binary's `static-serve` on the files of `files_dir`.
    pub async fn static_endpoint(files_dir: &Path) -> anyhow::Result<Server> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("static-serve").arg("--dir").arg(files_dir);
        Self::start_baseline(cmd, "static-axum").await
    }

    /// Starts this binary's bare WebSocket server.
    pub async fn bare_ws() -> anyhow::Result<Server> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("ws-serve");
        Self::start_baseline(cmd, "bare-ws").await
    }

    async fn start_baseline(mut cmd: Command, name: &str) -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        cmd.env("BENCH_PORT", port.to_string());
        let s = Self::spawn(cmd, dir, port, name)?;
        s.wait_http("/health", Duration::from_secs(20)).await?;
        Ok(s)
    }

    fn spawn(
        mut cmd: Command,
        dir: tempfile::TempDir,
        port: u16,
        name: &str,
    ) -> anyhow::Result<Server> {
        let log = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&log)?;
        let spawned = Instant::now();
        let child = cmd
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("cannot spawn a server process")?;
        Ok(Server {
            child: Some(child),
            perf: None,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            name: name.to_string(),
            log,
            _dir: dir,
            spawned,
        })
    }

    /// Polls `GET path` every 2 ms until it answers 200; returns when it did.
    pub async fn wait_http(&self, path: &str, within: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(200) = http::get_status(self.addr, path).await {
                return Ok(Instant::now());
            }
            if let Some(status) = self.exited() {
                bail!(
                    "{} exited with {status} before {path} answered 200; stderr:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: {path} not 200 within {within:?}; stderr:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Stops `perf record` with SIGINT so that it writes its data, and waits for it.
    fn stop_perf(&mut self) {
        if let Some(mut perf) = self.perf.take() {
            let _ = Command::new("kill")
                .arg("-INT")
                .arg(perf.id().to_string())
                .status();
            let _ = perf.wait();
        }
    }

    fn exited(&self) -> Option<String> {
        // try_wait needs &mut; peek at /proc instead to keep this &self.
        let pid = self.pid()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat[stat.rfind(')')? + 2..].chars().next()?;
        (state == 'Z' || state == 'X').then(|| "exit".to_string())
    }

    /// The last lines of the process's stderr.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/connection/websocket", self.addr)
    }

    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        self.pid()
            .and_then(machine::rss_kib)
            .with_context(|| format!("cannot read VmRSS of {}", self.name))
    }

    pub fn cpu_time(&self) -> Duration {
        self.pid().and_then(machine::cpu_time).unwrap_or_default()
    }

    /// SIGKILL; returns the instant just before the signal was sent.
    pub fn kill9(&mut self) -> Instant {
        self.stop_perf();
        let t = Instant::now();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        t
    }

    /// SIGTERM and wait for the exit (graceful: peers drop this node at once).
    pub fn terminate(&mut self) {
        self.stop_perf();
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_perf();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// With `$BENCH_PERF=<dir>`, profiles a rollcall node: `perf record -g` attached to it,
/// writing `<dir>/perf-<name>-<pid>.data` (read it with `perf report -i`).
fn attach_perf(server: &Server) -> Option<Child> {
    let dir = std::env::var_os("BENCH_PERF")?;
    let pid = server.pid()?;
    let _ = std::fs::create_dir_all(&dir);
    let out = Path::new(&dir).join(format!("perf-{}-{pid}.data", server.name));
    let child = Command::new("perf")
        .args(["record", "-g", "-F", "999", "-p", &pid.to_string(), "-o"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match child {
        Ok(c) => {
            eprintln!("   perf record → {}", out.display());
            Some(c)
        }
        Err(e) => {
            eprintln!("   warning: cannot run perf: {e}");
            None
        }
    }
}
