//! Image grids composed from PNG files: Tab. 1 (trigger and target gallery) and Tab. 2 / Fig. 4b
//! (clean and backdoor samples per poison rate). Missing images give a visible "not run" cell.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use image::{imageops, Rgb, RgbImage};

use crate::figures::{rate_label, FAMILIES};
use crate::plot::Font;
use crate::schema::Row;

/// One labelled cell: its images are tiled side by side.
#[derive(Clone, Debug)]
pub struct GridCell {
    pub label: String,
    pub images: Vec<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct GridRow {
    pub label: String,
    pub cells: Vec<GridCell>,
}

#[derive(Clone, Debug)]
pub struct Grid {
    pub title: String,
    pub rows: Vec<GridRow>,
    /// Each image is scaled (nearest neighbour, so pixels stay visible) to this many pixels.
    pub tile: u32,
    /// At most this many images per cell.
    pub per_cell: usize,
}

const LABEL_W: u32 = 120;
const TITLE_H: u32 = 34;
const CAPTION_H: u32 = 22;
const PAD: u32 = 10;
const TEXT: Rgb<u8> = Rgb([20, 20, 20]);
const NOTE: Rgb<u8> = Rgb([200, 30, 30]);

fn draw_text(
    img: &mut RgbImage,
    font: &Font,
    em: f32,
    (x, y): (i32, i32),
    text: &str,
    colour: Rgb<u8>,
) {
    let (w, h) = (img.width() as i32, img.height() as i32);
    font.draw(em, text, |gx, gy, cov| {
        let (px, py) = (x + gx, y + gy);
        if px >= 0 && py >= 0 && px < w && py < h {
            let p = img.get_pixel_mut(px as u32, py as u32);
            for c in 0..3 {
                let a = cov.clamp(0.0, 1.0);
                p.0[c] = (p.0[c] as f32 * (1.0 - a) + colour.0[c] as f32 * a).round() as u8;
            }
        }
    });
}

/// PNG files of a directory, sorted by name (the first `limit`).
pub fn pngs_in(dir: &Path, limit: usize) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.truncate(limit);
    files
}

/// Composes the grid into one image.
pub fn compose(grid: &Grid, font: &Font) -> Result<RgbImage> {
    // Cells are as wide as the fullest cell, at most `per_cell` images.
    let per_cell = grid
        .rows
        .iter()
        .flat_map(|r| &r.cells)
        .map(|c| c.images.len().min(grid.per_cell))
        .max()
        .unwrap_or(1)
        .max(1) as u32;
    let cell_w = grid.tile * per_cell + (per_cell - 1) * 2;
    let cols = grid
        .rows
        .iter()
        .map(|r| r.cells.len())
        .max()
        .unwrap_or(0)
        .max(1) as u32;
    let row_h = CAPTION_H + grid.tile + PAD;
    let title_w = font.width(16.0, &grid.title).ceil() as u32 + 2 * PAD;
    let label_w = grid
        .rows
        .iter()
        .map(|r| font.width(13.0, &r.label).ceil() as u32 + 2 * PAD)
        .fold(LABEL_W, u32::max);
    let width = (label_w + cols * (cell_w + PAD) + PAD).max(title_w);
    let height = TITLE_H + grid.rows.len().max(1) as u32 * row_h + PAD;
    let mut img = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    draw_text(&mut img, font, 16.0, (PAD as i32, 22), &grid.title, TEXT);
    if grid.rows.is_empty() {
        draw_text(
            &mut img,
            font,
            14.0,
            (label_w as i32, TITLE_H as i32 + 30),
            "not run",
            NOTE,
        );
    }
    for (ri, row) in grid.rows.iter().enumerate() {
        let y0 = TITLE_H + ri as u32 * row_h;
        let label_y = (y0 + CAPTION_H + grid.tile / 2 + 5) as i32;
        draw_text(
            &mut img,
            font,
            13.0,
            (PAD as i32, label_y),
            &row.label,
            TEXT,
        );
        for (ci, cell) in row.cells.iter().enumerate() {
            let x0 = label_w + ci as u32 * (cell_w + PAD);
            draw_text(
                &mut img,
                font,
                12.0,
                (x0 as i32, (y0 + 16) as i32),
                &cell.label,
                TEXT,
            );
            let ty = y0 + CAPTION_H;
            if cell.images.is_empty() {
                for x in x0..x0 + cell_w {
                    for y in ty..ty + grid.tile {
                        img.put_pixel(x, y, Rgb([235, 235, 235]));
                    }
                }
                let cy = (ty + grid.tile / 2 + 5) as i32;
                draw_text(&mut img, font, 13.0, (x0 as i32 + 6, cy), "not run", NOTE);
                continue;
            }
            for (k, path) in cell.images.iter().take(grid.per_cell.max(1)).enumerate() {
                let tile = image::open(path)
                    .with_context(|| format!("reading grid image {}", path.display()))?
                    .to_rgb8();
                let tile =
                    imageops::resize(&tile, grid.tile, grid.tile, imageops::FilterType::Nearest);
                let x = x0 + k as u32 * (grid.tile + 2);
                imageops::replace(&mut img, &tile, x as i64, ty as i64);
            }
        }
    }
    Ok(img)
}

/// Tab. 1: the images in `dir/triggers/*.png` and `dir/targets/*.png`, labelled by file name.
pub fn gallery(dir: &Path) -> Grid {
    let row = |sub: &str, label: &str| GridRow {
        label: label.into(),
        cells: pngs_in(&dir.join(sub), 32)
            .into_iter()
            .map(|p| GridCell {
                label: p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                images: vec![p],
            })
            .collect(),
    };
    let rows: Vec<GridRow> = [row("triggers", "triggers"), row("targets", "targets")]
        .into_iter()
        .filter(|r| !r.cells.is_empty())
        .collect();
    Grid {
        title: if rows.is_empty() {
            format!(
                "Tab. 1: triggers and targets: not run (no images under {})",
                dir.display()
            )
        } else {
            "Tab. 1: triggers and targets".into()
        },
        rows,
        tile: 64,
        per_cell: 1,
    }
}

/// Tab. 2 / Fig. 4b: per poison rate, clean and backdoor samples of one model (lowest seed), read
/// from `samples_dir/<cell>/{clean,backdoor}/*.png`.
pub fn samples(title: &str, rows: &[&Row], samples_dir: &Path, per_cell: usize) -> Grid {
    let mut by_rate: Vec<(f64, i64, String)> = rows
        .iter()
        .map(|r| (r.poison_rate, r.seed, r.cell.clone()))
        .collect();
    by_rate.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    by_rate.dedup_by(|b, a| a.0 == b.0);
    let grid_rows: Vec<GridRow> = ["clean", "backdoor"]
        .iter()
        .map(|kind| GridRow {
            label: format!("{kind} noise"),
            cells: by_rate
                .iter()
                .map(|(rate, _, cell)| GridCell {
                    label: rate_label(*rate),
                    images: pngs_in(&samples_dir.join(cell).join(kind), per_cell),
                })
                .collect(),
        })
        .collect();
    let empty = by_rate.is_empty();
    Grid {
        title: if empty {
            format!("{title}: not run")
        } else {
            title.into()
        },
        rows: if empty { Vec::new() } else { grid_rows },
        tile: 48,
        per_cell,
    }
}

/// The cells of Tab. 2: Grey Box → Shoe (or the first E1 Grey Box target present), plain sampling.
pub fn tab2_rows(rows: &[Row]) -> (String, Vec<&Row>) {
    let family = FAMILIES[0].1;
    let e1: Vec<&Row> = rows
        .iter()
        .filter(|r| r.experiment == "E1" && r.trigger.starts_with(family))
        .filter(|r| r.clip == "none" && r.defense == "none" && r.sampler == "ddpm")
        .collect();
    let target = if e1.iter().any(|r| r.target == "Shoe") {
        "Shoe".to_string()
    } else {
        e1.first()
            .map(|r| r.target.clone())
            .unwrap_or_else(|| "Shoe".into())
    };
    let picked = e1.into_iter().filter(|r| r.target == target).collect();
    (target, picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_places_images_and_marks_missing_cells() {
        let Ok(font) = Font::load() else {
            eprintln!("skipping: no PNG font (install fonts-dejavu-core)");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let red = dir.path().join("red.png");
        RgbImage::from_pixel(8, 8, Rgb([255, 0, 0]))
            .save(&red)
            .unwrap();
        let grid = Grid {
            title: "t".into(),
            rows: vec![GridRow {
                label: "clean".into(),
                cells: vec![
                    GridCell {
                        label: "0%".into(),
                        images: vec![red.clone(), red],
                    },
                    GridCell {
                        label: "10%".into(),
                        images: vec![],
                    },
                ],
            }],
            tile: 20,
            per_cell: 2,
        };
        let img = compose(&grid, &font).unwrap();
        let cell_w = 2 * 20 + 2;
        assert_eq!(img.width(), LABEL_W + 2 * (cell_w + PAD) + PAD);
        let y = TITLE_H + CAPTION_H + 10;
        assert_eq!(*img.get_pixel(LABEL_W + 5, y), Rgb([255, 0, 0]));
        assert_eq!(
            *img.get_pixel(LABEL_W + 22 + 5, y),
            Rgb([255, 0, 0]),
            "second tile"
        );
        assert_eq!(
            *img.get_pixel(LABEL_W + cell_w + PAD + 1, y - 8),
            Rgb([235, 235, 235]),
            "not run cell"
        );
    }
}
