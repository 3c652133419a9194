//! `--plot FILE.svg`: latency percentiles (p50, p99, max of each interval) and throughput per
//! interval over time, drawn with plotters' SVG backend.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

/// The figures of one interval.
#[derive(Debug, Clone, Copy)]
pub struct IntervalPoint {
    /// Seconds since the measurement began, at the end of the interval.
    pub t_secs: f64,
    /// Successful requests in the interval (per second when the interval is 1 s).
    pub ops: u64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// One latency line of the plot: its name, colour and figure.
type Series = (&'static str, RGBColor, fn(&IntervalPoint) -> u64);

/// Two panels: latency (ms) on top, throughput (ops/s, intervals of 1 s) below.
pub fn render(path: &Path, points: &[IntervalPoint], title: &str) -> anyhow::Result<()> {
    draw(path, points, title)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("--plot {}: cannot draw the plot", path.display()))
}

fn draw(
    path: &Path,
    points: &[IntervalPoint],
    title: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1000, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(420);
    let t_max = points.iter().map(|p| p.t_secs).fold(1.0, f64::max);
    let ms = |us: u64| us as f64 / 1000.0;
    let lat_max = points.iter().map(|p| ms(p.max_us)).fold(0.001, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&top)
        .caption(format!("{title}: latency per interval"), ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max, 0.0..lat_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("latency (ms)")
        .draw()?;
    let series: [Series; 3] = [
        ("p50", BLUE, |p| p.p50_us),
        ("p99", RED, |p| p.p99_us),
        ("max", BLACK, |p| p.max_us),
    ];
    for (name, color, get) in series {
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.t_secs, ms(get(p)))),
                color,
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    let ops_max = points.iter().map(|p| p.ops).max().unwrap_or(0).max(1) as f64 * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("throughput per interval", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max, 0.0..ops_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("ops/s")
        .draw()?;
    chart.draw_series(LineSeries::new(
        points.iter().map(|p| (p.t_secs, p.ops as f64)),
        GREEN,
    ))?;
    if points.iter().any(|p| p.errors > 0) {
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.t_secs, p.errors as f64)),
                RED,
            ))?
            .label("errors")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    }
    root.present()?;
    Ok(())
}
