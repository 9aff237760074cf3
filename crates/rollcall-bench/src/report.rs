//! The report: one row per figure (value, same-run baseline, ratio, target, verdict), the
//! distributions behind them for the charts, and the machine's load around the run.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::machine::Snapshot;

/// What a figure must reach.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
    /// `value / baseline` at least this.
    RatioAtLeast(f64),
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: &'static str,
    pub figure: String,
    pub value: f64,
    pub unit: &'static str,
    pub baseline: Option<f64>,
    /// What the baseline is (in the JSON and the notes under the table).
    pub baseline_label: String,
    pub target: Option<Target>,
    /// Anything a reader needs next to the number (sizes, counts, caveats).
    pub note: String,
}

impl Row {
    pub fn new(
        scenario: &'static str,
        figure: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> Row {
        Row {
            scenario,
            figure: figure.into(),
            value,
            unit,
            baseline: None,
            baseline_label: String::new(),
            target: None,
            note: String::new(),
        }
    }

    pub fn baseline(mut self, value: f64, label: impl Into<String>) -> Row {
        self.baseline = Some(value);
        self.baseline_label = label.into();
        self
    }

    pub fn target(mut self, t: Target) -> Row {
        self.target = Some(t);
        self
    }

    pub fn note(mut self, n: impl Into<String>) -> Row {
        self.note = n.into();
        self
    }

    pub fn ratio(&self) -> Option<f64> {
        self.baseline.filter(|b| *b > 0.0).map(|b| self.value / b)
    }

    /// `None` when there is no target.
    pub fn pass(&self) -> Option<bool> {
        Some(match self.target? {
            Target::AtMost(x) => self.value <= x,
            Target::AtLeast(x) => self.value >= x,
            Target::RatioAtLeast(r) => self.ratio().is_some_and(|q| q >= r),
        })
    }

    fn target_text(&self) -> String {
        match self.target {
            None => "-".into(),
            Some(Target::AtMost(x)) => format!("≤ {}", fmt(x, self.unit)),
            Some(Target::AtLeast(x)) => format!("≥ {}", fmt(x, self.unit)),
            Some(Target::RatioAtLeast(r)) => format!("≥ {:.0}% of baseline", r * 100.0),
        }
    }
}

/// Formats a value with its unit, with as many decimals as the size needs.
pub fn fmt(v: f64, unit: &str) -> String {
    if !v.is_finite() {
        return "never".into();
    }
    let n = if v.abs() >= 1000.0 {
        group(v.round() as i64)
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    if unit.is_empty() {
        n
    } else {
        format!("{n} {unit}")
    }
}

fn group(n: i64) -> String {
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Which chart a series belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chart {
    /// Join propagation latency distributions (x: ms, y: quantile).
    Propagation,
    /// HTTP request latency distributions (x: ms, y: quantile).
    Presence,
    /// Churn command latency distributions (x: ms, y: quantile).
    Churn,
    /// Leaves delivered after a crash (x: s since SIGKILL, y: share delivered).
    Crash,
    /// RSS while connections are added (x: clients, y: MiB).
    Memory,
}

/// A line on a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub chart: Chart,
    pub label: String,
    /// Whether this is a baseline (drawn dashed).
    pub baseline: bool,
    pub points: Vec<(f64, f64)>,
}

/// Quantiles from 0 to 1, denser in the tail, for distribution curves.
pub fn quantile_points(h: &Histogram<u64>, unit_per_ms: f64) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut qs: Vec<f64> = (0..=98).map(|i| i as f64 / 100.0).collect();
    qs.extend([0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0]);
    qs.iter()
        .map(|&q| (h.value_at_quantile(q) as f64 / unit_per_ms, q))
        .collect()
}

/// Everything one run produced.
pub struct Report {
    pub quick: bool,
    pub load_before: Snapshot,
    pub load_after: Option<Snapshot>,
    pub nofile: u64,
    pub rows: Vec<Row>,
    pub series: Vec<Series>,
    pub failures: Vec<(String, String)>,
    pub elapsed: Duration,
}

impl Report {
    pub fn new(quick: bool, load_before: Snapshot, nofile: u64) -> Report {
        Report {
            quick,
            load_before,
            load_after: None,
            nofile,
            rows: Vec::new(),
            series: Vec::new(),
            failures: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    pub fn row(&mut self, row: Row) {
        let verdict = match row.pass() {
            Some(true) => "pass",
            Some(false) => "MISS",
            None => "",
        };
        eprintln!(
            "   {}: {} (baseline {}) {verdict} {}",
            row.figure,
            fmt(row.value, row.unit),
            row.baseline.map_or("-".into(), |b| fmt(b, row.unit)),
            row.note
        );
        self.rows.push(row);
    }

    pub fn series(
        &mut self,
        chart: Chart,
        label: impl Into<String>,
        baseline: bool,
        points: Vec<(f64, f64)>,
    ) {
        self.series.push(Series {
            chart,
            label: label.into(),
            baseline,
            points,
        });
    }

    pub fn failure(&mut self, scenario: &str, error: String) {
        self.failures.push((scenario.to_string(), error));
    }

    pub fn finish(&mut self, after: Snapshot, elapsed: Duration) {
        self.load_after = Some(after);
        self.elapsed = elapsed;
    }

    /// The table, the baselines' meaning, the failures and the machine's load.
    pub fn table(&self) -> String {
        let header = ["figure", "value", "baseline", "ratio", "target", "result"];
        let cells: Vec<[String; 6]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.figure.clone(),
                    fmt(r.value, r.unit),
                    r.baseline.map_or("-".into(), |b| fmt(b, r.unit)),
                    r.ratio()
                        .filter(|q| q.is_finite())
                        .map_or("-".into(), |q| format!("{q:.2}×")),
                    r.target_text(),
                    match r.pass() {
                        Some(true) => "pass".into(),
                        Some(false) => "MISS".into(),
                        None => "-".into(),
                    },
                ]
            })
            .collect();
        let mut width = header.map(|h| h.chars().count());
        for c in &cells {
            for (w, s) in width.iter_mut().zip(c) {
                *w = (*w).max(s.chars().count());
            }
        }
        let line = |c: &[String]| {
            let mut s = String::from("|");
            for (i, (cell, w)) in c.iter().zip(width).enumerate() {
                let pad = w - cell.chars().count();
                if i == 0 {
                    s.push_str(&format!(" {cell}{} |", " ".repeat(pad)));
                } else {
                    s.push_str(&format!(" {}{cell} |", " ".repeat(pad)));
                }
            }
            s.push('\n');
            s
        };
        let mut out = String::from("\n");
        out.push_str(&line(&header.map(String::from)));
        out.push_str(&line(&width.map(|w| "-".repeat(w))));
        for c in &cells {
            out.push_str(&line(c));
        }
        out.push_str("\nbaselines and notes:\n");
        for r in &self.rows {
            if !r.baseline_label.is_empty() || !r.note.is_empty() {
                let b = if r.baseline_label.is_empty() {
                    String::new()
                } else {
                    format!("baseline = {}", r.baseline_label)
                };
                let sep = if b.is_empty() || r.note.is_empty() {
                    ""
                } else {
                    "; "
                };
                out.push_str(&format!("  {}: {b}{sep}{}\n", r.figure, r.note));
            }
        }
        for (s, e) in &self.failures {
            out.push_str(&format!("FAILED scenario {s}: {e}\n"));
        }
        let met = self.rows.iter().filter(|r| r.pass() == Some(true)).count();
        let missed = self.rows.iter().filter(|r| r.pass() == Some(false)).count();
        out.push_str(&format!(
            "\ntargets: {met} met, {missed} missed; {} mode, {:.0} s; RLIMIT_NOFILE {}\n",
            if self.quick { "quick" } else { "full" },
            self.elapsed.as_secs_f64(),
            self.nofile
        ));
        out.push_str(&format!("machine before: {}\n", self.load_before.summary()));
        if let Some(a) = &self.load_after {
            out.push_str(&format!("machine after:  {}\n", a.summary()));
        }
        out
    }

    /// The report without the distributions: small enough to commit (docs/bench/).
    pub fn summary_json(&self) -> Value {
        let mut v = self.to_json();
        if let Some(o) = v.as_object_mut() {
            o.remove("series");
        }
        v
    }

    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "scenario": r.scenario,
                    "figure": r.figure,
                    "value": r.value,
                    "unit": r.unit,
                    "baseline": r.baseline,
                    "baseline_label": r.baseline_label,
                    "ratio": r.ratio(),
                    "target": r.target_text(),
                    "pass": r.pass(),
                    "note": r.note,
                })
            })
            .collect();
        let series: Vec<Value> = self
            .series
            .iter()
            .map(|s| {
                json!({
                    "chart": format!("{:?}", s.chart).to_lowercase(),
                    "label": s.label,
                    "baseline": s.baseline,
                    "points": s.points,
                })
            })
            .collect();
        json!({
            "mode": if self.quick { "quick" } else { "full" },
            "elapsed_s": self.elapsed.as_secs_f64(),
            "machine": {
                "before": self.load_before,
                "after": self.load_after,
                "nofile_limit": self.nofile,
                "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
                "cpu": cpu_model(),
            },
            "commit": commit(),
            "rows": rows,
            "failures": self.failures.iter().map(|(s, e)| json!({"scenario": s, "error": e})).collect::<Vec<_>>(),
            "series": series,
        })
    }
}

/// `git describe --always --dirty` of the tree the bench runs in, if it is a git checkout.
fn commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_magnitude_with_grouping() {
        assert_eq!(fmt(0.2391, "ms"), "0.239 ms");
        assert_eq!(fmt(8.62, "ms"), "8.62 ms");
        assert_eq!(fmt(41.7, "ms"), "41.7 ms");
        assert_eq!(fmt(108_067.4, "req/s"), "108 067 req/s");
        assert_eq!(fmt(10_000.0, ""), "10 000");
        assert_eq!(fmt(f64::INFINITY, "s"), "never");
    }

    #[test]
    fn verdicts_follow_targets() {
        let r = Row::new("x", "f", 2.0, "ms");
        assert_eq!(r.pass(), None);
        assert_eq!(r.clone().target(Target::AtMost(2.0)).pass(), Some(true));
        assert_eq!(r.clone().target(Target::AtLeast(2.5)).pass(), Some(false));
        let r = r.baseline(5.0, "b").target(Target::RatioAtLeast(0.5));
        assert_eq!(r.ratio(), Some(0.4));
        assert_eq!(r.pass(), Some(false));
        // No baseline: a ratio target cannot pass.
        let r = Row::new("x", "f", 2.0, "").target(Target::RatioAtLeast(0.5));
        assert_eq!(r.pass(), Some(false));
    }

    #[test]
    fn quantile_points_cover_the_tail() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 1_000_000, 3).unwrap();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let p = quantile_points(&h, 1000.0);
        assert_eq!(p.first().unwrap().1, 0.0);
        assert_eq!(p.last().unwrap(), &(h.max() as f64 / 1000.0, 1.0));
        assert!(p.iter().any(|&(_, q)| q == 0.999));
        assert!(p.windows(2).all(|w| w[0].0 <= w[1].0));
    }
}
