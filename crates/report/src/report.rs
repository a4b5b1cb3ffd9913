//! Renders a run directory into the paper report: every figure (SVG + PNG), every table (Markdown +
//! LaTeX), the claims verdicts, the released-numbers comparison (`released` profile) and the
//! artifact-evaluation appendix, as `report.md` and one self-contained `report.html`.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::doc::{Block, Doc};
use crate::figures::{self, Figure};
use crate::plot::{self, png::encode_png, Font};
use crate::schema::{self, Row};
use crate::tables::{self, Table};
use crate::{appendix, claims, grid, released};

/// What to render and where.
#[derive(Clone, Debug)]
pub struct RenderOptions {
    /// Output directory (created); default `<run>/report`.
    pub out_dir: PathBuf,
    /// Tab. 1 images (`triggers/*.png`, `targets/*.png`); default `<run>/gallery`.
    pub gallery_dir: Option<PathBuf>,
    /// Sample images (`<cell>/{clean,backdoor}/*.png`); default `<run>/samples`.
    pub samples_dir: Option<PathBuf>,
    /// The authors' released scores; default the committed `paper/released_scores.toml`.
    pub released_scores: Option<PathBuf>,
}

impl RenderOptions {
    pub fn for_run(run_dir: &Path) -> Self {
        RenderOptions {
            out_dir: run_dir.join("report"),
            gallery_dir: None,
            samples_dir: None,
            released_scores: None,
        }
    }
}

/// What was written.
#[derive(Clone, Debug, Default)]
pub struct Rendered {
    pub report_md: PathBuf,
    pub report_html: PathBuf,
    pub files: Vec<PathBuf>,
    pub not_run: Vec<String>,
}

/// The committed released-scores file of this repository.
pub fn default_released_scores() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../paper/released_scores.toml")
}

struct Writer {
    out: PathBuf,
    files: Vec<PathBuf>,
}

impl Writer {
    fn write(&mut self, rel: &str, bytes: &[u8]) -> Result<()> {
        let path = self.out.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        self.files.push(path);
        Ok(())
    }

    fn table(&mut self, t: &Table) -> Result<()> {
        self.write(&format!("tables/{}.md", t.id), t.markdown().as_bytes())?;
        self.write(&format!("tables/{}.tex", t.id), t.latex().as_bytes())
    }
}

fn figure_block(w: &mut Writer, fig: &Figure, font: &Font) -> Result<Block> {
    let svg = plot::svg(fig)?;
    let png = plot::png(fig, font)?;
    let svg_file = format!("figures/{}.svg", fig.id());
    let png_file = format!("figures/{}.png", fig.id());
    w.write(&svg_file, svg.as_bytes())?;
    w.write(&png_file, &png)?;
    Ok(Block::Figure {
        anchor: fig.id().to_string(),
        caption: fig.title().to_string(),
        svg,
        svg_file,
        png_file,
    })
}

fn grid_block(w: &mut Writer, id: &str, g: &grid::Grid, font: &Font) -> Result<Block> {
    let img = grid::compose(g, font)?;
    let png = encode_png(&image::DynamicImage::ImageRgb8(img))?;
    let file = format!("figures/{id}.png");
    w.write(&file, &png)?;
    Ok(Block::Image {
        anchor: id.into(),
        caption: g.title.clone(),
        png,
        png_file: file,
    })
}

fn heading(level: u8, text: &str, anchor: Option<&str>) -> Block {
    Block::Heading {
        level,
        text: text.into(),
        anchor: anchor.map(String::from),
    }
}

/// The report of the run in `run_dir` (`metrics.parquet`, optional `manifest.json` and
/// `claims.json`, sample folders).
pub fn render(run_dir: &Path, opts: &RenderOptions) -> Result<Rendered> {
    let rows = schema::read_rows(&run_dir.join(schema::FRAME_FILE))?;
    let manifest = crate::run_manifest::read(run_dir)?;
    let claims_path = run_dir.join(claims::CLAIMS_FILE);
    let verdicts = if claims_path.exists() {
        claims::read(&claims_path)?
    } else {
        Vec::new()
    };
    let font = Font::load()?;
    render_rows(&rows, manifest.as_ref(), &verdicts, run_dir, opts, &font)
}

/// [`render`] from already loaded parts (tests use it with fixture rows).
pub fn render_rows(
    rows: &[Row],
    manifest: Option<&Value>,
    verdicts: &[claims::ClaimVerdict],
    run_dir: &Path,
    opts: &RenderOptions,
    font: &Font,
) -> Result<Rendered> {
    let mut w = Writer {
        out: opts.out_dir.clone(),
        files: Vec::new(),
    };
    let mut not_run = Vec::new();
    let run_id = rows
        .first()
        .map(|r| r.run_id.clone())
        .or_else(|| {
            manifest
                .and_then(|m| m.get("run_id"))
                .and_then(Value::as_str)
                .map(String::from)
        })
        .unwrap_or_else(|| "unknown".into());
    let info = claims::run_info(manifest)?;
    let profile = info.profile.clone();
    let mut blocks = vec![Block::Callout(what_it_shows(&run_id, &info, rows.len()))];

    blocks.push(heading(2, "Claims", Some("claims")));
    if !verdicts.is_empty() {
        let label = info
            .scale
            .as_ref()
            .map_or("verdicts of an unlabelled run", |s| {
                s.fidelity.verdicts_label()
            });
        blocks.push(Block::Para(format!(
            "Verdicts ({label}): {}. ✓ holds, ◐ partly, ? inconclusive (an interval over seeds straddles a bound), ✗ fails, – not judged, ∅ not run. Each claim's reading, the settings behind it and what limits it follow the table.",
            claims::summary(verdicts)
        )));
    }
    let claims_table = claims::table(verdicts);
    w.table(&claims_table)?;
    blocks.push(Block::Table(claims_table));
    blocks.extend(claims::details(verdicts));
    let cal = claims::calibration_table(rows);
    w.table(&cal)?;
    blocks.push(heading(3, "Calibrated thresholds", Some("calibration")));
    blocks.push(Block::Table(cal));
    if info
        .scale
        .as_ref()
        .is_some_and(|s| s.fidelity == claims::Fidelity::Miniature)
    {
        let regime = claims::regime_table(rows);
        w.table(&regime)?;
        blocks.push(heading(3, "The scale model's regime", Some("regime")));
        blocks.push(Block::Para(
            "A scale model's verdicts mean something only where its backdoor takes and its clean samples stay clean, as on the paper's models ([criteria](miniature.md)); every verdict of a run outside the regime, or not shown to be in it (a share's 95 % interval straddles its bound), says so.".into(),
        ));
        blocks.push(Block::Table(regime));
    }

    blocks.push(heading(2, "Figures and tables", Some("figures")));
    let gallery_dir = opts
        .gallery_dir
        .clone()
        .unwrap_or_else(|| run_dir.join("gallery"));
    let gallery = grid::gallery(&gallery_dir);
    if gallery.rows.is_empty() {
        not_run.push("tab1".into());
    }
    blocks.push(heading(3, "Tab. 1: triggers and targets", Some("tab1")));
    blocks.push(grid_block(&mut w, "tab1", &gallery, font)?);

    let samples_dir = opts
        .samples_dir
        .clone()
        .unwrap_or_else(|| run_dir.join("samples"));
    let figs = figures::all(rows);
    for fig in &figs {
        if fig.id() == "fig3a" {
            // Tab. 2 sits between Fig. 2 and Fig. 3 in the paper.
            let (target, picked) = grid::tab2_rows(rows);
            let g = grid::samples(
                &format!("Tab. 2: Grey Box → {target}: clean and backdoor samples per poison rate"),
                &picked,
                &samples_dir,
                4,
            );
            if g.rows.is_empty() {
                not_run.push("tab2".into());
            }
            blocks.push(heading(3, "Tab. 2: samples per poison rate", Some("tab2")));
            blocks.push(grid_block(&mut w, "tab2", &g, font)?);
        }
        if let Some(n) = fig.not_run() {
            not_run.push(format!("{}: {n}", fig.id()));
        }
        let short = fig.title().split(':').next().unwrap_or(fig.title());
        blocks.push(heading(3, short, None));
        blocks.push(figure_block(&mut w, fig, font)?);
        let t = tables::figure_table(fig);
        w.table(&t)?;
        blocks.push(Block::Table(t));
        if fig.id() == "fig4a" {
            let e3: Vec<&Row> = rows
                .iter()
                .filter(|r| r.experiment == "E3" && r.clip == "none" && r.defense == "none")
                .collect();
            let g = grid::samples(
                "Fig. 4b: CelebA-HQ samples per poison rate",
                &e3,
                &samples_dir,
                2,
            );
            if g.rows.is_empty() {
                not_run.push("fig4b".into());
            }
            blocks.push(heading(3, "Fig. 4b: CelebA-HQ samples", None));
            blocks.push(grid_block(&mut w, "fig4b", &g, font)?);
        }
    }
    blocks.push(heading(
        3,
        "Samplers: DDPM vs DDIM vs DPM-Solver",
        Some("samplers"),
    ));
    let st = tables::sampler_table(rows);
    w.table(&st)?;
    blocks.push(Block::Table(st));
    blocks.push(heading(
        3,
        "E7: corrupted inputs (§4.7, reconstructed)",
        Some("inpainting"),
    ));
    let it = tables::inpainting_table(rows);
    w.table(&it)?;
    blocks.push(Block::Table(it));
    blocks.push(heading(3, "Defenses: effect and cost", Some("defenses")));
    let dt = tables::defense_table(rows);
    w.table(&dt)?;
    blocks.push(Block::Table(dt));

    blocks.push(heading(2, "Later defenses", Some("later")));
    blocks.push(Block::Para(
        "Beyond the paper: Elijah (An et al., AAAI 2024), TERD (Mo et al., ICML 2024) and a model-free input-noise test in the spirit of DisDet, run on every model of the `later` experiment, the clean one included, at the settings the profile states (the published ones in the GPU profiles). Where this port departs from the authors' code is in [deviations](deviations.md).".into(),
    ));
    for t in [
        tables::later::detection_table(rows),
        tables::later::models_table(rows),
    ] {
        w.table(&t)?;
        blocks.push(Block::Table(t));
    }
    let fig = figures::later_scores(rows);
    if let Some(n) = fig.not_run() {
        not_run.push(format!("{}: {n}", fig.id()));
    }
    blocks.push(figure_block(&mut w, &fig, font)?);
    for t in [
        tables::later::removal_table(rows),
        tables::later::inputs_table(rows),
    ] {
        w.table(&t)?;
        blocks.push(Block::Table(t));
    }

    if profile == "released" {
        let path = opts
            .released_scores
            .clone()
            .unwrap_or_else(default_released_scores);
        let scores = released::read(&path)?;
        blocks.push(heading(
            2,
            "The authors' released numbers",
            Some("released"),
        ));
        let t = released::table(&scores, rows);
        w.table(&t)?;
        blocks.push(Block::Table(t));
    }

    blocks.extend(appendix::blocks(manifest, verdicts));
    let doc = Doc {
        title: format!("BadDiffusion reproduction report: run {run_id}"),
        blocks,
    };
    w.write("report.md", doc.markdown().as_bytes())?;
    w.write("report.html", doc.html().as_bytes())?;
    Ok(Rendered {
        report_md: opts.out_dir.join("report.md"),
        report_html: opts.out_dir.join("report.html"),
        files: w.files,
        not_run,
    })
}

/// The report's first screen: which run, what profile and scale, and what its verdicts mean.
fn what_it_shows(run_id: &str, info: &claims::RunInfo, n_rows: usize) -> String {
    let head = format!(
        "Run `{run_id}`, profile `{}`, {n_rows} measured values.",
        info.profile
    );
    let Some(scale) = &info.scale else {
        return format!(
            "{head} The run records no scale (its manifest predates it): read its verdicts as \
             those of an unknown scale."
        );
    };
    let meaning = match scale.fidelity {
        claims::Fidelity::Miniature => {
            "**These are verdicts of a scale model.** They say whether the paper's effects \
             appear in a miniature of its experiments, not whether the paper's numbers hold on \
             CIFAR-10 or CelebA-HQ; a claim the miniature cannot express reads `not run` or \
             `not judged` with the reason. How each setting was shrunk: \
             [deviations](deviations.md)."
        }
        claims::Fidelity::Paper => {
            "**These are verdicts on the paper's data and models**, at the sample counts and \
             seeds below; each claim lists where this profile departs from the paper."
        }
        claims::Fidelity::Rehearsal => {
            "**This is a dress rehearsal, not a result.** The profile was shrunk (`--shrink`) to \
             a few training steps and samples to check that every stage runs at the real shapes; \
             its numbers and verdicts mean nothing about the paper."
        }
    };
    let seeds = if scale.seeds.len() == 1 {
        " One seed: every verdict is a single run, without a spread."
    } else {
        " Values over seeds are shown as min–max intervals; an interval that straddles a bound reads `inconclusive`."
    };
    format!(
        "{head} Scale: {}. {meaning}{seeds} Figures: bars show clean quality (FID, or a proxy \
         Fréchet distance labelled as such), curves the MSE of backdoor samples to the target.",
        scale.summary()
    )
}

/// Copies a rendered report (report.md, report.html, figures/, tables/) into `dest`, e.g. `paper/`.
pub fn publish(rendered_dir: &Path, dest: &Path) -> Result<()> {
    for rel in ["report.md", "report.html"] {
        std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
        std::fs::copy(rendered_dir.join(rel), dest.join(rel))
            .with_context(|| format!("copying {rel} to {}", dest.display()))?;
    }
    for sub in ["figures", "tables"] {
        let to = dest.join(sub);
        std::fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
        let from = rendered_dir.join(sub);
        let entries =
            std::fs::read_dir(&from).with_context(|| format!("reading {}", from.display()))?;
        for entry in entries {
            let p = entry?.path();
            if let Some(name) = p.file_name() {
                std::fs::copy(&p, to.join(name))
                    .with_context(|| format!("copying {} to {}", p.display(), to.display()))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod publish_tests {
    /// A failed copy or folder creation names the path ("File exists" alone named nothing).
    #[test]
    fn publish_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let rendered = dir.path().join("rendered");
        std::fs::create_dir_all(&rendered).unwrap();
        for f in ["report.md", "report.html"] {
            std::fs::write(rendered.join(f), "x").unwrap();
        }
        // `figures` exists in the destination as a file: creating the folder fails.
        let dest = dir.path().join("paper");
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::write(dest.join("figures"), "not a folder").unwrap();
        let err = format!("{:#}", super::publish(&rendered, &dest).unwrap_err());
        assert!(
            err.contains(&dest.join("figures").display().to_string()),
            "{err}"
        );
    }
}
