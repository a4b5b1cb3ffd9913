//! Draws the figures with plotters, once for SVG and once for PNG from the same code. Fixed sizes,
//! fixed colours and one font family keep the output deterministic.
pub mod png;

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::figures::{BarCurveFigure, Figure, LineStyle, Stat, TraceFigure, TracePanel};

pub use png::Font;

/// Fixed palette (matplotlib's tab10): colour i of every figure.
pub const PALETTE: &[RGBColor] = &[
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

const FONT: &str = "sans-serif";
const NOTE: RGBColor = RGBColor(200, 30, 30);
const LEGEND_ITEM_W: u32 = 190;
const LEGEND_ROW_H: u32 = 22;

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a figure: {e}")
}

/// Pixel size of a figure.
pub fn size(fig: &Figure) -> (u32, u32) {
    match fig {
        Figure::BarCurve(f) => (
            760,
            440 + legend_height(f.series.len(), 760, bar_legend_w(f)),
        ),
        Figure::Trace(f) => {
            let cols = f.panels.len().clamp(1, 3) as u32;
            let rows = f.panels.len().max(1).div_ceil(3) as u32;
            let legend = f.panels.iter().map(|p| p.series.len()).max().unwrap_or(0);
            (
                (420 * cols).max(640),
                40 + 340 * rows + legend_height(legend, (420 * cols).max(640), trace_legend_w(f)),
            )
        }
    }
}

fn legend_height(items: usize, width: u32, item_w: u32) -> u32 {
    if items == 0 {
        return 0;
    }
    let per_row = ((width - 20) / item_w).max(1) as usize;
    items.div_ceil(per_row) as u32 * LEGEND_ROW_H + 10
}

/// Width of one legend entry: at least [`LEGEND_ITEM_W`], more for long names (the swatch, then
/// about 8 px a character at the legend's 14 px), so that entries never overlap.
fn legend_item_w<'a>(names: impl Iterator<Item = &'a String>) -> u32 {
    names
        .map(|n| 46 + 8 * n.chars().count() as u32)
        .max()
        .unwrap_or(0)
        .max(LEGEND_ITEM_W)
}

fn bar_legend_w(f: &BarCurveFigure) -> u32 {
    legend_item_w(f.series.iter().map(|s| &s.name))
}

fn trace_legend_w(f: &TraceFigure) -> u32 {
    legend_item_w(f.panels.iter().flat_map(|p| &p.series).map(|s| &s.name))
}

/// Tick labels with a number of decimals suited to the axis range.
fn tick(v: f64, range: f64) -> String {
    let decimals = (2.0 - range.max(1e-12).log10().floor()).clamp(0.0, 6.0) as usize;
    format!("{v:.decimals$}")
}

fn upper_bound(stats: impl Iterator<Item = Stat>) -> f64 {
    let max = stats
        .map(|s| s.max)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    if max > 0.0 {
        max * 1.15
    } else {
        1.0
    }
}

/// Dash length and period in pixels of a broken line style (dotted: short, dashed: long).
fn dash_pattern(style: LineStyle) -> (i32, i32) {
    match style {
        LineStyle::Dashed => (10, 14),
        _ => (3, 8),
    }
}

/// A legend strip: colour swatch with the series' line style, then its name.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    items: &[(String, usize, LineStyle)],
) -> Result<()> {
    let (w, _) = area.dim_in_pixel();
    let item_w = legend_item_w(items.iter().map(|(name, _, _)| name));
    let per_row = ((w - 20) / item_w).max(1) as usize;
    for (k, (name, c, style)) in items.iter().enumerate() {
        let x = 10 + (k % per_row) as i32 * item_w as i32;
        let y = 5 + (k / per_row) as i32 * LEGEND_ROW_H as i32 + LEGEND_ROW_H as i32 / 2;
        let col = colour(*c);
        match style {
            LineStyle::Solid => {
                area.draw(&Rectangle::new(
                    [(x, y - 6), (x + 12, y + 6)],
                    col.mix(0.55).filled(),
                ))
                .map_err(err)?;
                area.draw(&PathElement::new(
                    vec![(x, y), (x + 28, y)],
                    col.stroke_width(2),
                ))
                .map_err(err)?;
            }
            LineStyle::Dotted | LineStyle::Dashed => {
                area.draw(&Rectangle::new(
                    [(x, y - 6), (x + 12, y + 6)],
                    col.stroke_width(1),
                ))
                .map_err(err)?;
                let (dash, step) = dash_pattern(*style);
                for s in 0..(28 / step) {
                    let sx = x + s * step;
                    area.draw(&PathElement::new(
                        vec![(sx, y), (sx + dash, y)],
                        col.stroke_width(2),
                    ))
                    .map_err(err)?;
                }
            }
        }
        area.draw(&Text::new(
            name.clone(),
            (x + 34, y),
            (FONT, 13)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(err)?;
    }
    Ok(())
}

/// A visible "not run" note across an area.
fn draw_not_run<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, note: &str) -> Result<()> {
    let (w, h) = area.dim_in_pixel();
    let (w, h) = (w as i32, h as i32);
    area.draw(&Rectangle::new(
        [(w / 2 - 300, h / 2 - 26), (w / 2 + 300, h / 2 + 26)],
        ShapeStyle::from(&NOTE).stroke_width(2),
    ))
    .map_err(err)?;
    area.draw(&Text::new(
        note.to_string(),
        (w / 2, h / 2),
        (FONT, 18)
            .into_font()
            .color(&NOTE)
            .pos(Pos::new(HPos::Center, VPos::Center)),
    ))
    .map_err(err)?;
    Ok(())
}

/// A min–max error bar with caps; nothing for a single value.
fn error_bar(x: f64, s: &Stat, half: f64, col: RGBColor) -> Vec<PathElement<(f64, f64)>> {
    if s.n < 2 || s.min == s.max {
        return Vec::new();
    }
    let style = col.stroke_width(1);
    vec![
        PathElement::new(vec![(x, s.min), (x, s.max)], style),
        PathElement::new(vec![(x - half, s.min), (x + half, s.min)], style),
        PathElement::new(vec![(x - half, s.max), (x + half, s.max)], style),
    ]
}

/// Utility bars (left axis) and backdoor-MSE curves (right axis) per poison rate; mean with
/// min–max error bars when several seeds ran.
pub fn draw_bar_curve<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    f: &BarCurveFigure,
) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let (w, h) = root.dim_in_pixel();
    let (upper, legend) =
        root.split_vertically(h - legend_height(f.series.len(), w, bar_legend_w(f)));
    if f.series.is_empty() {
        let upper = upper.titled(&f.title, (FONT, 16)).map_err(err)?;
        return draw_not_run(&upper, f.not_run.as_deref().unwrap_or("not run"));
    }
    let n = f.categories.len().max(1);
    let x_range = -0.5f64..(n as f64 - 0.5);
    let bar_max = upper_bound(
        f.series
            .iter()
            .flat_map(|s| s.bars.iter().flatten().copied()),
    );
    let curve_max = upper_bound(
        f.series
            .iter()
            .flat_map(|s| s.curve.iter().flatten().copied()),
    );
    let mut chart = ChartBuilder::on(&upper)
        .caption(&f.title, (FONT, 16))
        .margin(12)
        .x_label_area_size(46)
        .y_label_area_size(78)
        .right_y_label_area_size(78)
        .build_cartesian_2d(x_range.clone(), 0f64..bar_max)
        .map_err(err)?
        .set_secondary_coord(x_range, 0f64..curve_max);
    let cats = f.categories.clone();
    let x_fmt = move |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 {
            cats.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&|v| tick(*v, bar_max))
        .x_desc("poison rate")
        .y_desc(format!("{} (bars)", f.bar_label))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(err)?;
    chart
        .configure_secondary_axes()
        .y_label_formatter(&|v| tick(*v, curve_max))
        .y_desc("backdoor MSE (curves)")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(err)?;
    let k = f.series.len().max(1) as f64;
    let width = 0.8 / k;
    for (j, s) in f.series.iter().enumerate() {
        let col = colour(s.colour);
        let bar_style = match s.style {
            LineStyle::Solid => col.mix(0.55).filled(),
            LineStyle::Dotted | LineStyle::Dashed => col.stroke_width(2),
        };
        for (i, b) in s.bars.iter().enumerate() {
            let Some(b) = b else { continue };
            let x0 = i as f64 - 0.4 + j as f64 * width;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, 0.0), (x0 + width, b.mean)],
                    bar_style,
                )))
                .map_err(err)?;
            chart
                .draw_series(error_bar(x0 + width / 2.0, b, width / 4.0, BLACK))
                .map_err(err)?;
        }
        let points: Vec<(f64, f64)> = s
            .curve
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.map(|c| (i as f64, c.mean)))
            .collect();
        match s.style {
            LineStyle::Solid => {
                chart
                    .draw_secondary_series(LineSeries::new(points.clone(), col.stroke_width(2)))
                    .map_err(err)?;
            }
            LineStyle::Dotted | LineStyle::Dashed => {
                let (dash, step) = dash_pattern(s.style);
                chart
                    .draw_secondary_series(DashedLineSeries::new(
                        points.clone(),
                        dash as u32,
                        (step - dash) as u32,
                        col.stroke_width(2),
                    ))
                    .map_err(err)?;
            }
        }
        chart
            .draw_secondary_series(points.iter().map(|&p| Circle::new(p, 3, col.filled())))
            .map_err(err)?;
        for (i, c) in s.curve.iter().enumerate() {
            if let Some(c) = c {
                chart
                    .draw_secondary_series(error_bar(i as f64, c, 0.05, col))
                    .map_err(err)?;
            }
        }
    }
    // Partly run (e.g. Fig. 3 without its from-scratch cells): the data and the note.
    if let Some(note) = &f.not_run {
        draw_not_run(&upper, note)?;
    }
    let items: Vec<_> = f
        .series
        .iter()
        .map(|s| (s.name.clone(), s.colour, s.style))
        .collect();
    draw_legend(&legend, &items)
}

fn draw_trace_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    p: &TracePanel,
    (x_desc, y_desc): (&str, &str),
) -> Result<()> {
    let max_epoch = p
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|(e, _)| *e))
        .fold(1.0, f64::max)
        .ceil() as i64;
    let y_max = upper_bound(
        p.series
            .iter()
            .flat_map(|s| s.points.iter().map(|(_, st)| *st)),
    );
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, (FONT, 14))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..max_epoch as f64, 0f64..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels((max_epoch + 1).min(11) as usize)
        .x_label_formatter(&|x| {
            if (x - x.round()).abs() < 1e-6 {
                format!("{}", x.round())
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|v| tick(*v, y_max))
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 13))
        .draw()
        .map_err(err)?;
    for s in &p.series {
        let col = colour(s.colour);
        let pts: Vec<(f64, f64)> = s.points.iter().map(|(e, st)| (*e, st.mean)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
            .map_err(err)?;
        chart
            .draw_series(pts.iter().map(|&q| Circle::new(q, 3, col.filled())))
            .map_err(err)?;
        for (e, st) in &s.points {
            chart
                .draw_series(error_bar(*e, st, 0.08, col))
                .map_err(err)?;
        }
    }
    Ok(())
}

/// The ANP figure: one panel per probed model, a line per learning rate and budget.
pub fn draw_trace<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, f: &TraceFigure) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let (w, h) = root.dim_in_pixel();
    let legend_n = f.panels.iter().map(|p| p.series.len()).max().unwrap_or(0);
    let (upper, legend) = root.split_vertically(h - legend_height(legend_n, w, trace_legend_w(f)));
    let upper = upper.titled(&f.title, (FONT, 16)).map_err(err)?;
    if let Some(note) = &f.not_run {
        draw_not_run(&upper, note)?;
        return Ok(());
    }
    let cols = f.panels.len().clamp(1, 3);
    let rows = f.panels.len().div_ceil(3);
    let areas = upper.split_evenly((rows, cols));
    for (area, p) in areas.iter().zip(&f.panels) {
        draw_trace_panel(area, p, (&f.x_label, &f.y_label))?;
    }
    // Series names (lr, budget) are the same across panels; the longest list names them all.
    let longest = f.panels.iter().max_by_key(|p| p.series.len());
    let items: Vec<_> = longest
        .map(|p| {
            p.series
                .iter()
                .map(|s| (s.name.clone(), s.colour, LineStyle::Solid))
                .collect()
        })
        .unwrap_or_default();
    draw_legend(&legend, &items)
}

fn draw_any<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, fig: &Figure) -> Result<()> {
    match fig {
        Figure::BarCurve(f) => draw_bar_curve(root, f),
        Figure::Trace(f) => draw_trace(root, f),
    }
}

/// The figure as an SVG document (independent of installed fonts).
pub fn svg(fig: &Figure) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size(fig)).into_drawing_area();
        draw_any(root.clone(), fig)?;
        root.present().map_err(err)?;
    }
    Ok(out)
}

/// The figure as PNG bytes, text drawn with `font`.
pub fn png(fig: &Figure, font: &Font) -> Result<Vec<u8>> {
    png::render_png(size(fig), font, |root| {
        draw_any(root.clone(), fig)?;
        root.present().map_err(err)
    })
}
