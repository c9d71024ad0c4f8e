//! The benchmark's charts (docs/src/benchmarks.md shows them): SVG drawn with plotters from the
//! typed records ([`Recorded`]) alone, so the same records always give the same files. No
//! fonts are read: the SVG names its text and the browser sets it.

use crate::record::{FleetRate, GroupRun, Recorded, Strategy, Tool, TpsLine, WindowSamples};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

const SIZE: (u32, u32) = (860, 460);
const FONT: &str = "sans-serif";

/// Why a chart could not be drawn.
#[derive(Debug, PartialEq)]
pub enum ChartError {
    /// A series the chart compares is not in the records (its part did not run, or not fully).
    Missing { chart: &'static str, series: String },
    /// plotters refused (a range or an element it cannot draw).
    Draw { chart: &'static str, reason: String },
}

impl std::fmt::Display for ChartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChartError::Missing { chart, series } => write!(
                f,
                "chart {chart}: no {series} in the records; run the part that measures it \
                 (tests/bench/run --parts …) before drawing"
            ),
            ChartError::Draw { chart, reason } => write!(f, "chart {chart}: {reason}"),
        }
    }
}

type Drawn = Result<String, ChartError>;

/// One chart: its file name and how it is drawn.
pub struct Chart {
    pub file: &'static str,
    pub draw: fn(&Recorded) -> Drawn,
}

pub const CHARTS: [Chart; 5] = [
    Chart {
        file: "tps-around-snapshot.svg",
        draw: tps_near,
    },
    Chart {
        file: "tps-offline.svg",
        draw: tps_offline,
    },
    Chart {
        file: "frozen-windows.svg",
        draw: windows,
    },
    Chart {
        file: "fleet-api-rate.svg",
        draw: fleet_rate,
    },
    Chart {
        file: "group-windows.svg",
        draw: groups,
    },
];

/// Draws every chart whose records are there into `dir`: the files written, and why each
/// other one was not.
pub fn draw_all(records: &Recorded, dir: &Path) -> (Vec<PathBuf>, Vec<ChartError>) {
    let (mut written, mut skipped) = (Vec::new(), Vec::new());
    for chart in &CHARTS {
        match (chart.draw)(records) {
            Ok(svg) => {
                let path = dir.join(chart.file);
                std::fs::write(&path, svg).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                written.push(path);
            }
            Err(e) => skipped.push(e),
        }
    }
    (written, skipped)
}

fn palette(i: usize) -> RGBColor {
    [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0x94, 0x67, 0xbd),
    ][i % 4]
}

fn draw_err(chart: &'static str) -> impl Fn(String) -> ChartError {
    move |reason| ChartError::Draw { chart, reason }
}

/// Runs `body` on an SVG drawing area and returns the SVG.
fn svg(
    chart: &'static str,
    body: impl FnOnce(&DrawingArea<SVGBackend, plotters::coord::Shift>) -> Result<(), String>,
) -> Drawn {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| e.to_string())
            .map_err(draw_err(chart))?;
        body(&root).map_err(draw_err(chart))?;
        root.present()
            .map_err(|e| e.to_string())
            .map_err(draw_err(chart))?;
    }
    Ok(out)
}

fn e<T: std::fmt::Display>(e: T) -> String {
    e.to_string()
}

/// Each strategy's line, in the order of [`Strategy::ALL`]; every one must be there.
fn tps_lines<'a>(records: &'a Recorded, chart: &'static str) -> Result<Vec<&'a TpsLine>, ChartError> {
    Strategy::ALL
        .iter()
        .map(|s| {
            records
                .tps
                .iter()
                .find(|l| l.strategy == *s && !l.tps.is_empty())
                .ok_or(ChartError::Missing {
                    chart,
                    series: format!("TPS line for {}", s.label()),
                })
        })
        .collect()
}

fn tps_near(records: &Recorded) -> Drawn {
    tps_chart(records, "tps-around-snapshot", None)
}

fn tps_offline(records: &Recorded) -> Drawn {
    let lines = tps_lines(records, "tps-offline")?;
    let longest = lines
        .iter()
        .map(|l| l.start_ms + l.bin_ms * l.tps.len() as f64)
        .fold(0.0, f64::max);
    tps_chart(records, "tps-offline", Some(longest / 1e3))
}

/// PostgreSQL's TPS against seconds from the snapshot's start: to 3 s (the live strategies),
/// or to `until` s (the whole offline outage).
fn tps_chart(records: &Recorded, chart: &'static str, until: Option<f64>) -> Drawn {
    let lines = tps_lines(records, chart)?;
    let from = lines
        .iter()
        .map(|l| l.start_ms / 1e3)
        .fold(0.0, f64::min)
        .max(-1.5);
    let to = until.unwrap_or(3.0);
    let top = lines
        .iter()
        .flat_map(|l| l.tps.iter().copied())
        .fold(1.0, f64::max)
        * 1.15;
    let caption = match until {
        None => "PostgreSQL TPS around one snapshot (pgbench, 100 ms bins)",
        Some(_) => "PostgreSQL TPS around one snapshot, the whole offline outage",
    };
    svg(chart, |root| {
        let mut c = ChartBuilder::on(root)
            .caption(caption, (FONT, 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(from..to, 0.0..top)
            .map_err(e)?;
        c.configure_mesh()
            .x_desc("seconds from the snapshot's start")
            .y_desc("transactions per second")
            .draw()
            .map_err(e)?;
        for (i, line) in lines.iter().enumerate() {
            let color = palette(i);
            let points = line.tps.iter().enumerate().map(|(k, tps)| {
                let mid = (line.start_ms + line.bin_ms * (k as f64 + 0.5)) / 1e3;
                (mid, *tps)
            });
            let points: Vec<(f64, f64)> = points.filter(|(x, _)| *x >= from && *x <= to).collect();
            c.draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(e)?
                .label(format!(
                    "{} ({:.1} s)",
                    line.strategy.label(),
                    line.snapshot_ms / 1e3
                ))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        legend(&mut c, SeriesLabelPosition::LowerRight)
    })
}

fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    c: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    c.configure_series_labels()
        .position(position)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(e)
}

/// Every frozen window, per dirty size (one column each) and tool (side by side), with each
/// set's median as a bar.
fn windows(records: &Recorded) -> Drawn {
    const CHART: &str = "frozen-windows";
    let mut sizes: Vec<u64> = records.windows.iter().map(|w| w.dirty_mib).collect();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.is_empty() {
        return Err(ChartError::Missing {
            chart: CHART,
            series: "frozen windows".into(),
        });
    }
    let mut sets: Vec<Vec<&WindowSamples>> = Vec::new();
    for tool in Tool::ALL {
        let of_tool = sizes.iter().map(|mib| {
            records
                .windows
                .iter()
                .find(|w| w.tool == tool && w.dirty_mib == *mib && !w.frozen_ms.is_empty())
                .ok_or(ChartError::Missing {
                    chart: CHART,
                    series: format!("frozen windows of {} at {mib} MiB dirty", tool.label()),
                })
        });
        sets.push(of_tool.collect::<Result<_, _>>()?);
    }
    let top = records
        .windows
        .iter()
        .flat_map(|w| w.frozen_ms.iter().copied())
        .fold(1.0, f64::max)
        * 1.1;
    let n = sizes.len() as f64;
    svg(CHART, |root| {
        let mut c = ChartBuilder::on(root)
            .caption(
                "Frozen window of every snapshot, by dirty data before it",
                (FONT, 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5..n - 0.5, 0.0..top)
            .map_err(e)?;
        let label = |x: &f64| {
            let i = x.round();
            match sizes.get(i as usize) {
                Some(mib) if (x - i).abs() < 1e-9 && i >= 0.0 => format!("{mib} MiB dirty"),
                _ => String::new(),
            }
        };
        c.configure_mesh()
            .disable_x_mesh()
            .x_labels(sizes.len())
            .x_label_formatter(&label)
            .y_desc("frozen window, ms (first FIFREEZE to last FITHAW)")
            .draw()
            .map_err(e)?;
        for (t, tool) in Tool::ALL.iter().enumerate() {
            let color = palette(t);
            let offset = if t == 0 { -0.17 } else { 0.17 };
            let points = sets[t]
                .iter()
                .enumerate()
                .flat_map(|(i, set)| set.frozen_ms.iter().map(move |ms| (i as f64 + offset, *ms)));
            c.draw_series(points.map(|p| Circle::new(p, 3, color.mix(0.6).filled())))
                .map_err(e)?
                .label(tool.label())
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
            let medians = sets[t].iter().enumerate().map(|(i, set)| {
                let m = median(&set.frozen_ms);
                let x = i as f64 + offset;
                PathElement::new(vec![(x - 0.12, m), (x + 0.12, m)], color.stroke_width(3))
            });
            c.draw_series(medians).map_err(e)?;
        }
        legend(&mut c, SeriesLabelPosition::UpperLeft)
    })
}

fn median(values: &[f64]) -> f64 {
    crate::percentile(values, 50.0)
}

/// The fleet's calls in the last minute, over the run, against the token's limit.
fn fleet_rate(records: &Recorded) -> Drawn {
    const CHART: &str = "fleet-api-rate";
    let rate: &FleetRate = records
        .fleet_rate
        .as_ref()
        .filter(|r| !r.calls_last_minute.is_empty())
        .ok_or(ChartError::Missing {
            chart: CHART,
            series: "fleet API calls".into(),
        })?;
    let minutes = rate.calls_last_minute.len() as f64 * rate.step_s / 60.0;
    let most = rate.calls_last_minute.iter().copied().max().unwrap_or(0);
    let top = most.max(rate.limit_per_minute) as f64 * 1.2;
    let caption = format!("A fleet of {} Droplets: API calls per minute", rate.droplets);
    svg(CHART, |root| {
        let mut c = ChartBuilder::on(root)
            .caption(caption, (FONT, 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..minutes, 0.0..top)
            .map_err(e)?;
        c.configure_mesh()
            .x_desc("minutes from the start of the run")
            .y_desc("calls in the minute before")
            .draw()
            .map_err(e)?;
        let limit = rate.limit_per_minute as f64;
        let red = palette(1);
        c.draw_series(LineSeries::new(
            [(0.0, limit), (minutes, limit)],
            red.stroke_width(2),
        ))
        .map_err(e)?
        .label(format!("the token's limit, {} a minute", rate.limit_per_minute))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red.stroke_width(2)));
        let points = rate
            .calls_last_minute
            .iter()
            .enumerate()
            .map(|(i, n)| ((i + 1) as f64 * rate.step_s / 60.0, *n as f64));
        let blue = palette(0);
        c.draw_series(LineSeries::new(points, blue.stroke_width(2)))
            .map_err(e)?
            .label("calls made (freezeframe --tag … snapshot)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2)));
        legend(&mut c, SeriesLabelPosition::LowerRight)
    })
}

/// Each group size (and whether the kernel's grace periods were expedited throughout): every
/// member's window, and each group's slowest request, the floor the windows cannot go under.
fn groups(records: &Recorded) -> Drawn {
    const CHART: &str = "group-windows";
    let mut kinds: Vec<(usize, bool)> = records
        .groups
        .iter()
        .map(|g| (g.members, g.rcu_knob_held))
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    if kinds.is_empty() || records.groups.iter().any(|g| g.windows_ms.is_empty()) {
        return Err(ChartError::Missing {
            chart: CHART,
            series: "group members' windows".into(),
        });
    }
    let top = records
        .groups
        .iter()
        .flat_map(|g| g.windows_ms.iter().copied())
        .fold(1.0, f64::max)
        * 1.1;
    let bottom = records
        .groups
        .iter()
        .map(|g| g.slowest_request_ms)
        .fold(top, f64::min)
        * 0.9;
    let n = kinds.len() as f64;
    svg(CHART, |root| {
        let mut c = ChartBuilder::on(root)
            .caption(
                "Consistency groups: members' windows against the slowest request",
                (FONT, 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5..n - 0.5, bottom..top)
            .map_err(e)?;
        let label = |x: &f64| {
            let i = x.round();
            match kinds.get(i as usize) {
                Some((m, held)) if (x - i).abs() < 1e-9 && i >= 0.0 => {
                    format!("{m} members{}", if *held { ", expedited" } else { "" })
                }
                _ => String::new(),
            }
        };
        c.configure_mesh()
            .disable_x_mesh()
            .x_labels(kinds.len())
            .x_label_formatter(&label)
            .y_desc("ms")
            .draw()
            .map_err(e)?;
        let at = |g: &GroupRun| {
            kinds
                .iter()
                .position(|k| *k == (g.members, g.rcu_knob_held))
                .unwrap_or(0) as f64
        };
        let blue = palette(0);
        let windows = records.groups.iter().flat_map(|g| {
            let x = at(g) - 0.12;
            g.windows_ms
                .iter()
                .map(move |ms| Circle::new((x, *ms), 2, blue.mix(0.5).filled()))
        });
        c.draw_series(windows)
            .map_err(e)?
            .label("a member's frozen window")
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, blue.filled()));
        let red = palette(1);
        let slowest = records.groups.iter().map(|g| {
            let x = at(g) + 0.12;
            let y = g.slowest_request_ms;
            PathElement::new(vec![(x - 0.08, y), (x + 0.08, y)], red.stroke_width(2))
        });
        c.draw_series(slowest)
            .map_err(e)?
            .label("its group's slowest API request")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red.stroke_width(2)));
        legend(&mut c, SeriesLabelPosition::UpperLeft)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{FleetRate, GroupRun, TpsLine, WindowSamples};

    fn fixture() -> Recorded {
        let line = |strategy, dip: usize| TpsLine {
            strategy,
            start_ms: -1500.0,
            bin_ms: 100.0,
            tps: (0..60)
                .map(|i| if (15..15 + dip).contains(&i) { 0.0 } else { 2900.0 })
                .collect(),
            snapshot_ms: dip as f64 * 100.0,
        };
        Recorded {
            conditions: Vec::new(),
            tps: vec![
                line(Strategy::Freezeframe, 3),
                line(Strategy::FsfreezeScript, 4),
                line(Strategy::StopService, 6),
                line(Strategy::Offline, 40),
            ],
            windows: [0, 256]
                .into_iter()
                .flat_map(|mib| {
                    Tool::ALL.map(|tool| WindowSamples {
                        tool,
                        dirty_mib: mib,
                        frozen_ms: vec![301.0, 305.5, 340.2],
                    })
                })
                .collect(),
            fleet_rate: Some(FleetRate {
                droplets: 100,
                limit_per_minute: 250,
                step_s: 5.0,
                calls_last_minute: vec![10, 80, 150, 200, 210, 205],
            }),
            groups: vec![GroupRun {
                members: 2,
                rcu_knob_held: true,
                windows_ms: vec![306.0, 318.0],
                slowest_request_ms: 302.4,
            }],
        }
    }

    #[test]
    fn every_chart_draws_from_complete_records_and_names_its_series() {
        let records = fixture();
        for chart in &CHARTS {
            let svg = (chart.draw)(&records).unwrap_or_else(|e| panic!("{}: {e}", chart.file));
            assert!(
                svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
                "{}",
                chart.file
            );
        }
        let tps = tps_near(&records).unwrap();
        for s in Strategy::ALL {
            assert!(tps.contains(s.label()), "the TPS legend names {}", s.label());
        }
        let windows = windows(&records).unwrap();
        for tool in Tool::ALL {
            assert!(
                windows.contains(tool.label()),
                "the windows' legend names {}",
                tool.label()
            );
        }
        // Every sample is a point: 2 sizes × 2 tools × 3 windows, and one per legend entry.
        assert_eq!(windows.matches("<circle").count(), 12 + 2);
        assert!(fleet_rate(&records).unwrap().contains("limit, 250 a minute"));
    }

    #[test]
    fn a_missing_series_is_an_error_naming_it() {
        let mut records = fixture();
        records.tps.retain(|l| l.strategy != Strategy::Offline);
        let err = tps_near(&records).unwrap_err();
        assert!(
            matches!(&err, ChartError::Missing { series, .. } if series.contains("--offline")),
            "{err}"
        );
        let mut records = fixture();
        records
            .windows
            .retain(|w| !(w.tool == Tool::FsfreezeScript && w.dirty_mib == 256));
        assert!(matches!(windows(&records), Err(ChartError::Missing { .. })));
        records.fleet_rate = None;
        records.groups.clear();
        assert!(fleet_rate(&records).is_err() && groups(&records).is_err());
    }

    #[test]
    fn the_same_records_draw_the_same_files() {
        let records = fixture();
        for chart in &CHARTS {
            assert_eq!((chart.draw)(&records), (chart.draw)(&records), "{}", chart.file);
        }
    }

    /// The charts in docs/src/charts are what their committed records draw with this code.
    #[test]
    fn the_committed_charts_are_their_records_drawn() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/src/charts");
        let records = Recorded::load(&dir).unwrap();
        assert!(!records.tps.is_empty(), "{}: no records", dir.display());
        for chart in &CHARTS {
            let drawn = (chart.draw)(&records).unwrap_or_else(|e| panic!("{e}"));
            let committed = std::fs::read_to_string(dir.join(chart.file))
                .unwrap_or_else(|e| panic!("{}: {e}", chart.file));
            assert!(
                drawn == committed,
                "docs/src/charts/{} is not what its records draw: run \
                 `target/release/freezeframe-bench --redraw docs/src/charts` and commit",
                chart.file
            );
        }
    }
}
