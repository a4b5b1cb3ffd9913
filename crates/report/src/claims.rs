//! The claims verdicts: `baddiff-report claims RUN` judges each claim of `paper/claims.toml`
//! against the run's frame with the engine of the `frame` crate and writes `claims.json`; this
//! module does that and renders the verdicts (summary, table, per-claim details).
use std::path::Path;

use anyhow::{Context, Result};
use frame::calibrate::Calibration;
pub use frame::claims::{
    CheckResult, ClaimVerdict, ClaimsFile, Fidelity, Op, RunInfo, Scale, Verdict,
};

use crate::doc::Block;
use crate::schema::Row;
use crate::tables::{num, Table};

/// Where a run's verdicts live inside its directory.
pub const CLAIMS_FILE: &str = "claims.json";

/// The committed claims file of this repository.
pub fn default_claims_file() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../paper/claims.toml")
}

/// What the run is, from its manifest (`profile`, and `scale` as `baddiff plan` describes it).
pub fn run_info(manifest: Option<&serde_json::Value>) -> Result<RunInfo> {
    let profile = manifest
        .and_then(|m| m.get("profile"))
        .and_then(|p| p.as_str())
        .unwrap_or("unknown")
        .to_string();
    let scale = match manifest.and_then(|m| m.get("scale")) {
        Some(s) if !s.is_null() => Some(serde_json::from_value::<Scale>(s.clone()).context(
            "manifest.json: `scale` is not a profile scale (rerun `cargo xtask reproduce`)",
        )?),
        _ => None,
    };
    Ok(RunInfo { profile, scale })
}

/// Judges every claim against `rows` and writes `RUN/claims.json`.
pub fn judge_run(run_dir: &Path, claims: &Path, rows: &[Row]) -> Result<Vec<ClaimVerdict>> {
    let file = ClaimsFile::load(claims)?;
    let manifest = crate::run_manifest::read(run_dir)?;
    let verdicts = file.judge(rows, &run_info(manifest.as_ref())?);
    let path = run_dir.join(CLAIMS_FILE);
    let tmp = path.with_extension(format!("json.{}.partial", std::process::id()));
    std::fs::write(&tmp, serde_json::to_string_pretty(&verdicts)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(verdicts)
}

/// Reads `claims.json` (a JSON list of [`ClaimVerdict`]).
pub fn read(path: &Path) -> Result<Vec<ClaimVerdict>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading claims verdicts {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a list of claim verdicts of this version: rejudge the run with `baddiff-report claims RUN`",
            path.display()
        )
    })
}

/// The report anchor of a figure name: "Fig. 2a" → "fig2a", "ANP" → "anp".
pub fn figure_anchor(figure: &str) -> String {
    figure
        .to_lowercase()
        .replace("fig.", "fig")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}

/// A verdict as it reads at a glance: symbol and word.
pub fn verdict_text(v: Verdict) -> String {
    format!("{} {}", v.symbol(), v.as_str())
}

fn bounds(c: &CheckResult) -> String {
    let b = |x: &frame::claims::Bound| x.to_string().replace("<=", "≤").replace(">=", "≥");
    match &c.partly {
        Some(p) => format!("holds {}, partly {}", b(&c.holds), b(p)),
        None => format!("holds {}", b(&c.holds)),
    }
}

fn interval_text(i: [f64; 2]) -> String {
    if i[0] == i[1] {
        num(i[0])
    } else {
        format!("{} – {}", num(i[0]), num(i[1]))
    }
}

/// Each check as `name: value (interval) → verdict (bounds)`.
fn checks_text(c: &ClaimVerdict) -> String {
    c.checks
        .iter()
        .map(|k| match (k.value, k.interval) {
            (Some(v), Some(i)) => format!(
                "{}: **{}**{} → {} ({})",
                k.name,
                num(v),
                if i[0] == i[1] {
                    String::new()
                } else {
                    format!(" [{}]", interval_text(i))
                },
                k.verdict.as_str(),
                bounds(k)
            ),
            _ => format!("{}: {} ({})", k.name, k.verdict.as_str(), bounds(k)),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The claims table: verdict, what it rests on, each check's value against its bounds.
pub fn table(verdicts: &[ClaimVerdict]) -> Table {
    let rows = verdicts
        .iter()
        .map(|c| {
            let figure = if c.figure.is_empty() {
                "—".to_string()
            } else {
                format!("[{}](#{})", c.figure, figure_anchor(&c.figure))
            };
            vec![
                format!("[{}](#claim-{})", c.id, c.id.to_lowercase()),
                format!("“{}”", c.quote),
                c.section.clone(),
                figure,
                verdict_text(c.verdict),
                c.basis.label.clone(),
                checks_text(c),
            ]
        })
        .collect::<Vec<_>>();
    Table {
        id: "claims".into(),
        caption: "Claims of the paper and their verdicts on this run".into(),
        header: [
            "claim",
            "quote",
            "section",
            "figure",
            "verdict",
            "rests on",
            "measured against the bounds",
        ]
        .map(String::from)
        .to_vec(),
        align: vec!['l'; 7],
        note: rows
            .is_empty()
            .then(|| "not run: no claims verdicts (claims.json) for this run".to_string()),
        rows,
    }
}

/// Per claim: its reading, what the verdict rests on and where the run limits it, and each
/// check per setting (the pairs behind every count).
pub fn details(verdicts: &[ClaimVerdict]) -> Vec<Block> {
    let mut out = Vec::new();
    for c in verdicts {
        out.push(Block::Heading {
            level: 3,
            text: format!("{}: {}", c.id, verdict_text(c.verdict)),
            anchor: Some(format!("claim-{}", c.id.to_lowercase())),
        });
        out.push(Block::Para(format!(
            "“{}” ({}). **Reading:** {}",
            c.quote, c.section, c.reading
        )));
        let mut rests = format!("**Rests on:** {}", c.basis.label);
        if !c.basis.seeds.is_empty() {
            rests.push_str(&format!(
                "; seeds {}; N = {}",
                c.basis
                    .seeds
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                c.basis
                    .n
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !c.basis.quality.is_empty() {
            rests.push_str(&format!("; clean quality: {}", c.basis.quality.join(", ")));
        }
        out.push(Block::Para(format!("{rests}.")));
        if !c.limits.is_empty() {
            out.push(Block::Para(format!("**Limits:** {}.", c.limits.join("; "))));
        }
        let rows: Vec<Vec<String>> = c
            .checks
            .iter()
            .flat_map(|k| {
                let head = vec![
                    k.name.clone(),
                    "—".into(),
                    verdict_text(k.verdict),
                    k.interval.map(interval_text).unwrap_or_else(|| "—".into()),
                    bounds(k),
                    k.note.clone().unwrap_or_else(|| k.reason.clone()),
                ];
                let settings = k.settings.iter().map(move |s| {
                    let seeds = s
                        .units
                        .iter()
                        .map(|u| {
                            let mut t = format!("s{}: {}", u.seed, num(u.value));
                            if let (Some(a), Some(b)) = (u.a, u.b) {
                                t.push_str(&format!(" = {} / {}", num(a), num(b)));
                            }
                            if !u.detail.is_empty() {
                                t.push_str(&format!(" ({})", u.detail.join("; ")));
                            }
                            t
                        })
                        .collect::<Vec<_>>()
                        .join("; ");
                    vec![
                        String::new(),
                        s.label.clone(),
                        verdict_text(s.verdict),
                        interval_text(s.interval),
                        String::new(),
                        seeds,
                    ]
                });
                std::iter::once(head).chain(settings)
            })
            .collect();
        out.push(Block::Table(Table {
            id: format!("claim-{}", c.id.to_lowercase()),
            caption: format!("{}: checks and the settings behind them", c.id),
            header: [
                "check",
                "setting",
                "verdict",
                "value (min – max)",
                "bounds",
                "reason, or per seed",
            ]
            .map(String::from)
            .to_vec(),
            align: vec!['l', 'l', 'l', 'r', 'l', 'l'],
            rows,
            note: None,
        }));
    }
    out
}

/// The calibrated "on the target" thresholds of the run, one per target.
pub fn calibration_table(rows: &[Row]) -> Table {
    let cals: Vec<Calibration> = frame::calibrate::calibrations(rows);
    Table {
        id: "calibration".into(),
        caption: "“On the target” for clean samples: thresholds calibrated on the clean base model"
            .into(),
        header: [
            "target",
            "data",
            "threshold (per-image MSE)",
            "clean model's hits",
            "clean samples",
            "from cells",
        ]
        .map(String::from)
        .to_vec(),
        align: vec!['l', 'l', 'r', 'r', 'r', 'l'],
        note: cals.is_empty().then(|| {
            "not run: no clean base model sample set with per-image MSE records in this run"
                .to_string()
        }),
        rows: cals
            .iter()
            .map(|c| {
                vec![
                    c.target.clone(),
                    format!("{} {} px", c.dataset, c.image_size),
                    c.threshold
                        .map(num)
                        .unwrap_or_else(|| c.reason.clone().unwrap_or_default()),
                    c.clean_model_rate.map(num).unwrap_or_else(|| "—".into()),
                    c.n.to_string(),
                    c.from_cells
                        .iter()
                        .map(|x| format!("`{x}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                ]
            })
            .collect(),
    }
}

/// The scale model's regime (paper/miniature.md, criteria 1 and 2): per trigger–target pair
/// and seed at the sweep's highest fine-tuned rate, the shares of trigger and clean samples on
/// the target.
pub fn regime_table(rows: &[Row]) -> Table {
    use frame::regime::{self, HIT_MSE, MAX_CLEAN_HITS, MIN_TRIGGER_HITS};
    let pairs = regime::check(rows);
    let pct = |x: f64| format!("{:.1} %", x * 100.0);
    Table {
        id: "regime".into(),
        caption: format!(
            "The scale model's regime: trigger and clean samples within per-image MSE {HIT_MSE} of the target at the highest poison rate, with 95 % Wilson intervals (in the regime: ≥ {:.0} % and ≤ {:.0} %, each interval clear of its bound; one that straddles it is not established)",
            MIN_TRIGGER_HITS * 100.0,
            MAX_CLEAN_HITS * 100.0
        ),
        header: ["pair", "poison rate", "seed", "trigger samples", "clean samples", "samples per set", "in the regime"]
            .map(String::from)
            .to_vec(),
        align: vec!['l', 'r', 'r', 'r', 'r', 'r', 'l'],
        note: pairs
            .is_empty()
            .then(|| "not run: no fine-tuned E1 cell with per-image MSE records".to_string()),
        rows: pairs
            .iter()
            .map(|p| {
                vec![
                    format!("{} → {}", p.trigger, p.target),
                    pct(p.poison_rate),
                    p.seed.to_string(),
                    regime::share_text(p.trigger_hits, p.n),
                    regime::share_text(p.clean_hits, p.n),
                    p.n.to_string(),
                    p.standing().short().into(),
                ]
            })
            .collect(),
    }
}

/// Counts per verdict, in a fixed order, for the report's summary line.
pub fn summary(verdicts: &[ClaimVerdict]) -> String {
    Verdict::ALL
        .iter()
        .map(|v| (v, verdicts.iter().filter(|c| c.verdict == *v).count()))
        .filter(|(_, n)| *n > 0)
        .map(|(v, n)| format!("{n} {}", v.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line per claim for the terminal: id, verdict, what it rests on.
pub fn terminal_lines(verdicts: &[ClaimVerdict]) -> Vec<String> {
    verdicts
        .iter()
        .map(|c| format!("{}: {} ({})", c.id, verdict_text(c.verdict), c.basis.label))
        .collect()
}
