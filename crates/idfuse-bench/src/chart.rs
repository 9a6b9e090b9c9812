//! The report as a PNG bar chart: one group per workload, one bar per
//! target, each bar the median relative to native (native = 1.0; kernel
//! overlayfs for the overlay group) so that
//! workloads with different units share one axis; whiskers show min–max.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

use crate::{Figure, Report};

/// Chart size in pixels.
const SIZE: (u32, u32) = (1600, 900);

/// The family name text is drawn with; [`load_fonts`] registers it.
const FAMILY: &str = "sans-serif";

/// TrueType fonts tried in order: (regular, bold), from Debian packages.
const FONTS: &[(&str, &str, &str)] = &[
    (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
        "fonts-dejavu-core",
    ),
    (
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf",
        "fonts-liberation",
    ),
];

/// Bar colours, picked by the target's position; native is always grey.
const COLOURS: &[RGBColor] = &[
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
    RGBColor(31, 60, 100),
    RGBColor(174, 199, 232),
    RGBColor(255, 187, 120),
    RGBColor(152, 223, 138),
];
const NATIVE: RGBColor = RGBColor(127, 127, 127);

/// Reads a font file for the rest of the process: plotters keeps
/// registered fonts as `&'static [u8]`, and we register at most two, once.
fn leak_file(path: &str) -> Option<&'static [u8]> {
    let bytes = std::fs::read(path).ok()?;
    Some(Box::leak(bytes.into_boxed_slice()))
}

/// Registers [`FAMILY`] with plotters once per process; the error says
/// which Debian package brings a font.
fn load_fonts() -> Result<(), String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            for (regular, bold, _) in FONTS {
                let Some(bytes) = leak_file(regular) else {
                    continue;
                };
                if register_font(FAMILY, FontStyle::Normal, bytes).is_err() {
                    continue;
                }
                // Bold is optional: plotters falls back to the normal style.
                if let Some(b) = leak_file(bold) {
                    let _ = register_font(FAMILY, FontStyle::Bold, b);
                }
                return Ok(());
            }
            let tried: Vec<&str> = FONTS.iter().map(|f| f.0).collect();
            Err(format!(
                "no usable TrueType font for the chart (tried {}); install the Debian package {} (scripts/setup.sh does)",
                tried.join(", "),
                FONTS[0].2
            ))
        })
        .clone()
}

/// One bar: a target's median, min and max relative to the reference.
struct Bar {
    slot: usize,
    median: f64,
    min: f64,
    max: f64,
}

/// One group: a workload with its bars and the reference it is scaled by.
struct Group {
    name: String,
    /// "native: 1234 MiB/s", or what stands in for native when it is absent.
    reference: String,
    bars: Vec<Bar>,
}

fn measured(f: &Figure) -> bool {
    f.skipped.is_none() && f.median.is_finite() && f.median > 0.0
}

/// Targets and workloads with at least one figure, in report order, and
/// each workload's bars relative to native (or to the best target of that
/// workload when native was not measured).
fn groups(r: &Report) -> (Vec<String>, Vec<Group>) {
    let mut targets: Vec<String> = Vec::new();
    let mut workloads: Vec<String> = Vec::new();
    for f in r.figures.iter().filter(|f| measured(f)) {
        if !targets.contains(&f.target) {
            targets.push(f.target.clone());
        }
        if !workloads.contains(&f.workload) {
            workloads.push(f.workload.clone());
        }
    }
    let mut out = Vec::new();
    for w in workloads {
        let row: Vec<&Figure> = r
            .figures
            .iter()
            .filter(|f| f.workload == w && measured(f))
            .collect();
        let native = row.iter().find(|f| crate::is_reference(&f.target));
        let (base, reference) = match native {
            Some(n) => (
                n.median,
                format!("{}: {}", n.target, human(n.median, &n.unit)),
            ),
            None => {
                // `row` is non-empty: the workload was listed for a figure.
                let best = row.iter().copied().fold(None::<&Figure>, |a, f| match a {
                    Some(a) if a.median >= f.median => Some(a),
                    _ => Some(f),
                });
                match best {
                    Some(b) => (
                        b.median,
                        format!("no native; 1.0 = {} {}", b.target, human(b.median, &b.unit)),
                    ),
                    None => continue,
                }
            }
        };
        let bars = row
            .iter()
            .filter_map(|f| {
                let slot = targets.iter().position(|t| t == &f.target)?;
                Some(Bar {
                    slot,
                    median: f.median / base,
                    // A report without a spread has min = max = median (or
                    // zeros from an older writer): no whisker then.
                    min: if f.min > 0.0 {
                        f.min / base
                    } else {
                        f.median / base
                    },
                    max: if f.max > 0.0 {
                        f.max / base
                    } else {
                        f.median / base
                    },
                })
            })
            .collect();
        out.push(Group {
            name: w,
            reference,
            bars,
        });
    }
    (targets, out)
}

/// 1234567.8 → "1.23M", with the unit.
fn human(v: f64, unit: &str) -> String {
    let s = if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    format!("{s} {unit}")
}

fn colour(targets: &[String], slot: usize) -> RGBColor {
    if targets.get(slot).is_some_and(|t| crate::is_reference(t)) {
        NATIVE
    } else {
        COLOURS[slot % COLOURS.len()]
    }
}

fn err<E: std::fmt::Display>(e: E) -> String {
    format!("drawing the chart: {e}")
}

/// Splits `text` into lines no wider than `width` pixels, at spaces.
fn wrap(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    text: &str,
    font: &TextStyle<'_>,
    width: u32,
) -> Vec<String> {
    let fits = |s: &str| {
        area.estimate_text_size(s, font)
            .is_ok_and(|(w, _)| w <= width)
    };
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let candidate = if line.is_empty() {
            word.to_string()
        } else {
            format!("{line} {word}")
        };
        if line.is_empty() || fits(&candidate) {
            line = candidate;
        } else {
            lines.push(std::mem::replace(&mut line, word.to_string()));
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// Writes the report as a 1600×900 PNG bar chart at `path`.
///
/// Needs a TrueType font from a Debian package (fonts-dejavu-core); without
/// one it writes nothing and says which package to install.
pub fn chart(r: &Report, path: &Path) -> Result<(), String> {
    load_fonts()?;
    let (targets, groups) = groups(r);
    if groups.is_empty() {
        return Err("no workload was measured on any target: nothing to chart".into());
    }
    let top = groups
        .iter()
        .flat_map(|g| g.bars.iter().map(|b| b.max.max(b.median)))
        .fold(1.0f64, f64::max);
    let ymax = top * 1.12;
    let base = targets
        .iter()
        .find(|t| crate::is_reference(t))
        .map_or("native", String::as_str);

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;

    // Lay out the header first: the legend wraps onto as many rows as the
    // targets need, and the plot gets what is left.
    let small = TextStyle::from((FAMILY, 17).into_font()).color(&RGBColor(70, 70, 70));
    let legend = TextStyle::from((FAMILY, 19).into_font());
    let machine: Vec<String> = if r.machine.is_empty() {
        Vec::new()
    } else {
        wrap(&root, &r.machine, &small, SIZE.0 - 48)
            .into_iter()
            .take(2)
            .collect()
    };
    let top_of_legend = (52 + 20 * machine.len() as i32).max(72) + 6;
    let right = SIZE.0 as i32 - 24;
    let any_whisker = groups.iter().flat_map(|g| &g.bars).any(|b| b.max > b.min);
    let whisker_note = "whiskers: min–max over repetitions";
    let mut items: Vec<(i32, i32, usize)> = Vec::new();
    let (mut x, mut ly) = (24i32, top_of_legend);
    for (slot, t) in targets.iter().enumerate() {
        let w = root.estimate_text_size(t, &legend).map_or(120, |(w, _)| w) as i32;
        if x > 24 && x + 26 + w > right {
            x = 24;
            ly += 26;
        }
        items.push((x, ly, slot));
        x += 26 + w + 32;
    }
    let note_at = {
        let w = root
            .estimate_text_size(whisker_note, &small)
            .map_or(300, |(w, _)| w) as i32;
        if x + 16 + w > right {
            (24, ly + 26)
        } else {
            (x + 16, ly + 1)
        }
    };
    let head_height = if any_whisker { note_at.1 } else { ly } + 40;
    let (head, body) = root.split_vertically(head_height as u32);

    // Title, machine line and legend.
    let title = TextStyle::from((FAMILY, 30, FontStyle::Bold).into_font());
    head.draw_text(
        &format!("idfuse bench: median relative to {base} ({base} = 1.0, higher is better)"),
        &title,
        (24, 14),
    )
    .map_err(err)?;
    for (i, line) in machine.iter().enumerate() {
        head.draw_text(line, &small, (24, 52 + 20 * i as i32))
            .map_err(err)?;
    }
    for &(x, ly, slot) in &items {
        head.draw(&Rectangle::new(
            [(x, ly - 2), (x + 18, ly + 16)],
            colour(&targets, slot).filled(),
        ))
        .map_err(err)?;
        head.draw_text(&targets[slot], &legend, (x + 26, ly))
            .map_err(err)?;
    }
    if any_whisker {
        head.draw_text(whisker_note, &small, note_at).map_err(err)?;
    }

    let n = groups.len() as f64;
    let mut c = ChartBuilder::on(&body)
        .margin_left(16)
        .margin_right(24)
        .margin_top(8)
        .margin_bottom(8)
        .x_label_area_size(78)
        .y_label_area_size(78)
        .build_cartesian_2d(0f64..n, 0f64..ymax)
        .map_err(err)?;
    c.configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_labels(12)
        .y_max_light_lines(1)
        .y_label_formatter(&|v| format!("{v:.1}"))
        .y_desc(format!("× {base}"))
        .label_style((FAMILY, 17))
        .axis_desc_style((FAMILY, 19))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(205, 205, 205))
        .draw()
        .map_err(err)?;
    c.draw_series(std::iter::once(PathElement::new(
        vec![(0.0, 1.0), (n, 1.0)],
        BLACK.stroke_width(2),
    )))
    .map_err(err)?;

    // Every target keeps its slot in every group; a target missing from a
    // workload leaves a gap.
    let slots = targets.len().max(1) as f64;
    let slot_w = 0.84 / slots;
    let px = |x: f64| c.backend_coord(&(x, 0.0)).0;
    let slot_px = (px(slot_w) - px(0.0)).max(1);
    let unit_px = (px(1.0) - px(0.0)).max(1);
    let group_px = (unit_px - 8).max(40) as u32;
    let values =
        TextStyle::from((FAMILY, 14).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (gi, g) in groups.iter().enumerate() {
        let left = gi as f64 + 0.08;
        for b in &g.bars {
            let x0 = left + b.slot as f64 * slot_w + slot_w * 0.08;
            let x1 = x0 + slot_w * 0.84;
            let mid = (x0 + x1) / 2.0;
            c.draw_series(std::iter::once(Rectangle::new(
                [(x0, 0.0), (x1, b.median)],
                colour(&targets, b.slot).filled(),
            )))
            .map_err(err)?;
            let whisker = b.max > b.min;
            if whisker {
                // A vertical line from min to max with caps, no marker:
                // the bar's top already shows the median.
                let cap = (slot_w * 0.2).min(10.0 / unit_px as f64);
                let ink = BLACK.stroke_width(2);
                c.draw_series([
                    PathElement::new(vec![(mid, b.min), (mid, b.max)], ink),
                    PathElement::new(vec![(mid - cap, b.min), (mid + cap, b.min)], ink),
                    PathElement::new(vec![(mid - cap, b.max), (mid + cap, b.max)], ink),
                ])
                .map_err(err)?;
            }
            if slot_px >= 34 {
                let (bx, by) = c.backend_coord(&(mid, if whisker { b.max } else { b.median }));
                root.draw_text(&format!("{:.2}", b.median), &values, (bx, by - 4))
                    .map_err(err)?;
            }
        }
        // Workload name under the group, wrapped, then what 1.0 stands for.
        let (cx, base_y) = c.backend_coord(&(gi as f64 + 0.5, 0.0));
        let name = TextStyle::from((FAMILY, 17).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        let note = TextStyle::from((FAMILY, 14).into_font())
            .color(&RGBColor(90, 90, 90))
            .pos(Pos::new(HPos::Center, VPos::Top));
        let mut y = base_y + 8;
        for line in wrap(&root, &g.name, &name, group_px).iter().take(2) {
            root.draw_text(line, &name, (cx, y)).map_err(err)?;
            y += 20;
        }
        for line in wrap(&root, &g.reference, &note, group_px).iter().take(2) {
            root.draw_text(line, &note, (cx, y)).map_err(err)?;
            y += 17;
        }
    }
    root.present()
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(workload: &str, target: &str, unit: &str, median: f64) -> Figure {
        Figure {
            workload: workload.into(),
            target: target.into(),
            unit: unit.into(),
            median,
            min: median * 0.9,
            max: median * 1.1,
            skipped: None,
        }
    }

    #[test]
    fn writes_a_png() {
        let mut figures = Vec::new();
        for (w, unit, native) in [
            ("seq write", "MiB/s", 2000.0),
            ("create+stat+unlink", "ops/s", 90_000.0),
        ] {
            figures.push(figure(w, "native", unit, native));
            figures.push(figure(w, "passthrough", unit, native * 0.8));
            figures.push(figure(w, "memfs", unit, native * 0.4));
        }
        // A skipped figure is simply absent from the chart.
        figures.push(Figure {
            skipped: Some("bindfs is not installed".into()),
            ..figure("seq write", "bindfs", "MiB/s", 0.0)
        });
        let r = Report {
            machine: "kernel 6.1.0-test, 2 cores; passthrough active".into(),
            commands: Vec::new(),
            figures,
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let png = dir.path().join("results.png");
        if let Err(e) = chart(&r, &png) {
            panic!("chart failed: {e}");
        }
        let bytes = std::fs::read(&png).expect("reading the PNG");
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        assert!(
            bytes.len() > 8 * 1024,
            "PNG too small: {} bytes",
            bytes.len()
        );
    }

    #[test]
    fn nothing_measured_is_an_error() {
        let r = Report {
            machine: String::new(),
            commands: Vec::new(),
            figures: vec![Figure {
                skipped: Some("no".into()),
                ..figure("w", "native", "MiB/s", 0.0)
            }],
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let png = dir.path().join("results.png");
        assert!(chart(&r, &png).is_err());
        assert!(!png.exists());
    }
}
