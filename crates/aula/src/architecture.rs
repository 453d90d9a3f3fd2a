//! The slide's picture of VGG16: the convolutional base as blocks of
//! feature maps that shrink in space and grow in depth, from the 150×150×3
//! input to the (4, 4, 512) map the classifier sits on. Keras draws a model
//! with `plot_model`; this is that figure for a chain of blocks.

use crate::display::{Png, Table};
use crate::model::{thousands, Layer, Sequential};
use anyhow::{bail, Result};
use plotters::prelude::*;

/// Consecutive layers that share the prefix of their names (`block3_conv1`,
/// `block3_pool` → `block3`): VGG's blocks.
fn blocks(model: &Sequential) -> Vec<(String, Vec<&Layer>)> {
    let mut blocks: Vec<(String, Vec<&Layer>)> = Vec::new();
    for layer in model.layers() {
        let prefix = layer.name.split('_').next().unwrap_or(&layer.name).to_string();
        match blocks.last_mut() {
            Some((name, layers)) if *name == prefix => layers.push(layer),
            _ => blocks.push((prefix, vec![layer])),
        }
    }
    blocks
}

/// "75×75×64".
fn shape(dims: &[i64]) -> String {
    dims.iter().map(i64::to_string).collect::<Vec<_>>().join("×")
}

/// "2 Conv2D + MaxPooling2D": the kinds of a block's layers, counted in order.
fn contents(layers: &[&Layer]) -> String {
    let mut kinds: Vec<(&str, usize)> = Vec::new();
    for layer in layers {
        match kinds.last_mut() {
            Some((kind, n)) if *kind == layer.kind.class_name() => *n += 1,
            _ => kinds.push((layer.kind.class_name(), 1)),
        }
    }
    kinds.iter().map(|(kind, n)| if *n == 1 { kind.to_string() } else { format!("{n} {kind}") }).collect::<Vec<_>>().join(" + ")
}

/// The blocks as a table: what each does and the shape it leaves.
pub fn model_table(model: &Sequential) -> Table {
    let mut table = Table::new(&["bloque", "capas", "salida", "parámetros"]);
    if let Some(input) = model.input_shape() {
        table.row(vec!["entrada".into(), "imagen RGB".into(), shape(input), "0".into()]);
    }
    for (name, layers) in blocks(model) {
        let params: i64 = layers.iter().map(|l| l.count_params()).sum();
        let out = layers.last().map(|l| shape(&l.output_shape)).unwrap_or_default();
        table.row(vec![name, contents(&layers), out, thousands(params)]);
    }
    table
}

/// The model's blocks as a picture: one stack of slabs per block (a slab per
/// layer), drawn taller for larger maps and wider for more channels, with the
/// block's layers and output shape under it. Its alt text walks the same path.
pub fn plot_model(model: &Sequential) -> Result<Png> {
    let blocks = blocks(model);
    let Some(input) = model.input_shape().map(<[i64]>::to_vec) else {
        bail!("model '{}' has no input shape to draw from", model.name)
    };
    if blocks.is_empty() {
        bail!("model '{}' has no layers to draw", model.name);
    }
    // (name, what, [h, w, c] after it, layers in the stack)
    let mut columns: Vec<(String, String, Vec<i64>, usize)> = vec![("entrada".into(), "imagen RGB".into(), input.clone(), 1)];
    for (name, layers) in &blocks {
        let out = layers.last().map(|l| l.output_shape.clone()).unwrap_or_default();
        columns.push((name.clone(), contents(layers), out, layers.len()));
    }
    let spatial = |s: &[i64]| s.first().copied().unwrap_or(1).max(1) as f64;
    let depth = |s: &[i64]| s.last().copied().unwrap_or(1).max(1) as f64;
    let max_side = columns.iter().map(|c| spatial(&c.2)).fold(1.0, f64::max);
    let column_w = 150i32;
    let (width, height) = ((column_w * columns.len() as i32 + 40) as u32, 430u32);
    let base_y = 300i32;
    let png = crate::curves::render_png((width, height), |root| {
        let title = format!("{}: {} capas, {} parámetros", model.name, model.layers().len(), thousands(model.count_params()));
        root.draw_text(&title, &("sans-serif", 20).into_font().color(&BLACK), (20, 12))?;
        for (i, (name, what, out, slabs)) in columns.iter().enumerate() {
            let x0 = 20 + i as i32 * column_w;
            // Height from the map's side (square root, so 4×4 stays visible next to 150×150),
            // width from the number of channels (log scale: 3 … 512).
            let h = (40.0 + 200.0 * (spatial(out) / max_side).sqrt()) as i32;
            let w = (14.0 + 9.0 * depth(out).log2()) as i32;
            let colour = match (i, what.contains("Conv2D")) {
                (0, _) => RGBColor(170, 170, 170),
                (_, true) => RGBColor(100, 149, 237),
                _ => RGBColor(230, 120, 90),
            };
            let step = 7;
            for k in (0..*slabs as i32).rev() {
                let (x, y) = (x0 + k * step, base_y - h - k * step);
                let last_is_pool = k == *slabs as i32 - 1 && what.ends_with("MaxPooling2D") && *slabs > 1;
                let fill = if last_is_pool { RGBColor(230, 120, 90) } else { colour };
                root.draw(&Rectangle::new([(x, y), (x + w, y + h)], fill.filled()))?;
                root.draw(&Rectangle::new([(x, y), (x + w, y + h)], BLACK.stroke_width(1)))?;
            }
            let label = |text: &str, dy: i32, size: u32| -> Result<()> {
                root.draw_text(text, &("sans-serif", size).into_font().color(&BLACK), (x0, base_y + dy))?;
                Ok(())
            };
            label(name, 14, 16)?;
            for (line, part) in what.split(" + ").enumerate() {
                label(part, 36 + 18 * line as i32, 13)?;
            }
            label(&shape(out), 36 + 18 * what.split(" + ").count() as i32 + 4, 15)?;
        }
        let legend = [("Conv2D (3×3, relu)", RGBColor(100, 149, 237)), ("MaxPooling2D (2×2)", RGBColor(230, 120, 90))];
        for (k, (text, colour)) in legend.iter().enumerate() {
            let x = width as i32 - 420 + k as i32 * 210;
            root.draw(&Rectangle::new([(x, 14), (x + 14, 28)], colour.filled()))?;
            root.draw_text(text, &("sans-serif", 14).into_font().color(&BLACK), (x + 20, 14))?;
        }
        Ok(())
    })?;
    let path: Vec<String> = columns.iter().map(|(name, what, out, _)| format!("{name} ({what}) {}", shape(out))).collect();
    let alt = format!("Diagrama de {}: {}.", model.name, path.join(" → "));
    Ok(Png::new(png, alt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::vgg16;
    use crate::weights::Weights;

    #[test]
    fn vgg16_is_drawn_block_by_block() {
        let base = vgg16(Weights::None, false, (150, 150, 3)).unwrap();
        let png = plot_model(&base).unwrap();
        assert!(png.bytes.starts_with(b"\x89PNG"));
        assert!(png.alt.starts_with("Diagrama de vgg16: entrada (imagen RGB) 150×150×3 → block1 (2 Conv2D + MaxPooling2D) 75×75×64 →"), "{}", png.alt);
        assert!(png.alt.ends_with("block5 (3 Conv2D + MaxPooling2D) 4×4×512."), "{}", png.alt);
        let table = model_table(&base).to_string();
        assert!(table.contains("block3") && table.contains("3 Conv2D + MaxPooling2D") && table.contains("38,720"), "{table}");
        assert_eq!(model_table(&base).rows.len(), 6);
    }
}
