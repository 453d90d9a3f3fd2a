//! The backbone comparison of notebook 04 (beyond the slide "Otros modelos"):
//! the same feature-extraction recipe with VGG16 and lighter nets, as a table
//! and a chart of what each costs and what it reaches.

use crate::display::{Png, Table};
use crate::model::Sequential;
use anyhow::{bail, Result};
use plotters::prelude::*;
use serde::Serialize;
use std::time::Instant;
use tch::{Kind, Tensor};

/// One backbone's row.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub name: String,
    /// Parameters of the convolutional base.
    pub params: i64,
    /// FLOPs of one image through the base, in billions.
    pub gflops: f64,
    /// Images per second through the base on this machine.
    pub images_per_second: f64,
    /// Best validation accuracy of the dense head on the extracted features.
    pub best_val_acc: f64,
}

/// The comparison table; a cell showing it prints an HTML table.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Comparison {
    pub rows: Vec<Row>,
}

/// Throughput of `conv_base` on random batches of `batch` images (after one
/// warm-up batch), the figure the "images/s" column shows: the base only,
/// without decoding, so that nets are compared and not JPEG decoders. It runs
/// as feature extraction does: in `conv_base.precision()`.
pub fn images_per_second(conv_base: &Sequential, batch: i64, batches: usize) -> Result<f64> {
    let Some(&[h, w, c]) = conv_base.input_shape() else {
        bail!("model '{}' has no (H, W, C) input shape", conv_base.name)
    };
    let x = Tensor::rand([batch, c, h, w], (Kind::Float, conv_base.device()));
    let _ = conv_base.predict_on_batch(&x);
    let start = Instant::now();
    for _ in 0..batches {
        let _ = conv_base.predict_on_batch(&x);
    }
    Ok((batch as usize * batches) as f64 / start.elapsed().as_secs_f64())
}

impl Comparison {
    pub fn push(&mut self, row: Row) -> &mut Self {
        self.rows.push(row);
        self
    }

    /// The rows as a table (what a cell shows).
    pub fn table(&self) -> Table {
        let mut table = Table::new(&["base", "parámetros", "GFLOP/imagen", "imágenes/s", "mejor val acc"]);
        for r in &self.rows {
            table.row(vec![
                r.name.clone(),
                crate::model::thousands(r.params),
                format!("{:.2}", r.gflops),
                format!("{:.1}", r.images_per_second),
                format!("{:.3}", r.best_val_acc),
            ]);
        }
        table
    }

    /// Two bar charts side by side: images per second (log scale, the
    /// differences span orders of magnitude) and best validation accuracy.
    pub fn chart(&self) -> Result<Png> {
        if self.rows.is_empty() {
            bail!("the comparison has no rows yet");
        }
        let names: Vec<&str> = self.rows.iter().map(|r| r.name.as_str()).collect();
        let n = names.len();
        let colours = [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(214, 39, 40)];
        let png = crate::curves::render_png((960, 380), |root| {
            let (left, right) = root.split_horizontally(480);
            let speed: Vec<f64> = self.rows.iter().map(|r| r.images_per_second.max(0.1)).collect();
            let top = speed.iter().cloned().fold(1.0, f64::max) * 3.0;
            let mut chart = ChartBuilder::on(&left)
                .caption("Extracción: imágenes por segundo", ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d((0..n).into_segmented(), (0.1f64..top).log_scale())?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_label_formatter(&|x| segment_name(x, &names))
                .y_desc("imágenes/s (escala log)")
                .draw()?;
            chart.draw_series(speed.iter().enumerate().map(|(i, &v)| {
                Rectangle::new([(SegmentValue::Exact(i), 0.1), (SegmentValue::Exact(i + 1), v)], colours[i % 4].filled())
            }))?;
            let mut chart = ChartBuilder::on(&right)
                .caption("Mejor precisión de validación", ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d((0..n).into_segmented(), 0.5f64..1.0f64)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_label_formatter(&|x| segment_name(x, &names))
                .y_desc("precisión de validación")
                .draw()?;
            chart.draw_series(self.rows.iter().enumerate().map(|(i, r)| {
                let v = r.best_val_acc.clamp(0.5, 1.0);
                Rectangle::new([(SegmentValue::Exact(i), 0.5), (SegmentValue::Exact(i + 1), v)], colours[i % 4].filled())
            }))?;
            Ok(())
        })?;
        let bars: Vec<String> = self
            .rows
            .iter()
            .map(|r| format!("{} {} imágenes/s, {}", r.name, crate::display::decimal(r.images_per_second, 1), crate::display::decimal(r.best_val_acc, 3)))
            .collect();
        Ok(Png::new(png, format!("Barras de imágenes por segundo y mejor precisión de validación: {}.", bars.join("; "))))
    }

    pub fn evcxr_display(&self) {
        self.table().evcxr_display();
    }
}

fn segment_name(x: &SegmentValue<usize>, names: &[&str]) -> String {
    match x {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => names.get(*i).map(|s| s.to_string()).unwrap_or_default(),
        SegmentValue::Last => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::vgg16;
    use crate::weights::Weights;

    #[test]
    fn table_and_chart_show_every_backbone() {
        let mut c = Comparison::default();
        assert!(c.chart().is_err());
        for (name, speed, acc) in [("VGG16", 4.4, 0.90), ("EfficientNetLite0", 120.0, 0.95)] {
            c.push(Row { name: name.into(), params: 1_000, gflops: 1.0, images_per_second: speed, best_val_acc: acc });
        }
        let html = c.table().to_html();
        assert!(html.contains("VGG16") && html.contains("EfficientNetLite0") && html.contains("0.950"), "{html}");
        let png = c.chart().unwrap();
        assert_eq!(&png.bytes[1..4], b"PNG");
        assert!(png.alt.contains("EfficientNetLite0 120,0 imágenes/s, 0,950"), "{}", png.alt);
    }

    #[test]
    fn throughput_is_measured_on_the_input_shape() {
        let base = vgg16(Weights::None, false, (32, 32, 3)).unwrap();
        assert!(images_per_second(&base, 2, 1).unwrap() > 0.0);
    }
}
