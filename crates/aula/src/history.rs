//! Keras's `History` (`keras.callbacks.History`): the loss and accuracy of each
//! epoch that `fit` / `fit_generator` leave on the model and return. Plain data,
//! below both [`crate::model`] (which keeps the last one) and [`crate::train`].

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Keras's `History.history`: one value per epoch.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct History {
    #[serde(with = "json_floats")]
    pub loss: Vec<f64>,
    #[serde(with = "json_floats")]
    pub acc: Vec<f64>,
    #[serde(with = "json_floats", default)]
    pub val_loss: Vec<f64>,
    #[serde(with = "json_floats", default)]
    pub val_acc: Vec<f64>,
}

/// History values as JSON numbers, and the non-finite ones (a NaN loss) as the
/// strings "NaN", "Infinity" and "-Infinity": JSON has no number for them, and
/// serde_json would write `null`, which then fails to read back as a number
/// (a checkpoint unreadable by its own training). `null`, which earlier aula
/// versions wrote, reads back as NaN.
mod json_floats {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use serde_json::Value;

    pub fn serialize<S: Serializer>(values: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(values.iter().map(|&v| match v {
            v if v.is_finite() => Value::from(v),
            v if v.is_nan() => Value::from("NaN"),
            v if v > 0.0 => Value::from("Infinity"),
            _ => Value::from("-Infinity"),
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Vec::<Value>::deserialize(d)?
            .into_iter()
            .map(|v| match v {
                Value::Number(n) => n.as_f64().ok_or_else(|| D::Error::custom(format!("{n} is not a float"))),
                Value::Null => Ok(f64::NAN),
                Value::String(s) if s == "NaN" => Ok(f64::NAN),
                Value::String(s) if s == "Infinity" => Ok(f64::INFINITY),
                Value::String(s) if s == "-Infinity" => Ok(f64::NEG_INFINITY),
                other => Err(D::Error::custom(format!("expected a number, \"NaN\" or \"Infinity\", found {other}"))),
            })
            .collect()
    }
}

impl History {
    pub fn epochs(&self) -> usize {
        self.loss.len()
    }

    /// Best validation accuracy and the (1-based) epoch it was reached.
    pub fn best_val_acc(&self) -> Option<(f64, usize)> {
        self.val_acc
            .iter()
            .enumerate()
            .fold(None, |best, (i, &v)| match best {
                Some((b, _)) if b >= v => best,
                _ => Some((v, i + 1)),
            })
    }

    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let json = serde_json::to_vec_pretty(self)?;
        crate::paths::write_atomic(path, &json)
    }

    pub fn load(path: impl AsRef<Path>) -> Result<History> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).with_context(|| format!("cannot read history {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not a valid history file", path.display()))
    }
}
