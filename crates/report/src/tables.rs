//! Tables as Markdown and LaTeX (booktabs): the numbers behind each figure and the sampler table.
use std::collections::BTreeSet;

use crate::figures::{rate_label, Figure, Stat};
use crate::schema::{utility_label, Row};

mod inpainting;
pub mod later;
pub use inpainting::inpainting_table;

/// A rendered-format-neutral table.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// Used for file names and LaTeX labels.
    pub id: String,
    pub caption: String,
    pub header: Vec<String>,
    /// 'l' or 'r' per column.
    pub align: Vec<char>,
    pub rows: Vec<Vec<String>>,
    /// Shown instead of an empty table (e.g. "not run: ...").
    pub note: Option<String>,
}

/// A number with four significant digits, switching to scientific notation for very small or large
/// magnitudes; "NaN" stays visible.
pub fn num(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.3e}");
    }
    let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
    format!("{v:.decimals$}")
}

/// "mean [min, max]" for several values, the value alone for one, "—" for none.
pub fn stat_cell(s: Option<&Stat>) -> String {
    match s {
        None => "—".into(),
        Some(s) if s.n < 2 => num(s.mean),
        Some(s) => format!("{} [{}, {}]", num(s.mean), num(s.min), num(s.max)),
    }
}

fn n_cell(s: Option<&Stat>) -> String {
    s.map(|s| s.n.to_string()).unwrap_or_else(|| "0".into())
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// Markdown links become their text and code spans plain text (LaTeX has neither).
fn strip_markdown(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(open) = rest.find('[') {
        let Some(mid) = rest[open..].find("](").map(|m| open + m) else {
            break;
        };
        let Some(close) = rest[mid..].find(')').map(|c| mid + c) else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str(&rest[open + 1..mid]);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out.replace('`', "")
}

fn tex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in strip_markdown(s).chars() {
        match c {
            '\\' => out.push_str("\\textbackslash{}"),
            '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            '~' => out.push_str("\\textasciitilde{}"),
            '^' => out.push_str("\\textasciicircum{}"),
            '→' => out.push_str("$\\rightarrow$"),
            '—' => out.push_str("---"),
            '–' => out.push_str("--"),
            '×' => out.push_str("$\\times$"),
            '§' => out.push_str("\\S{}"),
            _ => out.push(c),
        }
    }
    out
}

impl Table {
    pub fn markdown(&self) -> String {
        let mut s = format!("**{}**\n\n", md_escape(&self.caption));
        if let Some(note) = &self.note {
            s.push_str(&format!("_{}_\n", md_escape(note)));
            if self.rows.is_empty() {
                return s;
            }
            s.push('\n');
        }
        let cells = |r: &[String]| {
            format!(
                "| {} |\n",
                r.iter()
                    .map(|c| md_escape(c))
                    .collect::<Vec<_>>()
                    .join(" | ")
            )
        };
        s.push_str(&cells(&self.header));
        let rule: Vec<String> = (0..self.header.len())
            .map(|i| match self.align.get(i) {
                Some('r') => "---:".to_string(),
                _ => "---".to_string(),
            })
            .collect();
        s.push_str(&format!("| {} |\n", rule.join(" | ")));
        for r in &self.rows {
            s.push_str(&cells(r));
        }
        s
    }

    pub fn latex(&self) -> String {
        let spec: String = (0..self.header.len())
            .map(|i| self.align.get(i).copied().unwrap_or('l'))
            .collect();
        let mut s = String::from("\\begin{table}[t]\n\\centering\n\\small\n");
        s.push_str(&format!("\\caption{{{}}}\n", tex_escape(&self.caption)));
        s.push_str(&format!("\\label{{tab:{}}}\n", self.id));
        if let Some(note) = &self.note {
            s.push_str(&format!("\\emph{{{}}}\\\\\n", tex_escape(note)));
            if self.rows.is_empty() {
                s.push_str("\\end{table}\n");
                return s;
            }
        }
        s.push_str(&format!("\\begin{{tabular}}{{{spec}}}\n\\toprule\n"));
        let line = |r: &[String]| {
            format!(
                "{} \\\\\n",
                r.iter()
                    .map(|c| tex_escape(c))
                    .collect::<Vec<_>>()
                    .join(" & ")
            )
        };
        s.push_str(&line(&self.header));
        s.push_str("\\midrule\n");
        for r in &self.rows {
            s.push_str(&line(r));
        }
        s.push_str("\\bottomrule\n\\end{tabular}\n\\end{table}\n");
        s
    }
}

/// The numbers behind a figure: one row per series and x value.
pub fn figure_table(fig: &Figure) -> Table {
    match fig {
        Figure::BarCurve(f) => {
            let mut rows = Vec::new();
            for s in &f.series {
                for (i, cat) in f.categories.iter().enumerate() {
                    let (b, c) = (s.bars[i].as_ref(), s.curve[i].as_ref());
                    if b.is_none() && c.is_none() {
                        continue;
                    }
                    rows.push(vec![
                        s.name.clone(),
                        cat.clone(),
                        stat_cell(b),
                        n_cell(b),
                        stat_cell(c),
                        n_cell(c),
                    ]);
                }
            }
            Table {
                id: f.id.clone(),
                caption: format!("Numbers behind {} (mean [min, max] over seeds)", f.title),
                header: vec![
                    "series".into(),
                    "poison rate".into(),
                    f.bar_label.clone(),
                    "n".into(),
                    "backdoor MSE".into(),
                    "n".into(),
                ],
                align: vec!['l', 'r', 'r', 'r', 'r', 'r'],
                rows,
                note: f.not_run.clone(),
            }
        }
        Figure::Trace(f) => {
            let mut rows = Vec::new();
            for p in &f.panels {
                for s in &p.series {
                    for (epoch, st) in &s.points {
                        rows.push(vec![
                            p.title.clone(),
                            s.name.clone(),
                            format!("{epoch}"),
                            stat_cell(Some(st)),
                            st.n.to_string(),
                        ]);
                    }
                }
            }
            Table {
                id: f.id.clone(),
                caption: format!("Numbers behind {} (mean [min, max] over seeds)", f.title),
                header: vec![
                    "model".into(),
                    "setting".into(),
                    f.x_label.clone(),
                    f.y_label.clone(),
                    "n".into(),
                ],
                align: vec!['l', 'l', 'r', 'r', 'r'],
                rows,
                note: f.not_run.clone(),
            }
        }
    }
}

/// The sampler analysis (supp. Sec. 6): DDPM vs DDIM vs DPM-Solver on the same backdoored models.
pub fn sampler_table(rows: &[Row]) -> Table {
    let picked: Vec<&Row> = rows
        .iter()
        .filter(|r| r.experiment == "sampler" || r.experiment == "E8")
        .collect();
    let utility = {
        let names: BTreeSet<&str> = picked
            .iter()
            .filter(|r| r.samples == "clean" && crate::schema::is_utility_metric(&r.metric))
            .map(|r| r.metric.as_str())
            .collect();
        if names.contains("FID") {
            Some("FID")
        } else {
            names.iter().next().copied()
        }
    };
    type Key = (String, String, i64, String, i64, String);
    let sampler_rank = |s: &str| ["ddpm", "ddim", "dpm-solver"].iter().position(|x| *x == s);
    let mut keys: Vec<Key> = picked
        .iter()
        .map(|r| {
            (
                r.trigger.clone(),
                r.target.clone(),
                r.rate_key(),
                r.sampler.clone(),
                r.steps,
                r.clip.clone(),
            )
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    keys.sort_by_key(|k| {
        (
            k.0.clone(),
            k.1.clone(),
            k.2,
            sampler_rank(&k.3),
            k.4,
            k.5.clone(),
        )
    });
    let out_rows = keys
        .iter()
        .map(|k| {
            let stat = |samples: &str, metric: &str| {
                Stat::of(
                    picked
                        .iter()
                        .filter(|r| {
                            r.trigger == k.0
                                && r.target == k.1
                                && r.rate_key() == k.2
                                && r.sampler == k.3
                                && r.steps == k.4
                                && r.clip == k.5
                                && r.samples == samples
                                && r.metric == metric
                        })
                        .map(|r| r.value),
                )
            };
            let u = utility.and_then(|u| stat("clean", u));
            vec![
                format!("{} → {}, {}", k.0, k.1, rate_label(k.2 as f64 / 1e6)),
                k.3.clone(),
                k.4.to_string(),
                k.5.clone(),
                stat_cell(stat("backdoor", "MSE").as_ref()),
                stat_cell(stat("backdoor", "SSIM").as_ref()),
                stat_cell(u.as_ref()),
            ]
        })
        .collect::<Vec<_>>();
    Table {
        id: "samplers".into(),
        caption: "Samplers: DDPM vs DDIM vs DPM-Solver on the same backdoored models (mean [min, max] over seeds)".into(),
        header: vec![
            "model".into(),
            "sampler".into(),
            "steps".into(),
            "clip".into(),
            "backdoor MSE".into(),
            "backdoor SSIM".into(),
            utility.map(utility_label).unwrap_or_else(|| "utility".into()),
        ],
        align: vec!['l', 'l', 'r', 'l', 'r', 'r', 'r'],
        note: out_rows
            .is_empty()
            .then(|| "not run: no sampler cells in this run".to_string()),
        rows: out_rows,
    }
}

/// The defenses' effect and cost per model (paper §4.6): ANP's probe (the lowest MSE of clean-noise
/// samples to the target over its epochs: low means the backdoor was revealed) and ANP pruning
/// (MSE to the target of trigger and clean samples after pruning), with each run's wall-clock
/// seconds and optimiser steps. Clipping is in Fig. 5.
pub fn defense_table(rows: &[Row]) -> Table {
    let picked: Vec<&Row> = rows
        .iter()
        .filter(|r| r.defense == "anp" || r.defense == "anp-prune")
        .filter(|r| r.defense_epoch.is_none())
        .collect();
    type Key = (String, String, i64, String, String, String);
    let keys: BTreeSet<Key> = picked
        .iter()
        .map(|r| {
            (
                r.trigger.clone(),
                r.target.clone(),
                r.rate_key(),
                r.training.clone(),
                r.defense.clone(),
                r.defense_param.clone(),
            )
        })
        .collect();
    let out_rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            let stat = |samples: Option<&str>, metric: &str| {
                Stat::of(
                    picked
                        .iter()
                        .filter(|r| {
                            (
                                &r.trigger,
                                &r.target,
                                &r.training,
                                &r.defense,
                                &r.defense_param,
                            ) == (&k.0, &k.1, &k.3, &k.4, &k.5)
                                && r.rate_key() == k.2
                                && samples.is_none_or(|s| r.samples == s)
                                && r.metric == metric
                        })
                        .map(|r| r.value),
                )
            };
            let (trigger_mse, clean_mse) = if k.4 == "anp" {
                (None, stat(Some("clean"), "MSE_best"))
            } else {
                (stat(Some("backdoor"), "MSE"), stat(Some("clean"), "MSE"))
            };
            vec![
                format!(
                    "{} → {}, {} ({})",
                    k.0,
                    k.1,
                    rate_label(k.2 as f64 / 1e6),
                    k.3
                ),
                k.4.clone(),
                k.5.clone(),
                stat_cell(trigger_mse.as_ref()),
                stat_cell(clean_mse.as_ref()),
                stat_cell(stat(None, "cost_seconds").as_ref()),
                stat_cell(stat(None, "cost_optimiser_steps").as_ref()),
            ]
        })
        .collect();
    Table {
        id: "defenses".into(),
        caption: "Defenses: effect and cost per model (anp: lowest MSE of clean-noise samples to the target over the probe's epochs; anp-prune: after pruning; mean [min, max] over seeds)".into(),
        header: [
            "model",
            "defense",
            "settings",
            "trigger samples: MSE to target",
            "clean samples: MSE to target",
            "cost (s)",
            "optimiser steps",
        ]
        .map(String::from)
        .to_vec(),
        align: vec!['l', 'l', 'l', 'r', 'r', 'r', 'r'],
        note: out_rows
            .is_empty()
            .then(|| "not run: no ANP or pruning defense in this run".to_string()),
        rows: out_rows,
    }
}

#[cfg(test)]
mod defense_table_tests {
    use super::*;
    use crate::fixture;

    #[test]
    fn one_line_per_model_and_defense_with_its_cost() {
        let base = fixture::rows()
            .into_iter()
            .find(|r| r.experiment == "E1" && r.poison_rate == 0.5 && r.clip == "none")
            .unwrap();
        let row = |defense: &str, param: &str, samples: &str, metric: &str, value: f64| Row {
            defense: defense.into(),
            defense_param: param.into(),
            defense_epoch: None,
            samples: samples.into(),
            metric: metric.into(),
            value,
            ..base.clone()
        };
        let rows = vec![
            row("anp", "lr=0.0001,budget=4", "clean", "MSE_best", 0.02),
            row("anp", "lr=0.0001,budget=4", "clean", "cost_seconds", 20.0),
            row(
                "anp",
                "lr=0.0001,budget=4",
                "clean",
                "cost_optimiser_steps",
                80.0,
            ),
            Row {
                defense_epoch: Some(1),
                ..row("anp", "lr=0.0001,budget=4", "clean", "MSE", 0.5)
            },
            row("anp-prune", "pruned=3", "backdoor", "MSE", 0.09),
            row("anp-prune", "pruned=3", "clean", "MSE", 0.11),
            row("anp-prune", "pruned=3", "clean", "cost_seconds", 40.0),
        ];
        let t = defense_table(&rows);
        assert_eq!(t.rows.len(), 2, "{:?}", t.rows);
        let anp = &t.rows[0];
        assert_eq!(anp[1], "anp");
        assert_eq!(
            anp[3],
            stat_cell(None),
            "the probe samples clean noise only"
        );
        assert_eq!(
            anp[4],
            stat_cell(Stat::of([0.02]).as_ref()),
            "best, not epoch 1"
        );
        assert_eq!(anp[5], stat_cell(Stat::of([20.0]).as_ref()));
        let prune = &t.rows[1];
        assert_eq!(prune[3], stat_cell(Stat::of([0.09]).as_ref()));
        assert_eq!(prune[4], stat_cell(Stat::of([0.11]).as_ref()));
        assert!(t.note.is_none());
        assert!(defense_table(&fixture::rows()[..4]).note.is_some());
    }
}
