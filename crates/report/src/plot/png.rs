//! PNG output with real text. Plotters is built without a font feature, so layout uses its
//! font-free size estimate (identical for SVG and PNG, and independent of installed fonts); this
//! backend wrapper draws the glyphs themselves from a font file loaded at run time.
use std::path::PathBuf;

use ab_glyph::{Font as _, FontArc, ScaleFont as _};
use anyhow::{Context, Result};
use plotters::prelude::*;
use plotters_backend::{
    text_anchor::{HPos, VPos},
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind, FontTransform,
};

/// Where Debian's fonts-dejavu-core puts DejaVu Sans.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// Overrides [`DEFAULT_FONT`].
pub const FONT_ENV: &str = "BADDIFF_REPORT_FONT";

/// The font PNG figures and image grids are labelled with.
#[derive(Clone)]
pub struct Font(FontArc);

impl Font {
    /// Loads `$BADDIFF_REPORT_FONT`, else DejaVu Sans from Debian's package.
    pub fn load() -> Result<Font> {
        let path = std::env::var_os(FONT_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_FONT));
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "PNG figures need a TrueType font: {} is missing; install it with \
                 `apt-get install -y fonts-dejavu-core` (or set {FONT_ENV} to a .ttf file)",
                path.display()
            )
        })?;
        let font = FontArc::try_from_vec(bytes)
            .with_context(|| format!("{} is not a TrueType/OpenType font", path.display()))?;
        Ok(Font(font))
    }

    fn scale(&self, em_px: f32) -> ab_glyph::PxScale {
        self.0
            .pt_to_px_scale(em_px)
            .unwrap_or(ab_glyph::PxScale::from(em_px))
    }

    /// Width in pixels of `text` at an em size of `em_px`.
    pub fn width(&self, em_px: f32, text: &str) -> f32 {
        let font = self.0.as_scaled(self.scale(em_px));
        let mut x = 0.0;
        let mut prev = None;
        for c in text.chars() {
            let id = font.glyph_id(c);
            if let Some(p) = prev {
                x += font.kern(p, id);
            }
            x += font.h_advance(id);
            prev = Some(id);
        }
        x
    }

    /// Calls `put(x, y, coverage)` for each pixel of `text` with its baseline starting at (0, 0).
    pub fn draw(&self, em_px: f32, text: &str, mut put: impl FnMut(i32, i32, f32)) {
        let scale = self.scale(em_px);
        let font = self.0.as_scaled(scale);
        let mut caret = 0.0;
        let mut prev = None;
        for c in text.chars() {
            let id = font.glyph_id(c);
            if let Some(p) = prev {
                caret += font.kern(p, id);
            }
            let glyph = id.with_scale_and_position(scale, ab_glyph::point(caret, 0.0));
            caret += font.h_advance(id);
            prev = Some(id);
            if let Some(outline) = self.0.outline_glyph(glyph) {
                let b = outline.px_bounds();
                outline.draw(|gx, gy, cov| {
                    put(b.min.x as i32 + gx as i32, b.min.y as i32 + gy as i32, cov)
                });
            }
        }
    }
}

/// A bitmap backend whose text is drawn with [`Font`], placed as an SVG viewer would place it
/// (same anchors, same `size / 1.24` em size) so PNG and SVG look alike.
pub struct TextBitmap<'a> {
    inner: BitMapBackend<'a>,
    font: Font,
}

impl<'a> TextBitmap<'a> {
    pub fn new(buffer: &'a mut [u8], size: (u32, u32), font: Font) -> Self {
        TextBitmap {
            inner: BitMapBackend::with_buffer(buffer, size),
            font,
        }
    }
}

type BitmapError = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

impl DrawingBackend for TextBitmap<'_> {
    type ErrorType = BitmapError;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }
    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.ensure_prepared()
    }
    fn present(&mut self) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.present()
    }
    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.draw_pixel(point, color)
    }
    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.draw_line(from, to, style)
    }
    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }
    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.draw_path(path, style)
    }
    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.draw_circle(center, radius, style, fill)
    }
    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.fill_polygon(vert, style)
    }
    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        (iw, ih): (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<BitmapError>> {
        self.inner.blit_bitmap(pos, (iw, ih), src)
    }

    fn draw_text<T: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &T,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<BitmapError>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let em = (style.size() / 1.24) as f32;
        let width = self.font.width(em, text);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0.0,
            HPos::Center => -width / 2.0,
            HPos::Right => -width,
        };
        // The SVG backend's `dy` values: 0.76em, 0.5ex and -0.5ex (1ex taken as 0.5em).
        let dy = match style.anchor().v_pos {
            VPos::Top => 0.76 * em,
            VPos::Center => 0.25 * em,
            VPos::Bottom => -0.25 * em,
        };
        let transform = style.transform();
        let mut pixels = Vec::new();
        self.font.draw(em, text, |x, y, cov| {
            let (rx, ry) = (x + dx.round() as i32, y + dy.round() as i32);
            let (tx, ty) = match transform {
                FontTransform::Rotate90 => (-ry, rx),
                FontTransform::Rotate180 => (-rx, -ry),
                FontTransform::Rotate270 => (ry, -rx),
                _ => (rx, ry),
            };
            pixels.push(((pos.0 + tx, pos.1 + ty), cov));
        });
        for (p, cov) in pixels {
            let c = BackendColor {
                alpha: color.alpha * cov.clamp(0.0, 1.0) as f64,
                rgb: color.rgb,
            };
            self.inner.draw_pixel(p, c)?;
        }
        Ok(())
    }
}

/// Renders a drawing into PNG bytes with [`TextBitmap`].
pub fn render_png(
    size: (u32, u32),
    font: &Font,
    draw: impl FnOnce(DrawingArea<TextBitmap<'_>, plotters::coord::Shift>) -> Result<()>,
) -> Result<Vec<u8>> {
    let mut buffer = vec![255u8; (size.0 * size.1 * 3) as usize];
    {
        let backend = TextBitmap::new(&mut buffer, size, font.clone());
        let root = backend.into_drawing_area();
        draw(root)?;
    }
    let img = image::RgbImage::from_raw(size.0, size.1, buffer)
        .context("bitmap buffer has the wrong size")?;
    encode_png(&image::DynamicImage::ImageRgb8(img))
}

/// PNG-encodes an image in memory.
pub fn encode_png(img: &image::DynamicImage) -> Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .context("encoding PNG")?;
    Ok(out.into_inner())
}
