//! `model.compile(...)`, `model.fit(...)`, `model.evaluate(...)` and the `History`
//! they leave, with binary crossentropy, accuracy and Keras's RMSprop.

pub(crate) mod checkpoint;
pub(crate) mod frozen_prefix;
mod generator;

pub use crate::history::History;
pub use crate::optimizers::RMSprop;
pub use checkpoint::Checkpoint;

use crate::model::{Compiled, Sequential};
use crate::precision::Precision;
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Keras clips probabilities to [1e-7, 1 - 1e-7] before taking logs.
const EPSILON: f64 = 1e-7;

pub(crate) fn binary_crossentropy(p: &Tensor, y: &Tensor) -> Tensor {
    let p = p.clamp(EPSILON, 1.0 - EPSILON);
    let one_minus_p: Tensor = 1.0 - &p;
    let one_minus_y: Tensor = 1.0 - y;
    -(y * p.log() + one_minus_y * one_minus_p.log()).mean(Kind::Float)
}

pub(crate) fn binary_accuracy(p: &Tensor, y: &Tensor) -> f64 {
    p.gt(0.5).to_kind(Kind::Float).eq_tensor(y).to_kind(Kind::Float).mean(Kind::Float).double_value(&[])
}

impl Sequential {
    /// `model.compile(optimizer=RMSprop(lr), loss='binary_crossentropy', metrics=['acc'])`.
    pub fn compile(&mut self, optimizer: RMSprop, loss: &str, metrics: &[&str]) -> Result<()> {
        if loss != "binary_crossentropy" {
            bail!("aula trains binary classifiers: loss must be 'binary_crossentropy', got '{loss}'");
        }
        if let Some(m) = metrics.iter().find(|m| !matches!(**m, "acc" | "accuracy")) {
            bail!("unknown metric '{m}' (aula reports 'acc')");
        }
        let trainable: Vec<String> =
            self.named_weights().into_iter().filter(|(_, _, t)| *t).map(|(name, _, _)| name).collect();
        self.compiled = Some(Compiled { optimizer, trainable, mean_square: BTreeMap::new() });
        Ok(())
    }

    /// Names of the weights the optimizer will update (fixed at `compile`).
    pub fn compiled_trainable(&self) -> Option<&[String]> {
        self.compiled.as_ref().map(|c| c.trainable.as_slice())
    }

    /// True when `trainable` flags changed after `compile`: they take effect
    /// only when the model is compiled again (slide "Compilación").
    pub fn trainable_changes_pending(&self) -> bool {
        let now: Vec<String> =
            self.named_weights().into_iter().filter(|(_, _, t)| *t).map(|(name, _, _)| name).collect();
        self.compiled.as_ref().is_some_and(|c| c.trainable != now)
    }

    /// The compiled optimizer (None before `compile`).
    pub fn optimizer(&self) -> Option<RMSprop> {
        self.compiled.as_ref().map(|c| c.optimizer)
    }

    /// RMSprop's state (running mean of squared gradients), by weight name.
    pub(crate) fn optimizer_state(&self) -> Option<&BTreeMap<String, Tensor>> {
        self.compiled.as_ref().map(|c| &c.mean_square)
    }

    pub(crate) fn set_optimizer_state(&mut self, state: BTreeMap<String, Tensor>) -> Result<()> {
        let Some(c) = self.compiled.as_mut() else { bail!("call compile() first") };
        c.mean_square = state;
        Ok(())
    }

    /// One optimisation step on a batch; returns (loss, acc) of the batch.
    pub(crate) fn train_step(&mut self, x: &Tensor, y: &Tensor) -> Result<(f64, f64)> {
        let step = self.gradients(x, y)?;
        let compiled = self.compiled.as_mut().expect("gradients() checked compile()");
        let optimizer = compiled.optimizer;
        tch::no_grad(|| {
            for ((name, mut w), g) in step.params.into_iter().zip(step.grads) {
                let mean_square = compiled.mean_square.entry(name).or_insert_with(|| g.zeros_like());
                optimizer.update(&mut w, &g, mean_square);
            }
        });
        Ok((step.loss.double_value(&[]), binary_accuracy(&step.p, &step.y)))
    }

    /// The forward and backward pass of a training step, without the update.
    /// Mixed precision: the first layers that have no weight to train and
    /// output images (the frozen conv base, or blocks 1-4 when fine-tuning) run
    /// in `precision()` (bf16 where it measured faster) without gradients;
    /// the layers that train, the loss and the gradients stay fp32.
    pub(crate) fn gradients(&self, x: &Tensor, y: &Tensor) -> Result<Gradients> {
        let Some(compiled) = self.compiled.as_ref() else { bail!("call compile() before fit()") };
        let trainable = compiled.trainable.clone();
        // Gradients only for the weights compile() chose: frozen layers cost no backward pass.
        let weights: Vec<(String, Tensor)> = self
            .named_weights()
            .into_iter()
            .map(|(name, t, _)| (name, t.shallow_clone()))
            .collect();
        let mut params = Vec::new();
        for (name, t) in weights {
            let train = trainable.contains(&name);
            let mut t = t;
            let _ = t.requires_grad_(train);
            if train {
                params.push((name, t));
            }
        }
        let precision = self.precision();
        let low = if precision == Precision::Fp32 { 0 } else { self.frozen_image_prefix(&trainable) };
        let p = if low > 0 { self.forward_train_mixed(x, low, precision) } else { self.forward_t(x, true) }.view([-1]);
        let y = y.to_device(p.device()).to_kind(Kind::Float).view([-1]);
        let loss = binary_crossentropy(&p, &y);
        // Fresh gradients, not accumulated into each weight's `.grad`: no zeroing
        // and no accumulation pass over the large Dense kernels.
        let inputs: Vec<&Tensor> = params.iter().map(|(_, t)| t).collect();
        let grads = Tensor::run_backward(&[&loss], &inputs, false, false);
        Ok(Gradients { loss, p, y, params, grads })
    }

    /// `model.fit(x, y, epochs, batch_size, validation_data)` on tensors (the
    /// features of "Alternativa 1"). Shuffles every epoch with libtorch's seeded
    /// generator (`aula::seed`), prints one Keras-style line per epoch.
    pub fn fit(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        epochs: usize,
        batch_size: i64,
        validation_data: Option<(&Tensor, &Tensor)>,
    ) -> Result<History> {
        let n = x.size()[0];
        if y.size()[0] != n {
            bail!("fit: {n} samples but {} labels", y.size()[0]);
        }
        if self.trainable_changes_pending() {
            eprintln!("aviso: los cambios de `trainable` hechos después de compile() no cuentan hasta volver a compilar");
        }
        let mut history = History::default();
        let _running = crate::interrupt::Running::start();
        let label = match validation_data {
            Some((xv, _)) => format!("Train on {n} samples, validate on {} samples", xv.size()[0]),
            None => format!("Train on {n} samples"),
        };
        println!("{label}");
        self.history = Some(history.clone());
        let steps = (n as usize).div_ceil(batch_size as usize);
        for epoch in 1..=epochs {
            let start = Instant::now();
            let order = Tensor::randperm(n, (Kind::Int64, Device::Cpu));
            let (mut loss_sum, mut acc_sum) = (0.0, 0.0);
            for i in (0..n).step_by(batch_size as usize) {
                let done = i as usize / batch_size as usize;
                crate::interrupt::check(|| interrupted(epoch, epochs, &format!("tras {done} de {steps} lotes"), history.epochs(), None))?;
                let idx = order.narrow(0, i, batch_size.min(n - i));
                let (loss, acc) = self.train_step(&x.index_select(0, &idx), &y.index_select(0, &idx))?;
                terminate_on_nan(loss, epoch, i as usize / batch_size as usize + 1, "")?;
                let size = idx.size()[0] as f64;
                loss_sum += loss * size;
                acc_sum += acc * size;
            }
            history.loss.push(loss_sum / n as f64);
            history.acc.push(acc_sum / n as f64);
            let mut line = format!("loss: {:.4} - acc: {:.4}", loss_sum / n as f64, acc_sum / n as f64);
            if let Some((xv, yv)) = validation_data {
                let (val_loss, val_acc) = self.evaluate(xv, yv, batch_size)?;
                history.val_loss.push(val_loss);
                history.val_acc.push(val_acc);
                line.push_str(&format!(" - val_loss: {val_loss:.4} - val_acc: {val_acc:.4}"));
            }
            println!("Epoch {epoch}/{epochs}\n{n}/{n} - {:.1}s - {line}", start.elapsed().as_secs_f64());
            self.history = Some(history.clone());
        }
        Ok(history)
    }

    /// `model.evaluate(x, y)` → (loss, acc), dropout off.
    pub fn evaluate(&self, x: &Tensor, y: &Tensor, batch_size: i64) -> Result<(f64, f64)> {
        let p = self.predict(x, batch_size).view([-1]);
        let y = y.to_kind(Kind::Float).view([-1]);
        if p.size() != y.size() {
            bail!("evaluate: {} predictions for {} labels", p.size()[0], y.size()[0]);
        }
        Ok((binary_crossentropy(&p, &y).double_value(&[]), binary_accuracy(&p, &y)))
    }
}

/// Keras's `TerminateOnNaN`: a loss that is NaN or infinite stops the training
/// at that batch, since the weights it updated are no longer usable. `kept`
/// says what survives (a checkpoint), when something does.
pub(crate) fn terminate_on_nan(loss: f64, epoch: usize, batch: usize, kept: &str) -> Result<()> {
    if loss.is_finite() {
        return Ok(());
    }
    bail!(
        "the loss became {loss} at epoch {epoch}, batch {batch}: training stopped (as Keras's TerminateOnNaN), \
         since the weights are no longer usable. {kept}{}Usual causes: a learning rate too large, or images \
         not rescaled (rescale=1./255) or containing NaN",
        if kept.is_empty() { "" } else { ". " }
    )
}

/// What a training stopped by an interrupt says (Spanish: the student reads it
/// in the notebook). `at`: where in epoch `epoch` it stopped; `done`: the
/// complete epochs (those in the model's history); `checkpoints`:
/// the folder of `fit_generator_with_checkpoints`, whose last complete epoch
/// a rerun of the cell continues from (a half epoch is never saved).
pub(crate) fn interrupted(epoch: usize, epochs: usize, at: &str, done: usize, checkpoints: Option<&Path>) -> String {
    let history = match done {
        0 => "su `history()` aún no tiene ninguna época completa.".to_string(),
        1 => "su `history()` tiene 1 época completa (`let history = model.history().unwrap().clone();`).".to_string(),
        k => format!("su `history()` tiene las {k} épocas completas (`let history = model.history().unwrap().clone();`)."),
    };
    let mut text =
        format!("entrenamiento interrumpido en la época {epoch}/{epochs}, {at}: el modelo conserva los pesos de ese momento; {history}");
    match checkpoints {
        Some(dir) if done > 0 => text.push_str(&format!(
            " El punto de control de la época {} sigue en {}: ejecutar otra vez la celda continúa desde él.",
            done,
            dir.display()
        )),
        Some(dir) => text.push_str(&format!(
            " En {} no hay aún ninguna época guardada: ejecutar otra vez la celda entrena desde los pesos \
             actuales; para empezar de cero, crea el modelo de nuevo.",
            dir.display()
        )),
        None => {}
    }
    text
}

/// What `Sequential::gradients` computed on one batch.
pub(crate) struct Gradients {
    loss: Tensor,
    /// Probabilities and labels, (N,).
    p: Tensor,
    y: Tensor,
    /// The weights that train, by Keras name, and their gradients, in that order.
    params: Vec<(String, Tensor)>,
    grads: Vec<Tensor>,
}

static SEED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Seeds libtorch's generator (weights init, shuffling, dropout): same seed,
/// same run on the CPU. `fit_generator` also reseeds it at every epoch from
/// this seed, so a resumed training draws the same dropout masks.
pub fn seed(seed: u64) {
    SEED.store(seed, std::sync::atomic::Ordering::Relaxed);
    tch::manual_seed(seed as i64);
}

/// The seed set by [`seed`] (0 if never set).
pub fn current_seed() -> u64 {
    SEED.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::History;
    use rand::{Rng, SeedableRng};

    /// Mixed precision: a training step whose frozen conv stages run in bf16
    /// gives the loss and gradients of the fp32 step. 4 real cats and 4 real
    /// dogs at 64×64, a small frozen conv base (random weights), a Dense(1)
    /// head. (A ReLU in the head would make the test flaky: a hidden unit
    /// whose input is within bf16's rounding of 0 is on in one run and off in
    /// the other, and its whole row of gradients differs; measured 1 in 5.)
    #[test]
    fn bf16_frozen_layers_give_the_fp32_gradients() {
        use crate::data::{ClassMode, ImageDataGenerator};
        use crate::model::layers::{Conv2D, MaxPooling2D};
        use crate::model::{Dense, Flatten, Sequential};
        use crate::precision::Precision;
        use tch::{Kind, Tensor};
        let data = crate::data::default_data_dir().expect("the lesson's data ($AULA_DATA or shared/data/cats_and_dogs_small)");
        let photos = ImageDataGenerator::rescale(1.0 / 255.0)
            .flow_from_directory(data.join("train"), (64, 64), 8, ClassMode::Binary)
            .unwrap();
        let (x, y) = photos.load_batch(&[0, 1, 2, 3, 1000, 1001, 1002, 1003]).unwrap();
        assert_eq!(Vec::<f32>::try_from(&y).unwrap(), [0., 0., 0., 0., 1., 1., 1., 1.]);
        let mut base = Sequential::new("base");
        base.add(Conv2D(16, 3).activation("relu").input_shape(&[64, 64, 3])).unwrap();
        base.add(MaxPooling2D(2)).unwrap();
        base.add(Conv2D(32, 3).activation("relu")).unwrap();
        base.add(MaxPooling2D(2)).unwrap();
        base.trainable = false;
        let mut model = Sequential::new("model");
        model.add(base).unwrap();
        model.add(Flatten()).unwrap();
        model.add(Dense(1).activation("sigmoid")).unwrap();
        model.compile(super::RMSprop::new(1e-3), "binary_crossentropy", &["acc"]).unwrap();
        assert_eq!(model.frozen_image_prefix(model.compiled_trainable().unwrap()), 4, "the 4 conv-base layers run in bf16");

        model.set_precision(Precision::Fp32);
        let fp32 = model.gradients(&x, &y).unwrap();
        model.set_precision(Precision::Bf16);
        let bf16 = model.gradients(&x, &y).unwrap();
        let (l32, l16) = (fp32.loss.double_value(&[]), bf16.loss.double_value(&[]));
        for (((name, _), g32), g16) in fp32.params.iter().zip(&fp32.grads).zip(&bf16.grads) {
            assert_eq!(g16.kind(), Kind::Float, "{name}: fp32 gradients");
            let relative = (g16 - g32).norm().double_value(&[]) / g32.norm().double_value(&[]);
            eprintln!("{name}: |g| {:.3e}, bf16 vs fp32 relative L2 error {relative:.4}", g32.norm().double_value(&[]));
        }
        assert_eq!(fp32.params.len(), 2, "the head's kernel and bias");
        // All gradients as one vector: a bias's gradient is a mean of p - y,
        // tiny when the classes balance, and its relative error then large.
        let flat = |grads: &[Tensor]| Tensor::cat(&grads.iter().map(|g| g.flatten(0, -1)).collect::<Vec<_>>(), 0);
        let (g32, g16) = (flat(&fp32.grads), flat(&bf16.grads));
        let relative = (&g16 - &g32).norm().double_value(&[]) / g32.norm().double_value(&[]);
        eprintln!("all gradients: relative L2 error {relative:.4}; loss fp32 {l32:.6}, bf16 {l16:.6}");
        // Measured over 18 random bases here: 0.0039-0.0080 (loss: < 4e-4
        // relative); 0.0062 with oneDNN held to AVX2 (no bf16 units).
        assert!(relative > 0.0, "bf16 gave fp32's gradients bit for bit: it did not run in bf16");
        assert!(relative < 0.03, "relative L2 error of the gradients {relative}");
        assert!((l16 - l32).abs() < 2e-3 * l32, "loss fp32 {l32}, bf16 {l16}");
    }

    /// A rendered step checks its history against the checkpoint's, written
    /// and read back as JSON: the numbers must come back bit for bit (serde_json
    /// parses floats exactly only with its `float_roundtrip` feature).
    #[test]
    fn a_history_comes_back_from_json_bit_for_bit() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut values = || (0..2000).map(|_| rng.random::<f64>() * rng.random_range(0.01..2.0)).collect::<Vec<_>>();
        let history = History { loss: values(), acc: values(), val_loss: values(), val_acc: values() };
        let back: History = serde_json::from_str(&serde_json::to_string(&history).unwrap()).unwrap();
        let differ = history.loss.iter().zip(&back.loss).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(differ, 0, "{differ} of 2000 losses changed");
        assert_eq!(back, history);
    }

    /// A NaN loss used to be written as `null` and made the checkpoint unreadable.
    #[test]
    fn non_finite_values_are_stored_and_read_back() {
        let history = History {
            loss: vec![0.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY],
            acc: vec![0.5; 4],
            val_loss: vec![],
            val_acc: vec![],
        };
        let json = serde_json::to_string(&history).unwrap();
        assert!(json.contains("\"NaN\"") && json.contains("\"-Infinity\""), "{json}");
        let back: History = serde_json::from_str(&json).unwrap();
        assert_eq!(back.loss[0], 0.5);
        assert!(back.loss[1].is_nan());
        assert_eq!(back.loss[2..], [f64::INFINITY, f64::NEG_INFINITY]);
        // What earlier versions wrote.
        let old: History = serde_json::from_str(r#"{"loss": [null, 1.0], "acc": [0.5, 0.5], "val_loss": [], "val_acc": []}"#).unwrap();
        assert!(old.loss[0].is_nan() && old.loss[1] == 1.0);
        let err = serde_json::from_str::<History>(r#"{"loss": [true], "acc": []}"#).unwrap_err().to_string();
        assert!(err.contains("expected a number"), "{err}");
    }
}
