//! Which rows feed each figure of the paper (its main text, Fig. 2–5), aggregated over seeds. The same data
//! renders as a plot (`plot`) and as the table of numbers behind it (`tables`).
use std::collections::BTreeSet;

use crate::schema::{is_utility_metric, utility_label, Row};

mod traces;
pub use traces::later_scores;

/// Mean with the min–max range over seeds (or repeated measurements).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Stat> {
        let v: Vec<f64> = values.into_iter().collect();
        if v.is_empty() {
            return None;
        }
        Some(Stat {
            mean: v.iter().sum::<f64>() / v.len() as f64,
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            n: v.len(),
        })
    }
}

/// Solid for plain sampling; in Fig. 5 dotted for x̂₀ clipping and dashed for xₜ clipping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineStyle {
    Solid,
    Dotted,
    Dashed,
}

/// One coloured series of a bars-and-curves figure: utility bars and backdoor-MSE curve.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub colour: usize,
    pub style: LineStyle,
    /// Per x category: the utility metric on clean samples.
    pub bars: Vec<Option<Stat>>,
    /// Per x category: MSE of backdoor samples to the target.
    pub curve: Vec<Option<Stat>>,
}

/// The paper's figure type: utility bars (left axis) and backdoor-MSE curves (right axis) against
/// the poison rate.
#[derive(Clone, Debug)]
pub struct BarCurveFigure {
    pub id: String,
    pub title: String,
    pub categories: Vec<String>,
    pub rates: Vec<f64>,
    /// The utility metric's name ("FID" or a proxy), and its label.
    pub utility: String,
    pub bar_label: String,
    pub series: Vec<Series>,
    /// Set when no cell of the figure ran: the figure says so instead of disappearing.
    pub not_run: Option<String>,
}

/// One line of a line figure.
#[derive(Clone, Debug)]
pub struct TraceSeries {
    pub name: String,
    pub colour: usize,
    pub points: Vec<(f64, Stat)>,
}

/// One panel (one model, or one trigger-target pair) of a line figure.
#[derive(Clone, Debug)]
pub struct TracePanel {
    pub title: String,
    pub series: Vec<TraceSeries>,
}

/// Lines of a statistic against a number, one panel per model (`traces`): ANP's MSE per ANP
/// epoch, per budget, and E6's backdoor and clean quality per fine-tuning epoch.
#[derive(Clone, Debug)]
pub struct TraceFigure {
    pub id: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub panels: Vec<TracePanel>,
    pub not_run: Option<String>,
}

#[derive(Clone, Debug)]
pub enum Figure {
    BarCurve(BarCurveFigure),
    Trace(TraceFigure),
}

impl Figure {
    pub fn id(&self) -> &str {
        match self {
            Figure::BarCurve(f) => &f.id,
            Figure::Trace(f) => &f.id,
        }
    }
    pub fn title(&self) -> &str {
        match self {
            Figure::BarCurve(f) => &f.title,
            Figure::Trace(f) => &f.title,
        }
    }
    pub fn not_run(&self) -> Option<&str> {
        match self {
            Figure::BarCurve(f) => f.not_run.as_deref(),
            Figure::Trace(f) => f.not_run.as_deref(),
        }
    }
}

/// The paper's target order; fixes each target's colour across all figures.
pub const TARGET_ORDER: &[&str] = &["NoShift", "Shift", "Corner", "Shoe", "Hat", "Cat"];

fn target_colour(target: &str) -> usize {
    TARGET_ORDER
        .iter()
        .position(|t| *t == target)
        .unwrap_or(TARGET_ORDER.len())
}

/// Trigger families: the paper's names for the code's trigger prefixes.
pub const FAMILIES: &[(&str, &str, &str)] =
    &[("a", "BOX", "Grey Box"), ("b", "STOP_SIGN", "Stop Sign")];

fn in_family(trigger: &str, family: &str) -> bool {
    trigger
        .strip_prefix(family)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
}

pub fn rate_label(rate: f64) -> String {
    let pct = rate * 100.0;
    if (pct - pct.round()).abs() < 1e-9 {
        format!("{}%", pct.round() as i64)
    } else {
        format!("{pct}%")
    }
}

/// A series before aggregation: its rows are those `matches` accepts.
struct SeriesSpec<'a> {
    name: String,
    colour: usize,
    style: LineStyle,
    matches: Box<dyn Fn(&Row) -> bool + 'a>,
}

/// Plain DDPM sampling from noise, of finished models, without defenses: what Fig. 2–4 show.
pub(crate) fn plain(r: &Row) -> bool {
    r.defense == "none"
        && r.clip == "none"
        && r.sampler == "ddpm"
        && r.corruption == "none"
        && r.schedule_share == 1.0
}

/// "FID" if any utility row is FID, else the alphabetically first proxy.
pub(crate) fn pick_utility<'r>(rows: impl Iterator<Item = &'r Row>) -> Option<String> {
    let names: BTreeSet<&str> = rows
        .filter(|r| r.samples == "clean" && is_utility_metric(&r.metric))
        .map(|r| r.metric.as_str())
        .collect();
    if names.contains("FID") {
        Some("FID".into())
    } else {
        names.iter().next().map(|s| s.to_string())
    }
}

fn bar_curve(
    id: &str,
    title: String,
    rows: &[&Row],
    specs: Vec<SeriesSpec>,
    not_run: &str,
) -> BarCurveFigure {
    let selected: Vec<(usize, &Row)> = rows
        .iter()
        .flat_map(|r| {
            specs
                .iter()
                .enumerate()
                .filter(|(_, s)| (s.matches)(r))
                .map(move |(i, _)| (i, *r))
        })
        .collect();
    let utility = pick_utility(selected.iter().map(|(_, r)| *r));
    let mut rates: Vec<f64> = selected.iter().map(|(_, r)| r.poison_rate).collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    let stat = |i: usize, rate: f64, samples: &str, metric: &str| {
        Stat::of(
            selected
                .iter()
                .filter(|(j, r)| {
                    *j == i && r.poison_rate == rate && r.samples == samples && r.metric == metric
                })
                .map(|(_, r)| r.value),
        )
    };
    let series: Vec<Series> = specs
        .iter()
        .enumerate()
        .filter(|(i, _)| selected.iter().any(|(j, _)| j == i))
        .map(|(i, s)| Series {
            name: s.name.clone(),
            colour: s.colour,
            style: s.style,
            bars: rates
                .iter()
                .map(|&p| utility.as_deref().and_then(|u| stat(i, p, "clean", u)))
                .collect(),
            curve: rates
                .iter()
                .map(|&p| stat(i, p, "backdoor", "MSE"))
                .collect(),
        })
        .collect();
    let empty = series.is_empty();
    BarCurveFigure {
        id: id.into(),
        title,
        categories: rates.iter().map(|&p| rate_label(p)).collect(),
        rates,
        bar_label: utility
            .as_deref()
            .map(utility_label)
            .unwrap_or_else(|| "utility".into()),
        utility: utility.unwrap_or_default(),
        series,
        not_run: empty.then(|| not_run.to_string()),
    }
}

/// Targets present among rows, in the paper's order, then any others alphabetically.
fn targets_of<'r>(rows: impl Iterator<Item = &'r Row>) -> Vec<String> {
    let mut set: Vec<String> = rows
        .map(|r| r.target.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    set.sort_by_key(|t| target_colour(t));
    set
}

/// Fig. 2a/b (clip = false) and Fig. 5a/b (clip = true: adds dotted with-clipping series).
fn trigger_sweep(rows: &[Row], fig: &str, experiments: &[&str], with_clip: bool) -> Vec<Figure> {
    FAMILIES
        .iter()
        .map(|&(panel, family, paper_name)| {
            let picked: Vec<&Row> = rows
                .iter()
                .filter(|r| experiments.contains(&r.experiment.as_str()))
                .filter(|r| in_family(&r.trigger, family) || r.trigger == "NONE")
                .filter(|r| {
                    r.training != "scratch" && !r.defense.starts_with("anp") && r.sampler == "ddpm"
                })
                .collect();
            let targets = targets_of(picked.iter().copied().filter(|r| r.trigger != "NONE"));
            // E1's cells are E4's unclipped evaluations too (the same cached stages): count each
            // once, from E4 where it ran them.
            let e4_plain = picked.iter().any(|r| r.experiment == "E4" && plain(r));
            let mut specs = Vec::new();
            for t in &targets {
                let t1 = t.clone();
                specs.push(SeriesSpec {
                    name: t.clone(),
                    colour: target_colour(t),
                    style: LineStyle::Solid,
                    matches: Box::new(move |r: &Row| {
                        r.target == t1
                            && plain(r)
                            && (!(with_clip && e4_plain) || r.experiment == "E4")
                    }),
                });
                if !with_clip {
                    continue;
                }
                // The two clipping variants stay apart: x̂₀ clamping is what the official code
                // ran (`--fclip w`), x_t clamping is the paper's §4.6.2.
                for (clip, style, label) in [
                    ("x0", LineStyle::Dotted, "clipped x̂₀ (code)"),
                    ("xt", LineStyle::Dashed, "clipped xₜ (paper)"),
                ] {
                    if !picked.iter().any(|r| &r.target == t && r.clip == clip) {
                        continue;
                    }
                    let t2 = t.clone();
                    specs.push(SeriesSpec {
                        name: format!("{t}, {label}"),
                        colour: target_colour(t),
                        style,
                        matches: Box::new(move |r: &Row| r.target == t2 && r.clip == clip),
                    });
                }
            }
            let (what, reason) = if with_clip {
                (
                    "solid: without, dotted: x̂₀ clipping, dashed: xₜ clipping",
                    "no E1/E4 clipping cells",
                )
            } else {
                ("utility (bars), backdoor MSE (curves)", "no E1 cells")
            };
            let title = format!("Fig. {fig}{panel}: {paper_name}: {what}");
            let reason = format!("not run: {reason} with a {paper_name} trigger in this run");
            Figure::BarCurve(bar_curve(
                &format!("fig{fig}{panel}"),
                title,
                &picked,
                specs,
                &reason,
            ))
        })
        .collect()
}

/// Fig. 3a/b: fine-tuning (blue) vs training from scratch (orange), Grey Box → Corner / Hat.
fn finetune_vs_scratch(rows: &[Row]) -> Vec<Figure> {
    [("a", "Corner"), ("b", "Hat")]
        .iter()
        .map(|&(panel, target)| {
            let picked: Vec<&Row> = rows
                .iter()
                .filter(|r| ["E1", "E2"].contains(&r.experiment.as_str()))
                .filter(|r| in_family(&r.trigger, "BOX") || r.trigger == "NONE")
                .filter(|r| r.target == target && plain(r))
                .collect();
            let specs = vec![
                SeriesSpec {
                    name: "fine-tune".into(),
                    colour: 0,
                    style: LineStyle::Solid,
                    matches: Box::new(|r: &Row| r.training != "scratch"),
                },
                SeriesSpec {
                    name: "from scratch".into(),
                    colour: 1,
                    style: LineStyle::Solid,
                    matches: Box::new(|r: &Row| r.training == "scratch"),
                },
            ];
            let has_scratch = picked.iter().any(|r| r.training == "scratch");
            let mut fig = bar_curve(
                &format!("fig3{panel}"),
                format!("Fig. 3{panel}: Grey Box → {target}: fine-tune vs from scratch"),
                &picked,
                specs,
                &format!("not run: no E2 cells (Grey Box → {target}) in this run"),
            );
            if !has_scratch && fig.not_run.is_none() {
                fig.not_run = Some(format!(
                    "not run: no from-scratch cells (Grey Box → {target}); fine-tune only"
                ));
            }
            Figure::BarCurve(fig)
        })
        .collect()
}

/// Fig. 4a: CelebA-HQ, Eyeglasses → Cat.
fn celeba(rows: &[Row]) -> Figure {
    let picked: Vec<&Row> = rows
        .iter()
        .filter(|r| r.experiment == "E3" && plain(r))
        .collect();
    let mut pairs: Vec<(String, String)> = picked
        .iter()
        .filter(|r| r.trigger != "NONE")
        .map(|r| (r.trigger.clone(), r.target.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if pairs.is_empty() && !picked.is_empty() {
        pairs = picked
            .iter()
            .map(|r| ("NONE".to_string(), r.target.clone()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
    }
    let specs = pairs
        .into_iter()
        .map(|(trigger, target)| SeriesSpec {
            name: format!("{trigger} → {target}"),
            colour: target_colour(&target),
            style: LineStyle::Solid,
            matches: Box::new(move |r: &Row| {
                r.target == target && (r.trigger == trigger || r.trigger == "NONE")
            }),
        })
        .collect();
    Figure::BarCurve(bar_curve(
        "fig4a",
        "Fig. 4a: CelebA-HQ: utility (bars), backdoor MSE (curves)".into(),
        &picked,
        specs,
        "not run: no E3 (CelebA-HQ) cells in this run",
    ))
}

/// Every plotted figure of the paper, in the paper's order; absent cells give "not run" figures.
pub fn all(rows: &[Row]) -> Vec<Figure> {
    let mut out = trigger_sweep(rows, "2", &["E1"], false);
    out.extend(finetune_vs_scratch(rows));
    out.push(celeba(rows));
    out.extend(trigger_sweep(rows, "5", &["E1", "E4"], true));
    out.push(traces::anp(rows));
    out.push(traces::anp_budget(rows));
    out.extend(traces::epochs_needed(rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    fn bar(fig: &Figure) -> &BarCurveFigure {
        match fig {
            Figure::BarCurve(f) => f,
            Figure::Trace(_) => panic!("not a bar figure"),
        }
    }

    #[test]
    fn fig2_has_every_target_and_rate_with_seed_ranges() {
        let figs = all(&fixture::rows());
        let f = bar(&figs[0]);
        assert_eq!(f.categories, ["0%", "10%", "50%"]);
        let names: Vec<&str> = f.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["Corner", "Shoe", "Hat"]);
        let c = f.series[0].curve[1].unwrap();
        assert_eq!(c.n, 2, "two seeds");
        assert!(c.min < c.max && c.min <= c.mean && c.mean <= c.max);
        assert!(f.bar_label.starts_with("FD_fmnist_cnn") && f.bar_label.contains("proxy"));
    }

    #[test]
    fn fid_is_preferred_over_a_proxy_when_present() {
        let rows: Vec<Row> = fixture::rows()
            .into_iter()
            .map(|mut r| {
                if r.metric == fixture::PROXY && r.trigger == "BOX_14" {
                    r.metric = "FID".into();
                }
                r
            })
            .collect();
        let figs = all(&rows);
        assert_eq!(bar(&figs[0]).utility, "FID");
        assert_eq!(bar(&figs[0]).bar_label, "FID");
        assert_eq!(
            bar(&figs[1]).utility,
            fixture::PROXY,
            "Stop Sign rows kept the proxy"
        );
    }

    #[test]
    fn fig3_compares_finetune_and_scratch_and_fig5_adds_clipped_series() {
        let figs = all(&fixture::rows());
        let f3 = bar(&figs[2]);
        assert_eq!(f3.series.len(), 2);
        assert_eq!(f3.series[1].name, "from scratch");
        assert_eq!(f3.series[1].curve[2].unwrap().n, 1, "scratch is one run");
        let f5 = bar(&figs[5]);
        assert_eq!(f5.series.len(), 6);
        assert_eq!(f5.series[1].style, LineStyle::Dotted);
        assert!(f5.series[1].curve[2].unwrap().mean > f5.series[0].curve[2].unwrap().mean);
    }

    #[test]
    fn fig5_keeps_the_clipping_variants_apart_and_counts_e1_cells_once() {
        // The run also evaluates xt clipping (at another MSE) and E4's own unclipped samples.
        let mut rows = fixture::rows();
        let e4: Vec<Row> = rows
            .iter()
            .filter(|r| r.experiment == "E4")
            .cloned()
            .collect();
        for r in &e4 {
            rows.push(Row {
                clip: "xt".into(),
                value: r.value * 0.5,
                ..r.clone()
            });
            rows.push(Row {
                clip: "none".into(),
                defense: "none".into(),
                ..r.clone()
            });
        }
        let f5 = bar(&all(&rows)[5]).clone();
        let series = |name: &str| f5.series.iter().find(|s| s.name == name).unwrap();
        let (x0, xt) = (
            series("Corner, clipped x̂₀ (code)"),
            series("Corner, clipped xₜ (paper)"),
        );
        assert_eq!((x0.style, xt.style), (LineStyle::Dotted, LineStyle::Dashed));
        let (m0, mt) = (x0.curve[2].unwrap(), xt.curve[2].unwrap());
        assert!(
            (mt.mean - 0.5 * m0.mean).abs() < 1e-12,
            "xt {mt:?} vs x0 {m0:?}"
        );
        // Two seeds, each counted once although E1 and E4 both hold the unclipped cell.
        assert_eq!(series("Corner").curve[2].unwrap().n, 2);
    }

    #[test]
    fn missing_cells_give_not_run_figures() {
        let figs = all(&fixture::rows());
        assert!(
            figs[4].not_run().unwrap().contains("E3"),
            "no CelebA-HQ in the fixture"
        );
        let empty = all(&[]);
        assert_eq!(empty.len(), 11);
        assert!(empty.iter().all(|f| f.not_run().is_some()));
    }

    #[test]
    fn anp_traces_have_one_series_per_setting() {
        let figs = all(&fixture::rows());
        let Figure::Trace(t) = &figs[7] else { panic!() };
        assert_eq!(t.panels.len(), 1);
        let names: Vec<&str> = t.panels[0].series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "lr=0.0001,budget=2",
                "lr=0.0001,budget=4",
                "lr=0.0002,budget=4"
            ]
        );
        assert_eq!(t.panels[0].series[0].points.len(), 5);
    }
}
