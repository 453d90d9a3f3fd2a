//! Training and validation curves, as in Chollet's section 5.3 (slide 8).
//!
//! Chollet plots the `History` of `fit` with matplotlib: training values as blue dots
//! (`'bo'`) and validation values as a blue line (`'b'`), one figure for accuracy and one
//! for loss, with epochs `1..=n` on the x axis. Because the curves are noisy he then plots
//! them again exponentially smoothed ([`smooth_curve`], factor 0.8).
//!
//! ```no_run
//! # fn main() -> aula::Result<()> {
//! use aula::prelude::*;
//! # let history = History::default();
//! // <stem>_acc.png, <stem>_acc.svg, <stem>_loss.png, <stem>_loss.svg
//! let written = plot_history(&history, None, "out".as_ref(), "feature_extraction")?;
//! let smoothed = plot_history(&history, Some(0.8), "out".as_ref(), "feature_extraction_smoothed")?;
//! // One PNG with two panels (accuracy | loss), for inline display in a notebook.
//! let png: Vec<u8> = aula::curves::history_png(&history, Some(0.8))?;
//! # Ok(()) }
//! ```
//!
//! Text is drawn with the DejaVu Sans font embedded in the binary (crate `dejavu`), so no
//! system font is needed.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{bail, Context};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use crate::train::History;
use crate::Result;

/// Size of one figure written by [`plot_history`], in pixels.
pub const FIGURE_SIZE: (u32, u32) = (800, 600);
/// Size of the two-panel figure made by [`history_png`], in pixels.
pub const PANELS_SIZE: (u32, u32) = (1400, 560);

/// Chollet's `smooth_curve`: an exponential moving average of the points.
///
/// `smoothed[0] = points[0]` and `smoothed[i] = smoothed[i-1] * factor + points[i] * (1 - factor)`.
/// A factor of 0 returns the points unchanged; Chollet uses 0.8.
pub fn smooth_curve(points: &[f64], factor: f64) -> Vec<f64> {
    let mut smoothed: Vec<f64> = Vec::with_capacity(points.len());
    for &point in points {
        let next = match smoothed.last() {
            Some(&previous) => previous * factor + point * (1.0 - factor),
            None => point,
        };
        smoothed.push(next);
    }
    smoothed
}

/// Which quantity of a [`History`] a figure shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// `acc` and `val_acc`.
    Accuracy,
    /// `loss` and `val_loss`.
    Loss,
}

impl Metric {
    /// The suffix of the files [`plot_history`] writes: `acc` or `loss`.
    pub fn key(self) -> &'static str {
        match self {
            Metric::Accuracy => "acc",
            Metric::Loss => "loss",
        }
    }

    /// The figure's title, in Spanish, with the smoothing factor when there is one.
    pub fn title(self, smooth: Option<f64>) -> String {
        let base = match self {
            Metric::Accuracy => "Precisión de entrenamiento y validación",
            Metric::Loss => "Pérdida de entrenamiento y validación",
        };
        match smooth {
            Some(factor) => format!("{base} (suavizado {})", factor.to_string().replace('.', ",")),
            None => base.to_string(),
        }
    }

    /// The legend names, in Spanish (Chollet's "Training acc", "Smoothed validation loss"):
    /// the title already names the metric.
    pub fn labels(self, smooth: Option<f64>) -> (String, String) {
        match smooth {
            Some(_) => ("Entrenamiento (suavizada)".to_string(), "Validación (suavizada)".to_string()),
            None => ("Entrenamiento".to_string(), "Validación".to_string()),
        }
    }

    fn y_label(self) -> &'static str {
        match self {
            Metric::Accuracy => "precisión (accuracy)",
            Metric::Loss => "pérdida (loss)",
        }
    }

    fn series(self, history: &History) -> (&[f64], &[f64]) {
        match self {
            Metric::Accuracy => (&history.acc, &history.val_acc),
            Metric::Loss => (&history.loss, &history.val_loss),
        }
    }
}

/// One figure: a training series drawn as blue dots (`'bo'`) and a validation series drawn
/// as a blue line (`'b'`), against epochs `1..=n`. Either series may be empty (a `fit`
/// without validation data has no `val_*`), not both.
#[derive(Clone, Copy, Debug)]
pub struct Curves<'a> {
    /// Caption above the plot.
    pub title: &'a str,
    /// Name of the y axis.
    pub y_label: &'a str,
    /// Legend name of the training series (`"Entrenamiento"`).
    pub training_label: &'a str,
    /// One value per epoch, epoch 1 first.
    pub training: &'a [f64],
    /// Legend name of the validation series (`"Validación"`).
    pub validation_label: &'a str,
    /// One value per epoch, epoch 1 first.
    pub validation: &'a [f64],
}

impl Curves<'_> {
    /// Number of epochs on the x axis: the longer of the two series.
    pub fn epochs(&self) -> usize {
        self.training.len().max(self.validation.len())
    }

    /// Draws the figure on any plotters drawing area (a bitmap, an SVG, a panel of either).
    /// Non-finite values (a diverged loss) are left out.
    pub fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        register_fonts();
        let epochs = self.epochs();
        if epochs == 0 {
            bail!("\"{}\": both series are empty, nothing to plot", self.title);
        }
        let finite = self
            .training
            .iter()
            .chain(self.validation)
            .copied()
            .filter(|v| v.is_finite());
        let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        if lo > hi {
            bail!(
                "\"{}\": no finite value to plot (all NaN or infinite)",
                self.title
            );
        }
        let pad = if hi > lo {
            (hi - lo) * 0.06
        } else {
            lo.abs().max(1.0) * 0.05
        };
        let y_range = (lo - pad)..(hi + pad);
        // Epochs are 1-based, as Chollet's `range(1, len(acc) + 1)`.
        let x_range = 0.5..(epochs as f64 + 0.5);

        let (width, _) = area.dim_in_pixel();
        let caption_px = (width as f64 / 36.0).clamp(16.0, 24.0);
        let mut chart = ChartBuilder::on(area)
            .caption(self.title, ("sans-serif", caption_px).into_font())
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x_range, y_range)?;
        chart
            .configure_mesh()
            .x_desc("épocas (epochs)")
            .y_desc(self.y_label)
            .x_labels(epochs.min(10))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.3}"))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(210, 210, 210))
            .draw()?;

        let points = |values: &[f64]| -> Vec<(f64, f64)> {
            values
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(i, &v)| ((i + 1) as f64, v))
                .collect()
        };
        if !self.training.is_empty() {
            chart
                .draw_series(
                    points(self.training)
                        .into_iter()
                        .map(|p| Circle::new(p, 4, BLUE.filled())),
                )?
                .label(self.training_label)
                .legend(|(x, y)| Circle::new((x + 10, y), 4, BLUE.filled()));
        }
        if !self.validation.is_empty() {
            chart
                .draw_series(LineSeries::new(
                    points(self.validation),
                    BLUE.stroke_width(2),
                ))?
                .label(self.validation_label)
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        }
        // Accuracy usually rises and loss falls: put the legend where the curves are not.
        let ends = |s: &[f64]| {
            (
                s.iter().copied().find(|v| v.is_finite()),
                s.iter().copied().rfind(|v| v.is_finite()),
            )
        };
        let (first, last) = match ends(self.training) {
            (Some(f), Some(l)) => (f, l),
            _ => match ends(self.validation) {
                (Some(f), Some(l)) => (f, l),
                _ => (lo, hi),
            },
        };
        let position = if last >= first {
            SeriesLabelPosition::LowerRight
        } else {
            SeriesLabelPosition::UpperRight
        };
        chart
            .configure_series_labels()
            .position(position)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .draw()?;
        Ok(())
    }

    /// The figure as a PNG file's bytes.
    pub fn to_png(&self, size: (u32, u32)) -> Result<Vec<u8>> {
        render_png(size, |root| self.draw(root))
    }

    /// The figure as an SVG document (text stays text, in font-family `sans-serif`).
    pub fn to_svg(&self, size: (u32, u32)) -> Result<String> {
        register_fonts();
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
            root.fill(&WHITE)?;
            self.draw(&root)?;
            root.present()?;
        }
        Ok(svg)
    }
}

/// The series of one metric, smoothed when asked, with its title and labels: owns what a
/// [`Curves`] borrows.
struct Prepared {
    metric: Metric,
    title: String,
    labels: (String, String),
    training: Vec<f64>,
    validation: Vec<f64>,
}

impl Prepared {
    fn new(history: &History, metric: Metric, smooth: Option<f64>) -> Self {
        let (training, validation) = metric.series(history);
        let apply = |v: &[f64]| match smooth {
            Some(factor) => smooth_curve(v, factor),
            None => v.to_vec(),
        };
        Prepared {
            metric,
            title: metric.title(smooth),
            labels: metric.labels(smooth),
            training: apply(training),
            validation: apply(validation),
        }
    }

    fn curves(&self) -> Curves<'_> {
        Curves {
            title: &self.title,
            y_label: self.metric.y_label(),
            training_label: &self.labels.0,
            training: &self.training,
            validation_label: &self.labels.1,
            validation: &self.validation,
        }
    }

    fn is_empty(&self) -> bool {
        self.training.is_empty() && self.validation.is_empty()
    }
}

fn check_history(history: &History, smooth: Option<f64>) -> Result<()> {
    let History {
        loss,
        acc,
        val_loss,
        val_acc,
    } = history;
    if loss.is_empty() && acc.is_empty() && val_loss.is_empty() && val_acc.is_empty() {
        bail!(
            "the History is empty (no epoch recorded): fit the model for at least one epoch \
             before plotting its curves"
        );
    }
    if let Some(factor) = smooth {
        if !(0.0..1.0).contains(&factor) {
            bail!(
                "smoothing factor {factor} is out of range: use 0 <= factor < 1 (Chollet uses 0.8)"
            );
        }
    }
    Ok(())
}

/// Writes Chollet's two figures of a `History`: `<stem>_acc.png`, `<stem>_acc.svg`,
/// `<stem>_loss.png` and `<stem>_loss.svg` in `out_dir` (created if needed), and returns
/// their paths in that order. With `smooth = Some(0.8)` the series are first smoothed
/// with [`smooth_curve`] and the titles say so.
///
/// A metric without any value (a model compiled without `acc`) is skipped; an empty
/// history is an error. Each file is written to a temporary name and then renamed, so a
/// reader never sees half a file.
pub fn plot_history(
    history: &History,
    smooth: Option<f64>,
    out_dir: &Path,
    stem: &str,
) -> Result<Vec<PathBuf>> {
    check_history(history, smooth)?;
    fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut written = Vec::new();
    for metric in [Metric::Accuracy, Metric::Loss] {
        let prepared = Prepared::new(history, metric, smooth);
        if prepared.is_empty() {
            continue;
        }
        let curves = prepared.curves();
        let name = format!("{stem}_{}", metric.key());
        let png = out_dir.join(format!("{name}.png"));
        crate::paths::write_atomic(&png, &curves.to_png(FIGURE_SIZE)?)?;
        written.push(png);
        let svg = out_dir.join(format!("{name}.svg"));
        crate::paths::write_atomic(&svg, curves.to_svg(FIGURE_SIZE)?.as_bytes())?;
        written.push(svg);
    }
    Ok(written)
}

/// One PNG with two panels side by side, accuracy on the left and loss on the right, kept
/// in memory (for a notebook's inline display). A metric without values gets a panel that
/// says so.
pub fn history_png(history: &History, smooth: Option<f64>) -> Result<Vec<u8>> {
    check_history(history, smooth)?;
    let panels = [Metric::Accuracy, Metric::Loss].map(|m| Prepared::new(history, m, smooth));
    render_png(PANELS_SIZE, |root| {
        let halves = root.split_evenly((1, 2));
        for (area, prepared) in halves.iter().zip(&panels) {
            if prepared.is_empty() {
                let (w, h) = area.dim_in_pixel();
                let text = format!("{}: sin datos", prepared.title);
                let style = TextStyle::from(("sans-serif", 18).into_font())
                    .pos(Pos::new(HPos::Center, VPos::Center));
                area.draw_text(&text, &style, (w as i32 / 2, h as i32 / 2))?;
            } else {
                prepared.curves().draw(area)?;
            }
        }
        Ok(())
    })
}

/// Renders on an RGB buffer and encodes it as PNG.
pub(crate) fn render_png(
    (width, height): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
) -> Result<Vec<u8>> {
    register_fonts();
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &rgb,
        width,
        height,
        image::ExtendedColorType::Rgb8,
    )
    .context("encoding the curves as PNG")?;
    Ok(png)
}

/// Registers the embedded DejaVu Sans as plotters' `sans-serif` family, once per process.
fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let fonts: [(FontStyle, &'static [u8]); 4] = [
            (FontStyle::Normal, dejavu::sans::regular()),
            (FontStyle::Bold, dejavu::sans::bold()),
            (FontStyle::Italic, dejavu::sans::oblique()),
            (FontStyle::Oblique, dejavu::sans::oblique()),
        ];
        for (style, bytes) in fonts {
            // The bytes are a font shipped inside the `dejavu` crate: parsing cannot fail.
            if plotters::style::register_font("sans-serif", style, bytes).is_err() {
                panic!("the embedded DejaVu Sans font does not parse");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(epochs: usize) -> History {
        let e = |f: fn(f64) -> f64| (1..=epochs).map(|i| f(i as f64)).collect::<Vec<_>>();
        History {
            loss: e(|i| 0.6 / i),
            acc: e(|i| 1.0 - 0.4 / i),
            val_loss: e(|i| 0.3 + 0.01 * i),
            val_acc: e(|i| 0.88 + 0.001 * i),
        }
    }

    /// Width and height from a PNG's IHDR chunk.
    fn png_size(png: &[u8]) -> (u32, u32) {
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&png[12..16], b"IHDR");
        let be = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
        (be(&png[16..20]), be(&png[20..24]))
    }

    #[test]
    fn smooth_curve_is_chollets_moving_average() {
        let s = smooth_curve(&[1.0, 0.0, 0.0, 1.0], 0.8);
        let expected = [1.0, 0.8, 0.64, 0.712];
        assert_eq!(s.len(), 4);
        for (a, b) in s.iter().zip(expected) {
            assert!((a - b).abs() < 1e-12, "{s:?} != {expected:?}");
        }
        assert_eq!(smooth_curve(&[0.3, 0.7, 0.1], 0.0), vec![0.3, 0.7, 0.1]);
        assert_eq!(smooth_curve(&[0.3, 0.7, 0.1], 0.5)[0], 0.3);
        assert!(smooth_curve(&[], 0.8).is_empty());
    }

    #[test]
    fn writes_png_and_svg_of_accuracy_and_loss() {
        let dir = tempfile::tempdir().unwrap();
        let written = plot_history(&history(30), None, dir.path(), "fe").unwrap();
        let names: Vec<_> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(
            names,
            ["fe_acc.png", "fe_acc.svg", "fe_loss.png", "fe_loss.svg"]
        );
        for path in &written {
            assert!(path.starts_with(dir.path()));
        }
        let png = fs::read(dir.path().join("fe_acc.png")).unwrap();
        assert_eq!(png_size(&png), FIGURE_SIZE);
        let svg = fs::read_to_string(dir.path().join("fe_acc.svg")).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..60.min(svg.len())]);
        assert!(svg.contains("Precisión de entrenamiento y validación"));
        assert!(svg.contains("Entrenamiento") && svg.contains("Validación"));
        let svg = fs::read_to_string(dir.path().join("fe_loss.svg")).unwrap();
        assert!(svg.contains("Pérdida de entrenamiento y validación"));
        // No temporary file is left behind.
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 4, "{left:?}");
    }

    #[test]
    fn smoothed_titles_say_so() {
        let dir = tempfile::tempdir().unwrap();
        plot_history(&history(10), Some(0.8), dir.path(), "s").unwrap();
        let svg = fs::read_to_string(dir.path().join("s_loss.svg")).unwrap();
        assert!(svg.contains("(suavizado 0,8)"));
        assert!(svg.contains("Validación (suavizada)"));
    }

    #[test]
    fn panels_png_in_memory() {
        let png = history_png(&history(5), Some(0.8)).unwrap();
        assert_eq!(png_size(&png), PANELS_SIZE);
        let decoded = image::load_from_memory(&png).unwrap().to_rgb8();
        // Something blue was drawn in each half (the curves), the corners stay white.
        let blue = |x0: u32, x1: u32| {
            (x0..x1)
                .any(|x| (0..decoded.height()).any(|y| decoded.get_pixel(x, y).0 == [0, 0, 255]))
        };
        assert!(blue(0, PANELS_SIZE.0 / 2) && blue(PANELS_SIZE.0 / 2, PANELS_SIZE.0));
        assert_eq!(decoded.get_pixel(0, 0).0, [255, 255, 255]);
    }

    #[test]
    fn one_epoch_and_missing_validation_still_plot() {
        let h = History {
            loss: vec![0.7],
            acc: vec![0.5],
            ..Default::default()
        };
        let png = history_png(&h, None).unwrap();
        assert_eq!(png_size(&png), PANELS_SIZE);
        // A model compiled without `acc`: only the loss figures.
        let dir = tempfile::tempdir().unwrap();
        let h = History {
            loss: vec![0.7, 0.6],
            val_loss: vec![0.8, 0.75],
            ..Default::default()
        };
        let written = plot_history(&h, None, dir.path(), "x").unwrap();
        assert_eq!(written.len(), 2);
        assert!(written[0].ends_with("x_loss.png"));
        assert_eq!(png_size(&history_png(&h, None).unwrap()), PANELS_SIZE);
    }

    #[test]
    fn non_finite_values_are_skipped() {
        let h = History {
            loss: vec![0.7, f64::NAN, 0.5],
            acc: vec![0.5, 0.6, f64::INFINITY],
            ..Default::default()
        };
        history_png(&h, None).unwrap();
        let h = History {
            loss: vec![f64::NAN],
            ..Default::default()
        };
        let err = history_png(&h, None).unwrap_err().to_string();
        assert!(err.contains("no finite value"), "{err}");
    }

    #[test]
    fn empty_history_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = plot_history(&History::default(), None, dir.path(), "e")
            .unwrap_err()
            .to_string();
        assert!(err.contains("History is empty"), "{err}");
        assert!(
            fs::read_dir(dir.path()).unwrap().next().is_none(),
            "nothing written"
        );
        let err = history_png(&History::default(), Some(0.8))
            .unwrap_err()
            .to_string();
        assert!(err.contains("History is empty"), "{err}");
        let err = history_png(&history(3), Some(1.5)).unwrap_err().to_string();
        assert!(err.contains("out of range"), "{err}");
    }
}
