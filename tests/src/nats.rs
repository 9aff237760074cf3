//! A real `nats-server` for tests: started on a free port, killed on drop, restartable on the
//! same port (to test NATS restarts).
//!
//! Only std is used, so the server crate's tests can include this file with
//! `#[path = "../../../tests/src/nats.rs"] mod nats_server;` without depending on this crate.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started server has to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `nats-server -a 127.0.0.1 -p <port>` child process.
pub struct NatsServer {
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl NatsServer {
    /// Starts a server on a free port and waits until it accepts connections.
    ///
    /// Panics with installation instructions when `nats-server` is missing.
    pub fn start() -> NatsServer {
        let bin = find_binary();
        // A free port can be taken by someone else before the server binds it: retry.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut server = NatsServer {
                bin: bin.clone(),
                port,
                child: None,
                log: std::env::temp_dir()
                    .join(format!("rollcall-nats-{}-{port}.log", std::process::id())),
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("nats-server did not start on any of 5 free ports; last error: {last_error}");
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Kills the server (SIGKILL, like a crash) and waits for it to exit. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (killing it first if it runs) and waits until
    /// it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        // The old socket may linger for a moment after the kill.
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!("nats-server did not restart on port {}: {e}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(&self.log)
            .map_err(|e| format!("cannot create {}: {e}", self.log.display()))?;
        let mut child = Command::new(&self.bin)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                return Err(format!("nats-server exited with {status}: {log}"));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "nats-server did not accept connections on {addr} within {START_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// `$NATS_SERVER` if set, else `nats-server` on PATH, else the Debian package's location.
fn find_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER") {
        let bin = PathBuf::from(bin);
        assert!(
            is_executable(&bin),
            "NATS_SERVER={} is not an executable file; unset it to use nats-server from PATH \
             (install with `apt-get install nats-server`)",
            bin.display()
        );
        return bin;
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("nats-server"))
        .find(|p| is_executable(p));
    on_path.unwrap_or_else(|| {
        panic!(
            "nats-server not found: the cluster tests need a real NATS server.\n\
             Install it with `apt-get install nats-server` (Debian/Ubuntu), or run \
             `make tools-nats`, or set NATS_SERVER=/path/to/nats-server."
        )
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free local port")
}
