//! Charts as PNG: `latency.png` (percentile spectra of propagation, presence and churn, and
//! leave delivery after a crash) and `memory.png` (RSS while clients are added).
//!
//! Text is drawn with `ab_glyph` from a TrueType file read at run time (`$BENCH_FONT`, else
//! DejaVu/Liberation/Noto in the usual Debian places: package `fonts-dejavu-core`). Without
//! one, the charts are drawn without any text (axes, grid and lines only) and a warning says so.

use std::error::Error;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::{Chart, Report, Series};

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type Res = Result<(), Box<dyn Error>>;

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
];

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// Registers a font for "sans-serif"; false if none could be loaded.
fn load_font() -> bool {
    // `BENCH_FONT=none` draws without text (and tests that path).
    if std::env::var_os("BENCH_FONT").is_some_and(|f| f == "none") {
        return false;
    }
    let candidates = std::env::var_os("BENCH_FONT")
        .map(PathBuf::from)
        .into_iter()
        .chain(FONT_PATHS.iter().map(PathBuf::from));
    for path in candidates {
        if let Ok(bytes) = std::fs::read(&path) {
            // The font table wants 'static bytes; one font per process run.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

/// Draws every chart the report has data for; returns one line per file (or problem).
pub fn draw(report: &Report, out: &Path) -> Vec<String> {
    let text = load_font();
    let mut notes = Vec::new();
    if !text {
        notes.push(
            "warning: no TrueType font found (set BENCH_FONT or install fonts-dejavu-core): charts have no text"
                .to_string(),
        );
    }
    let has = |c: Chart| report.series.iter().any(|s| s.chart == c);
    if [
        Chart::Propagation,
        Chart::Presence,
        Chart::Churn,
        Chart::Crash,
    ]
    .iter()
    .any(|&c| has(c))
    {
        let path = out.join("latency.png");
        match latency(report, &path, text) {
            Ok(()) => notes.push(format!("wrote {}", path.display())),
            Err(e) => notes.push(format!("could not draw {}: {e}", path.display())),
        }
    }
    if has(Chart::Memory) {
        let path = out.join("memory.png");
        match memory(report, &path, text) {
            Ok(()) => notes.push(format!("wrote {}", path.display())),
            Err(e) => notes.push(format!("could not draw {}: {e}", path.display())),
        }
    }
    notes
}

fn of(report: &Report, chart: Chart) -> Vec<&Series> {
    report.series.iter().filter(|s| s.chart == chart).collect()
}

fn latency(report: &Report, path: &Path, text: bool) -> Res {
    let root = BitMapBackend::new(path, (1600, 1200)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((2, 2));
    spectrum(
        &panels[0],
        "cross-node join propagation (dashed: raw NATS)",
        &of(report, Chart::Propagation),
        text,
    )?;
    spectrum(
        &panels[1],
        "HTTP presence (dashed: static endpoint)",
        &of(report, Chart::Presence),
        text,
    )?;
    spectrum(
        &panels[2],
        "churn command latency (dashed: ping)",
        &of(report, Chart::Churn),
        text,
    )?;
    crash(&panels[3], &of(report, Chart::Crash), text)?;
    root.present()?;
    Ok(())
}

/// `x` on the spectrum axis (−log10(1 − q)) as a percentile.
fn percentile_label(x: f64) -> String {
    let q = 100.0 * (1.0 - 10f64.powf(-x));
    let digits = (x.round() as usize).saturating_sub(2).min(4);
    format!("{q:.digits$}%")
}

/// Latency by percentile, the tail stretched: x = −log10(1 − q), y = ms on a log scale.
fn spectrum(area: &Area<'_>, title: &str, series: &[&Series], text: bool) -> Res {
    let lines: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .filter(|(_, q)| *q < 0.99995)
                .map(|&(ms, q)| (-(1.0 - q).log10(), ms.max(0.001)))
                .collect()
        })
        .collect();
    let ys = lines.iter().flatten().map(|p| p.1);
    let ymin = ys.clone().fold(f64::INFINITY, f64::min);
    let ymax = ys.fold(0.0, f64::max);
    let (ymin, ymax) = if ymin.is_finite() && ymax > 0.0 {
        (ymin * 0.8, ymax * 1.25)
    } else {
        (0.01, 10.0)
    };
    let mut b = ChartBuilder::on(area);
    b.margin(15);
    if text {
        b.caption(title, ("sans-serif", 22))
            .x_label_area_size(40)
            .y_label_area_size(60);
    } else {
        b.x_label_area_size(5).y_label_area_size(5);
    }
    let mut chart = b.build_cartesian_2d(0f64..4f64, (ymin..ymax).log_scale())?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("percentile")
            .y_desc("latency (ms)")
            .x_labels(5)
            .x_label_formatter(&|x| percentile_label(*x))
            .y_label_formatter(&|y| format!("{y}"));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw()?;
    draw_lines(&mut chart, series, lines, text)
}

fn draw_lines<'a, X, Y>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>,
    series: &[&Series],
    lines: Vec<Vec<(f64, f64)>>,
    text: bool,
) -> Res
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (i, (s, line)) in series.iter().zip(lines).enumerate() {
        let color = COLORS[i % COLORS.len()];
        let style = color.stroke_width(2);
        let anno = if s.baseline {
            chart.draw_series(DashedLineSeries::new(line, 10, 6, style))?
        } else {
            chart.draw_series(LineSeries::new(line, style))?
        };
        if text {
            anno.label(s.label.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
    }
    if text && !series.is_empty() {
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
    }
    Ok(())
}

fn crash(area: &Area<'_>, series: &[&Series], text: bool) -> Res {
    let xmax = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .filter(|x| x.is_finite())
        .fold(1.0, f64::max)
        * 1.1;
    let mut b = ChartBuilder::on(area);
    b.margin(15);
    if text {
        b.caption(
            "leaves delivered after SIGKILL of a node",
            ("sans-serif", 22),
        )
        .x_label_area_size(40)
        .y_label_area_size(60);
    } else {
        b.x_label_area_size(5).y_label_area_size(5);
    }
    let mut chart = b.build_cartesian_2d(0f64..xmax, 0f64..1.05f64)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("seconds since SIGKILL")
            .y_desc("share of leaves delivered")
            .y_label_formatter(&|y| format!("{:.0}%", y * 100.0));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw()?;
    let lines = series.iter().map(|s| s.points.clone()).collect();
    draw_lines(&mut chart, series, lines, text)
}

fn memory(report: &Report, path: &Path, text: bool) -> Res {
    let series = of(report, Chart::Memory);
    let root = BitMapBackend::new(path, (1100, 650)).into_drawing_area();
    root.fill(&WHITE)?;
    let points = series.iter().flat_map(|s| s.points.iter());
    let xmax = points.clone().map(|p| p.0).fold(1.0, f64::max);
    let ymax = points.map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut b = ChartBuilder::on(&root);
    b.margin(20);
    if text {
        b.caption(
            "server RSS while idle WebSocket clients are added",
            ("sans-serif", 24),
        )
        .x_label_area_size(45)
        .y_label_area_size(70);
    } else {
        b.x_label_area_size(5).y_label_area_size(5);
    }
    let mut chart = b.build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("connected clients (each subscribed to one presence channel)")
            .y_desc("RSS (MiB)")
            .x_label_formatter(&|x| format!("{x:.0}"));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw()?;
    let lines = series.iter().map(|s| s.points.clone()).collect();
    draw_lines(&mut chart, &series, lines, text)?;
    root.present()?;
    Ok(())
}
