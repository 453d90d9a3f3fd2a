//! Keras's `model.summary()` table, as printed in the book.

use super::{LayerKind, Sequential};
use std::fmt;

/// Columns end at these characters, as in Keras 2's `print_summary`.
const COLUMNS: [usize; 3] = [29, 55, 65];

/// The rows of `model.summary()` and its totals; `Display` prints Keras's table.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub name: String,
    /// (layer (type), output shape, params)
    pub rows: Vec<(String, String, i64)>,
    pub total_params: i64,
    pub trainable_params: i64,
    pub non_trainable_params: i64,
}

fn shape(s: &[i64]) -> String {
    let dims: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("(None, {})", dims.join(", "))
}

impl Summary {
    pub fn of(model: &Sequential) -> Summary {
        let mut rows = Vec::new();
        // Models built from an input shape (VGG16) show Keras's InputLayer row.
        if model.name != "sequential" {
            if let Some(input) = model.input_shape() {
                rows.push(("input_1 (InputLayer)".to_string(), shape(input), 0));
            }
        }
        push_rows(model, &mut rows);
        let trainable: i64 = model.named_weights().iter().filter(|(_, _, t)| *t).map(|(_, w, _)| w.numel() as i64).sum();
        let total = model.count_params();
        Summary {
            name: model.name.clone(),
            rows,
            total_params: total,
            trainable_params: trainable,
            non_trainable_params: total - trainable,
        }
    }
}

/// One row per layer; a merge's branches are listed before it, as Keras lists
/// every layer of a functional model, while a model used as a layer is one row.
fn push_rows(model: &Sequential, rows: &mut Vec<(String, String, i64)>) {
    for layer in model.layers() {
        let merge = matches!(layer.kind, LayerKind::Add(_) | LayerKind::Concatenate(_));
        let params = if merge {
            layer.models().into_iter().for_each(|branch| push_rows(branch, rows));
            0
        } else {
            layer.count_params()
        };
        rows.push((format!("{} ({})", layer.name, layer.kind.class_name()), shape(&layer.output_shape), params));
    }
}

/// 14714688 → "14,714,688".
pub fn thousands(n: i64) -> String {
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = |f: &mut fmt::Formatter<'_>, c: char| writeln!(f, "{}", c.to_string().repeat(COLUMNS[2]));
        let row = |f: &mut fmt::Formatter<'_>, a: &str, b: &str, c: &str| {
            let mut s = format!("{a:<w$}", w = COLUMNS[0] - 1);
            s.push(' ');
            s.push_str(&format!("{b:<w$}", w = COLUMNS[1] - COLUMNS[0] - 1));
            s.push(' ');
            s.push_str(c);
            writeln!(f, "{}", s.trim_end())
        };
        writeln!(f, "Model: \"{}\"", self.name)?;
        line(f, '_')?;
        row(f, "Layer (type)", "Output Shape", "Param #")?;
        line(f, '=')?;
        for (i, (layer, out, params)) in self.rows.iter().enumerate() {
            row(f, layer, out, &params.to_string())?;
            if i + 1 < self.rows.len() {
                line(f, '_')?;
            }
        }
        line(f, '=')?;
        writeln!(f, "Total params: {}", thousands(self.total_params))?;
        writeln!(f, "Trainable params: {}", thousands(self.trainable_params))?;
        writeln!(f, "Non-trainable params: {}", thousands(self.non_trainable_params))?;
        line(f, '_')
    }
}

