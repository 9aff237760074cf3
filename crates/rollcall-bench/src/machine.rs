//! The machine around the numbers: load average, file-descriptor limit, and the RSS and CPU
//! time of a process, read from /proc.

use std::time::Duration;

use serde::Serialize;

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (children inherit it) and
/// returns the limit now in force.
pub fn raise_nofile_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("warning: cannot raise RLIMIT_NOFILE: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(1024)
        }
    }
}

/// The machine's state at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// 1, 5 and 15 minute load averages.
    pub loadavg: [f64; 3],
    pub cpus: usize,
    /// Seconds since boot.
    pub uptime_s: f64,
    /// Share of CPU time not idle over the last ~1 s (0–1), as /proc/stat saw it.
    pub busy: f64,
}

impl Snapshot {
    pub fn now() -> Snapshot {
        let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let mut l = loadavg
            .split_whitespace()
            .take(3)
            .map(|x| x.parse().unwrap_or(0.0));
        let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
        let a = cpu_times();
        std::thread::sleep(Duration::from_millis(1000));
        let b = cpu_times();
        let busy = match (a, b) {
            (Some((ab, at)), Some((bb, bt))) if bt > at => (bb - ab) as f64 / (bt - at) as f64,
            _ => 0.0,
        };
        Snapshot {
            loadavg: [
                l.next().unwrap_or(0.0),
                l.next().unwrap_or(0.0),
                l.next().unwrap_or(0.0),
            ],
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            uptime_s: uptime
                .split_whitespace()
                .next()
                .and_then(|x| x.parse().ok())
                .unwrap_or(0.0),
            busy,
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "load average {:.2} {:.2} {:.2} on {} CPUs, {:.0}% busy over 1 s",
            self.loadavg[0],
            self.loadavg[1],
            self.loadavg[2],
            self.cpus,
            self.busy * 100.0
        )
    }
}

/// (busy, total) jiffies of all CPUs.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    // idle + iowait
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Resident set size of `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// User + system CPU time `pid` consumed so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(Duration::from_millis(ticks * 10))
}
