//! Snapshots of every figure (SVG) and every table (Markdown and LaTeX) rendered from the fixed
//! fixture frame. SVG text is placed with plotters' font-free estimate, so these hold on machines
//! without the PNG font.
mod common;

use report::figures::{self, Figure};
use report::{claims, fixture, plot, released, tables};

fn figs() -> Vec<Figure> {
    figures::all(&fixture::rows())
}

#[test]
fn every_figure_svg() {
    let figs = figs();
    let ids: Vec<&str> = figs.iter().map(|f| f.id()).collect();
    assert_eq!(
        ids,
        [
            "fig2a",
            "fig2b",
            "fig3a",
            "fig3b",
            "fig4a",
            "fig5a",
            "fig5b",
            "anp",
            "anp-budget",
            "e6a",
            "e6b"
        ]
    );
    for fig in &figs {
        insta::assert_snapshot!(format!("svg_{}", fig.id()), plot::svg(fig).unwrap());
    }
}

#[test]
fn every_figure_table() {
    for fig in &figs() {
        let t = tables::figure_table(fig);
        insta::assert_snapshot!(format!("table_{}_md", fig.id()), t.markdown());
        insta::assert_snapshot!(format!("table_{}_tex", fig.id()), t.latex());
    }
}

#[test]
fn inpainting_table() {
    let t = tables::inpainting_table(&fixture::rows());
    assert_eq!(t.rows.len(), 6, "two models x three corruptions");
    insta::assert_snapshot!("table_inpainting_md", t.markdown());
    insta::assert_snapshot!("table_inpainting_tex", t.latex());
}

#[test]
fn sampler_table() {
    let t = tables::sampler_table(&fixture::rows());
    assert_eq!(t.rows.len(), 3, "ddpm, ddim and dpm-solver");
    insta::assert_snapshot!("table_samplers_md", t.markdown());
    insta::assert_snapshot!("table_samplers_tex", t.latex());
}

#[test]
fn claims_table() {
    let t = claims::table(&common::verdicts());
    insta::assert_snapshot!("table_claims_md", t.markdown());
    insta::assert_snapshot!("table_claims_tex", t.latex());
}

#[test]
fn released_table() {
    let scores = released::read(&report::report::default_released_scores()).unwrap();
    assert_eq!(scores.score.len(), 58, "every released value");
    // Our measurement of one released value, as a `released` run would record it.
    let mut row = fixture::rows()[0].clone();
    let s = &scores.score[0];
    (
        row.poison_rate,
        row.trigger,
        row.target,
        row.metric,
        row.samples,
    ) = (
        s.poison_rate,
        s.trigger.clone(),
        s.target.clone(),
        s.metric.clone(),
        s.samples.clone(),
    );
    (row.sampler, row.steps, row.clip, row.n_generated, row.value) =
        (s.sampler.clone(), s.steps, s.clip.clone(), s.n, 70.0);
    let t = released::table(&scores, &[row]);
    assert_eq!(t.rows[0][7], "70.00");
    assert_eq!(t.rows[1][7], "not run");
    // 70 against the released 74.63 FID: 6 % off, within the FID band of ±10 %.
    assert_eq!(t.rows[0][9], "±10.00 %");
    assert_eq!(t.rows[0][10], "✓ within");
    assert_eq!(t.rows[1][10], "not run");
    insta::assert_snapshot!("table_released_md", t.markdown());
    insta::assert_snapshot!("table_released_tex", t.latex());
}

#[test]
fn report_markdown_with_volatile_fields_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    common::run_dir(&run);
    let opts = report::RenderOptions::for_run(&run);
    let Ok(font) = plot::Font::load() else {
        eprintln!("skipping: no PNG font (install fonts-dejavu-core)");
        return;
    };
    let rows = fixture::rows();
    let r = report::report::render_rows(
        &rows,
        Some(&common::manifest()),
        &common::verdicts(),
        &run,
        &opts,
        &font,
    )
    .unwrap();
    let md = std::fs::read_to_string(&r.report_md).unwrap();
    insta::with_settings!({filters => vec![
        (r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", "[timestamp]"),
        (r#""commit": "[0-9a-f]+""#, r#""commit": "[commit]""#),
        (r"git\.commit \| [0-9a-f]+", "git.commit | [commit]"),
    ]}, {
        insta::assert_snapshot!("report_md", md);
    });
}
