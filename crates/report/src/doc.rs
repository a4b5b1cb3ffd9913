//! A small document model rendered twice: Markdown (figures linked as files) and one
//! self-contained HTML page (SVG inline, PNG as base64).
use base64::Engine as _;

use crate::tables::Table;

pub enum Block {
    Heading {
        level: u8,
        text: String,
        anchor: Option<String>,
    },
    /// Text with inline Markdown: `code`, [links](#x) and **bold**.
    Para(String),
    Table(Table),
    /// A plotted figure: SVG inline in HTML, linked files in Markdown.
    Figure {
        anchor: String,
        caption: String,
        svg: String,
        svg_file: String,
        png_file: String,
    },
    /// A composed image (sample grids): PNG bytes inline in HTML.
    Image {
        anchor: String,
        caption: String,
        png: Vec<u8>,
        png_file: String,
    },
    Code(String),
    /// A boxed paragraph for what a reader must see first (e.g. what a run's verdicts can show).
    Callout(String),
}

pub struct Doc {
    pub title: String,
    pub blocks: Vec<Block>,
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Escapes `s` and turns its inline Markdown (code spans, links, bold) into HTML.
pub fn inline_html(s: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let find = |from: usize, c: char| (from..chars.len()).find(|&k| chars[k] == c);
    let text = |a: usize, b: usize| html_escape(&chars[a..b].iter().collect::<String>());
    while i < chars.len() {
        match chars[i] {
            '`' => {
                if let Some(end) = find(i + 1, '`') {
                    out.push_str(&format!("<code>{}</code>", text(i + 1, end)));
                    i = end + 1;
                    continue;
                }
            }
            '[' => {
                if let Some(mid) = find(i + 1, ']') {
                    if chars.get(mid + 1) == Some(&'(') {
                        if let Some(end) = find(mid + 2, ')') {
                            out.push_str(&format!(
                                "<a href=\"{}\">{}</a>",
                                text(mid + 2, end),
                                text(i + 1, mid)
                            ));
                            i = end + 1;
                            continue;
                        }
                    }
                }
            }
            '*' if chars.get(i + 1) == Some(&'*') => {
                let end = (i + 2..chars.len().saturating_sub(1))
                    .find(|&k| chars[k] == '*' && chars[k + 1] == '*');
                if let Some(end) = end {
                    out.push_str(&format!("<strong>{}</strong>", text(i + 2, end)));
                    i = end + 2;
                    continue;
                }
            }
            _ => {}
        }
        out.push_str(&html_escape(&chars[i].to_string()));
        i += 1;
    }
    out
}

fn table_html(t: &Table) -> String {
    let mut s = format!("<p class=\"caption\">{}</p>\n", inline_html(&t.caption));
    if let Some(note) = &t.note {
        s.push_str(&format!("<p class=\"note\">{}</p>\n", inline_html(note)));
        if t.rows.is_empty() {
            return s;
        }
    }
    s.push_str("<table>\n<thead><tr>");
    for h in &t.header {
        s.push_str(&format!("<th>{}</th>", inline_html(h)));
    }
    s.push_str("</tr></thead>\n<tbody>\n");
    for r in &t.rows {
        s.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            let class = if t.align.get(i) == Some(&'r') {
                " class=\"num\"".to_string()
            } else if let Some(v) = verdict_of(c) {
                format!(" class=\"verdict v-{}\"", v.as_str().replace(' ', "-"))
            } else {
                String::new()
            };
            s.push_str(&format!("<td{class}>{}</td>", inline_html(c)));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody>\n</table>\n");
    s
}

/// A cell that states a verdict ("✓ holds", "✗ fails", ...), coloured in HTML.
fn verdict_of(cell: &str) -> Option<frame::claims::Verdict> {
    frame::claims::Verdict::ALL
        .into_iter()
        .find(|v| cell == format!("{} {}", v.symbol(), v.as_str()))
}

const STYLE: &str = "body{font-family:'DejaVu Sans',sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.85em}\
th,td{border-top:1px solid #bbb;border-bottom:1px solid #bbb;padding:3px 8px;text-align:left;vertical-align:top}\
td.num{text-align:right;font-variant-numeric:tabular-nums}\
thead th{border-bottom:2px solid #444}\
figure{margin:1em 0 2em}figure svg,figure img{max-width:100%;height:auto;border:1px solid #eee}\
.caption{font-weight:bold}.note{color:#c81e1e;font-style:italic}\
pre{background:#f6f6f6;padding:0.8em;overflow-x:auto;font-size:0.8em}\
.callout{border-left:5px solid #0969da;background:#eef5ff;padding:0.6em 1em;margin:1em 0}\
td.verdict{font-weight:bold;white-space:nowrap}\
.v-holds{background:#dafbe1;color:#116329}.v-partly{background:#fff1c2;color:#7a4d00}\
.v-inconclusive{background:#e7ecf3;color:#24476b}.v-fails{background:#ffe1e1;color:#a40e26}\
.v-not-judged{background:#f0f0f0;color:#555}.v-not-run{background:#f7f7f7;color:#888}";

impl Doc {
    pub fn markdown(&self) -> String {
        let mut s = format!("# {}\n\n", self.title);
        for b in &self.blocks {
            match b {
                Block::Heading {
                    level,
                    text,
                    anchor,
                } => {
                    if let Some(a) = anchor {
                        s.push_str(&format!("<a id=\"{a}\"></a>\n\n"));
                    }
                    s.push_str(&format!("{} {text}\n\n", "#".repeat(*level as usize)));
                }
                Block::Para(p) => s.push_str(&format!("{p}\n\n")),
                Block::Table(t) => s.push_str(&format!("{}\n", t.markdown())),
                Block::Figure {
                    anchor,
                    caption,
                    svg_file,
                    png_file,
                    ..
                } => s.push_str(&format!(
                    "<a id=\"{anchor}\"></a>\n\n![{caption}]({svg_file})\n\n_{caption}_ ([PNG]({png_file}))\n\n"
                )),
                Block::Image {
                    anchor,
                    caption,
                    png_file,
                    ..
                } => s.push_str(&format!(
                    "<a id=\"{anchor}\"></a>\n\n![{caption}]({png_file})\n\n_{caption}_\n\n"
                )),
                Block::Code(c) => s.push_str(&format!("```\n{c}\n```\n\n")),
                Block::Callout(p) => s.push_str(&format!("> {p}\n\n")),
            }
        }
        s
    }

    pub fn html(&self) -> String {
        let mut s = format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
            html_escape(&self.title),
            html_escape(&self.title)
        );
        for b in &self.blocks {
            match b {
                Block::Heading {
                    level,
                    text,
                    anchor,
                } => {
                    let id = anchor
                        .as_ref()
                        .map(|a| format!(" id=\"{a}\""))
                        .unwrap_or_default();
                    s.push_str(&format!("<h{level}{id}>{}</h{level}>\n", inline_html(text)));
                }
                Block::Para(p) => s.push_str(&format!("<p>{}</p>\n", inline_html(p))),
                Block::Table(t) => s.push_str(&table_html(t)),
                Block::Figure {
                    anchor,
                    caption,
                    svg,
                    ..
                } => {
                    // Drop the XML prolog so the SVG can sit inside HTML.
                    let body = svg.find("<svg").map(|i| &svg[i..]).unwrap_or(svg);
                    s.push_str(&format!(
                        "<figure id=\"{anchor}\">\n{body}\n<figcaption>{}</figcaption>\n</figure>\n",
                        inline_html(caption)
                    ));
                }
                Block::Image {
                    anchor,
                    caption,
                    png,
                    ..
                } => {
                    let b64 = base64::engine::general_purpose::STANDARD.encode(png);
                    s.push_str(&format!(
                        "<figure id=\"{anchor}\">\n<img alt=\"{}\" src=\"data:image/png;base64,{b64}\">\n<figcaption>{}</figcaption>\n</figure>\n",
                        html_escape(caption),
                        inline_html(caption)
                    ));
                }
                Block::Code(c) => s.push_str(&format!("<pre>{}</pre>\n", html_escape(c))),
                Block::Callout(p) => s.push_str(&format!(
                    "<div class=\"callout\">{}</div>\n",
                    inline_html(p)
                )),
            }
        }
        s.push_str("</body>\n</html>\n");
        s
    }
}
