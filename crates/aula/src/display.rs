//! Rich output in Jupyter. evcxr shows a cell's last value through its
//! `evcxr_display` method, which prints `EVCXR_BEGIN_CONTENT <mime>` blocks; a
//! value may give several MIME types (the notebook picks the richest).

use crate::model::Summary;
use crate::train::History;
use anyhow::{bail, Result};
use base64::Engine;
use plotters::prelude::*;
use tch::{Kind, Tensor};

fn emit(mime: &str, content: &str) {
    println!("EVCXR_BEGIN_CONTENT {mime}\n{content}\nEVCXR_END_CONTENT");
}

fn emit_png(png: &[u8]) {
    emit("image/png", &base64::engine::general_purpose::STANDARD.encode(png));
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

impl Summary {
    /// Keras's table as HTML, with the text table as the plain-text fallback.
    pub fn to_html(&self) -> String {
        let mut html = format!(
            "<table><caption>Model: \"{}\"</caption><thead><tr><th>Layer (type)</th><th>Output Shape</th>\
             <th>Param #</th></tr></thead><tbody>",
            escape(&self.name)
        );
        for (layer, shape, params) in &self.rows {
            html.push_str(&format!(
                "<tr><td><code>{}</code></td><td><code>{}</code></td><td style=\"text-align:right\">{}</td></tr>",
                escape(layer),
                escape(shape),
                crate::model::thousands(*params)
            ));
        }
        html.push_str(&format!(
            "</tbody></table><p>Total params: {}<br>Trainable params: {}<br>Non-trainable params: {}</p>",
            crate::model::thousands(self.total_params),
            crate::model::thousands(self.trainable_params),
            crate::model::thousands(self.non_trainable_params)
        ));
        html
    }

    pub fn evcxr_display(&self) {
        emit("text/html", &self.to_html());
        emit("text/plain", &self.to_string());
    }
}

/// A picture (PNG bytes) that shows itself in a notebook, with a text
/// description (`alt`) as its `text/plain` fallback: what nbconvert to text, a
/// screen reader or a diff of the notebook sees instead of the pixels.
#[derive(Clone, Debug)]
pub struct Png {
    pub bytes: Vec<u8>,
    pub alt: String,
}

impl Png {
    pub fn new(bytes: Vec<u8>, alt: impl Into<String>) -> Png {
        Png { bytes, alt: alt.into() }
    }

    pub fn evcxr_display(&self) {
        emit_png(&self.bytes);
        emit("text/plain", &self.alt);
    }
}

/// "0,906": a figure as the Spanish text around it writes it.
pub fn decimal(value: f64, decimals: usize) -> String {
    format!("{value:.decimals$}").replace('.', ",")
}

impl History {
    /// Accuracy and loss side by side; `smooth: Some(0.8)` for the slide
    /// "Gráficas" (exponentially smoothed curves).
    pub fn plot(&self, smooth: Option<f64>) -> Result<Png> {
        Ok(Png::new(crate::curves::history_png(self, smooth)?, self.describe(smooth)))
    }

    /// The figure in words (its alt text): "Gráfica de precisión y pérdida de entrenamiento y
    /// validación, 30 épocas, suavizada (0,8); mejor precisión de validación 0,906 (época 26)."
    pub fn describe(&self, smooth: Option<f64>) -> String {
        let smoothing = smooth.map(|f| format!(", suavizada ({})", decimal(f, 1))).unwrap_or_default();
        let best = match self.best_val_acc() {
            Some((acc, epoch)) => format!("; mejor precisión de validación {} (época {epoch})", decimal(acc, 3)),
            None => String::new(),
        };
        format!("Gráfica de precisión y pérdida de entrenamiento y validación, {} épocas{smoothing}{best}.", self.epochs())
    }

    /// A History as a cell's last value shows its raw curves.
    pub fn evcxr_display(&self) {
        match self.plot(None) {
            Ok(png) => png.evcxr_display(),
            Err(e) => emit("text/plain", &format!("{e:#}")),
        }
    }
}

/// A grid of images with a caption under each, as PNG: a batch from a
/// `DirectoryIterator`, augmented versions of one picture, test predictions.
/// Its alt text lists the captions.
#[derive(Clone, Debug)]
pub struct ImageGrid(pub Png);

impl ImageGrid {
    /// `images`: (N, 3, H, W) RGB in [0, 1] (the slides' rescale 1/255).
    /// `captions`: one per image, or none.
    pub fn new(images: &Tensor, captions: &[String], columns: usize) -> Result<ImageGrid> {
        let size = images.size();
        let [n, 3, h, w] = size[..] else { bail!("expected images (N, 3, H, W), got {size:?}") };
        if !captions.is_empty() && captions.len() != n as usize {
            bail!("{n} images but {} captions", captions.len());
        }
        let columns = columns.clamp(1, n.max(1) as usize);
        let rows = (n as usize).div_ceil(columns);
        let caption_h = if captions.is_empty() { 0 } else { 22 };
        let (cell_w, cell_h) = (w as u32 + 8, h as u32 + 8 + caption_h);
        let pixels: Vec<u8> = Vec::try_from(
            (images.to_device(tch::Device::Cpu).to_kind(Kind::Float).clamp(0.0, 1.0) * 255.0)
                .round()
                .to_kind(Kind::Uint8)
                .permute([0, 2, 3, 1])
                .contiguous()
                .flatten(0, -1),
        )?;
        let per_image = (h * w * 3) as usize;
        let png = crate::curves::render_png((cell_w * columns as u32, cell_h * rows as u32), |root| {
            for i in 0..n as usize {
                let (x, y) = (((i % columns) as u32 * cell_w + 4) as i32, ((i / columns) as u32 * cell_h + 4) as i32);
                let rgb = &pixels[i * per_image..(i + 1) * per_image];
                let element = plotters::element::BitMapElement::with_owned_buffer((x, y), (w as u32, h as u32), rgb.to_vec())
                    .ok_or_else(|| anyhow::anyhow!("image buffer of the wrong size"))?;
                root.draw(&element)?;
                if let Some(caption) = captions.get(i) {
                    let style = ("sans-serif", 14).into_font().color(&BLACK);
                    root.draw_text(caption, &style, (x, y + h as i32 + 4))?;
                }
            }
            Ok(())
        })?;
        let alt = match captions {
            [] => format!("{n} imágenes."),
            _ => format!("{n} imágenes: {}.", captions.join("; ")),
        };
        Ok(ImageGrid(Png::new(png, alt)))
    }

    pub fn evcxr_display(&self) {
        self.0.evcxr_display();
    }
}

/// A small table of text cells, shown as HTML in a notebook (plain text elsewhere).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table { headers: headers.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) -> &mut Self {
        self.rows.push(cells);
        self
    }

    pub fn to_html(&self) -> String {
        let cells = |tag: &str, row: &[String]| -> String {
            row.iter().map(|c| format!("<{tag}>{}</{tag}>", escape(c))).collect()
        };
        let body: String = self.rows.iter().map(|r| format!("<tr>{}</tr>", cells("td", r))).collect();
        format!("<table><thead><tr>{}</tr></thead><tbody>{body}</tbody></table>", cells("th", &self.headers))
    }

    pub fn evcxr_display(&self) {
        emit("text/html", &self.to_html());
        emit("text/plain", &self.to_string());
    }
}

impl std::fmt::Display for Table {
    /// Columns padded to their widest cell.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all = std::iter::once(&self.headers).chain(&self.rows);
        let mut widths = vec![0; self.headers.len()];
        for row in all.clone() {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        for row in all {
            let line: Vec<String> = row.iter().zip(&widths).map(|(c, &w)| format!("{c:<w$}")).collect();
            writeln!(f, "{}", line.join("  ").trim_end())?;
        }
        Ok(())
    }
}
