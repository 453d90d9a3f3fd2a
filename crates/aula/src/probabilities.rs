//! The slide "¿Por qué mejora la accuracy si el loss no decrece?", in a picture:
//! the histogram of predicted probabilities per true class.
//!
//! Accuracy only asks on which side of 0.5 each prediction falls; the loss
//! averages −log p of the true class, so a few confident mistakes (a dog at
//! p(dog) = 0.01 costs 4.6, a right answer at 0.9 costs 0.1) can keep the loss
//! flat or rising while more predictions cross to the right side.

use crate::display::{decimal, Png, Table};
use anyhow::{bail, Result};
use plotters::prelude::*;
use tch::{Kind, Tensor};

const BINS: usize = 20;

/// What the histogram shows, in numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbabilitySummary {
    pub samples: usize,
    pub errors: usize,
    pub accuracy: f64,
    pub loss: f64,
    /// Share of the total loss that the 5 % worst predictions carry.
    pub worst_5pct_loss_share: f64,
}

impl ProbabilitySummary {
    /// What a cell shows: the figures in Spanish, one per row.
    pub fn table(&self) -> Table {
        let mut table = Table::new(&["", ""]);
        table
            .row(vec!["imágenes".into(), self.samples.to_string()])
            .row(vec!["errores".into(), self.errors.to_string()])
            .row(vec!["precisión (accuracy)".into(), decimal(self.accuracy, 3)])
            .row(vec!["pérdida media (loss)".into(), decimal(self.loss, 3)])
            .row(vec![
                "parte de la pérdida que suman el 5 % de peores predicciones".into(),
                format!("{} %", decimal(100.0 * self.worst_5pct_loss_share, 1)),
            ]);
        table
    }

    pub fn evcxr_display(&self) {
        self.table().evcxr_display();
    }
}

/// The `k` wrong predictions the model was most sure of (farthest from 0.5 on
/// the wrong side), most confident first: the images that weigh most in the
/// loss while the accuracy only counts them once.
pub fn most_confident_errors(p: &Tensor, y: &Tensor, k: usize) -> Result<Vec<usize>> {
    let (p, y) = (values(p)?, values(y)?);
    if p.len() != y.len() {
        bail!("{} probabilities for {} labels", p.len(), y.len());
    }
    let mut wrong: Vec<(usize, f32)> = p
        .iter()
        .zip(&y)
        .enumerate()
        .filter(|(_, (&p, &y))| (p > 0.5) != (y > 0.5))
        .map(|(i, (&p, _))| (i, (p - 0.5).abs()))
        .collect();
    wrong.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(wrong.into_iter().take(k).map(|(i, _)| i).collect())
}

fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(t.to_device(tch::Device::Cpu).to_kind(Kind::Float).flatten(0, -1))?)
}

/// Accuracy, loss and how much of the loss the worst predictions carry.
pub fn summarize(p: &Tensor, y: &Tensor) -> Result<ProbabilitySummary> {
    let (p, y) = (values(p)?, values(y)?);
    if p.len() != y.len() || p.is_empty() {
        bail!("{} probabilities for {} labels", p.len(), y.len());
    }
    // Keras's clipping, as in the training loss.
    let mut losses: Vec<f64> = p
        .iter()
        .zip(&y)
        .map(|(&p, &y)| {
            let p = (p as f64).clamp(1e-7, 1.0 - 1e-7);
            if y > 0.5 { -p.ln() } else { -(1.0 - p).ln() }
        })
        .collect();
    let errors = p.iter().zip(&y).filter(|(&p, &y)| (p > 0.5) != (y > 0.5)).count();
    let total: f64 = losses.iter().sum();
    losses.sort_by(|a, b| b.total_cmp(a));
    let worst = losses.iter().take((losses.len() / 20).max(1)).sum::<f64>();
    let n = p.len();
    Ok(ProbabilitySummary {
        samples: n,
        errors,
        accuracy: 1.0 - errors as f64 / n as f64,
        loss: total / n as f64,
        worst_5pct_loss_share: worst / total.max(f64::MIN_POSITIVE),
    })
}

/// Histogram of the predicted probability of class 1 ("perro"), one colour
/// per true class, with the 0.5 threshold marked. Counts on a log scale, so
/// the few confident mistakes are visible next to the hundreds of right answers.
pub fn probability_histogram(p: &Tensor, y: &Tensor, class_names: [&str; 2]) -> Result<Png> {
    let (p, y) = (values(p)?, values(y)?);
    if p.len() != y.len() || p.is_empty() {
        bail!("{} probabilities for {} labels", p.len(), y.len());
    }
    let mut counts = [[0u32; BINS]; 2];
    for (&p, &y) in p.iter().zip(&y) {
        let bin = ((p.clamp(0.0, 1.0) * BINS as f32) as usize).min(BINS - 1);
        counts[(y > 0.5) as usize][bin] += 1;
    }
    let max = counts.iter().flatten().copied().max().unwrap_or(1).max(1);
    let png = crate::curves::render_png((720, 400), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Probabilidad predicha de «perro», por clase real", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..1f64, (0.8f64..(max as f64 * 1.5)).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("p(perro)")
            .y_desc("imágenes (escala log)")
            .disable_x_mesh()
            .draw()?;
        let colours = [RGBColor(31, 119, 180), RGBColor(255, 127, 14)];
        let width = 1.0 / BINS as f64;
        for (class, colour) in colours.into_iter().enumerate() {
            let bars = counts[class].iter().enumerate().filter(|(_, &c)| c > 0).map(|(bin, &c)| {
                // Two bars per bin, side by side: class 0 left, class 1 right.
                let x0 = bin as f64 * width + class as f64 * width / 2.0;
                Rectangle::new([(x0, 0.8), (x0 + width / 2.0, c as f64)], colour.mix(0.85).filled())
            });
            chart
                .draw_series(bars)?
                .label(format!("real: {}", class_names[class]))
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
        }
        chart.draw_series(std::iter::once(PathElement::new(vec![(0.5, 0.8), (0.5, max as f64 * 1.5)], BLACK.stroke_width(2))))?;
        chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.9)).position(SeriesLabelPosition::UpperMiddle).draw()?;
        Ok(())
    })?;
    let wrong = |class: bool| p.iter().zip(&y).filter(|(&p, &y)| (y > 0.5) == class && (p > 0.5) != class).count();
    let alt = format!(
        "Histograma de p({}) de {} imágenes por clase real ({}: {} errores; {}: {} errores), con el umbral 0,5 marcado.",
        class_names[1],
        p.len(),
        class_names[0],
        wrong(false),
        class_names[1],
        wrong(true)
    );
    Ok(Png::new(png, alt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_confident_mistakes_carry_the_loss() {
        // 95 right at 0.9 / 0.1, 5 wrong with confidence 0.99.
        let mut p = vec![0.9f32; 45];
        p.extend(vec![0.1f32; 50]);
        p.extend(vec![0.01f32; 5]); // dogs predicted cat
        let mut y = vec![1.0f32; 45];
        y.extend(vec![0.0f32; 50]);
        y.extend(vec![1.0f32; 5]);
        let s = summarize(&Tensor::from_slice(&p), &Tensor::from_slice(&y)).unwrap();
        assert_eq!((s.samples, s.errors), (100, 5));
        assert!((s.accuracy - 0.95).abs() < 1e-12);
        // 5 × 4.6 against 95 × 0.105: the worst 5 % carry ~70 % of the loss.
        assert!(s.worst_5pct_loss_share > 0.65, "{s:?}");
        let png = probability_histogram(&Tensor::from_slice(&p), &Tensor::from_slice(&y), ["gato", "perro"]).unwrap();
        assert!(png.bytes.starts_with(b"\x89PNG"));
        // The alt text counts the mistakes per true class.
        assert!(png.alt.contains("gato: 0 errores; perro: 5 errores"), "{}", png.alt);
        assert!(summarize(&Tensor::from_slice(&p[..3]), &Tensor::from_slice(&y)).is_err());
        let table = s.table().to_string();
        assert!(table.contains("errores") && table.contains("0,950") && !table.contains("0.95"), "{table}");
    }

    #[test]
    fn the_most_confident_errors_come_first() {
        let p = [0.9f32, 0.2, 0.45, 0.99, 0.02, 0.6];
        let y = [1.0f32, 1.0, 1.0, 0.0, 1.0, 0.0];
        // Wrong: 1 (0.2 for a dog), 2 (0.45), 3 (0.99 for a cat), 4 (0.02), 5 (0.6).
        let picks = most_confident_errors(&Tensor::from_slice(&p), &Tensor::from_slice(&y), 3).unwrap();
        assert_eq!(picks, vec![3, 4, 1]);
        assert_eq!(most_confident_errors(&Tensor::from_slice(&p[..2]), &Tensor::from_slice(&y[..2]), 9).unwrap(), vec![1]);
    }
}
