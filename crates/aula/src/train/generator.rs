//! Training and evaluating from image iterators, as Keras's `fit_generator`,
//! `evaluate_generator` and `predict_generator` (slide "Alternativa 2": the
//! conv base inside the model, fed augmented images).

use super::checkpoint::{model_fingerprint, Checkpoint, FolderLock, Session};
use super::frozen_prefix::{loss_and_accuracy, FrozenPrefixCache};
use super::{current_seed, interrupted, terminate_on_nan, History};
use crate::interrupt::{check, Interrupted};
use crate::data::DirectoryIterator;
use crate::model::Sequential;
use anyhow::{bail, Result};
use std::path::Path;
use std::time::Instant;
use tch::{Device, Tensor};

/// The seed of epoch `epoch` of a run seeded with `seed`: libtorch's generator
/// (dropout) is reseeded with it, so an epoch draws the same whether it runs
/// straight after the previous one or after a resume.
fn epoch_seed(seed: u64, epoch: usize) -> i64 {
    let x = seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 1) as i64
}

impl Sequential {
    /// `model.fit_generator(train_generator, steps_per_epoch=100, epochs=30,
    /// validation_data=validation_generator, validation_steps=50)`.
    pub fn fit_generator(
        &mut self,
        generator: &mut DirectoryIterator,
        steps_per_epoch: usize,
        epochs: usize,
        validation_data: Option<&mut DirectoryIterator>,
        validation_steps: usize,
    ) -> Result<History> {
        self.fit_generator_impl(generator, steps_per_epoch, epochs, validation_data, validation_steps, None)
    }

    /// The same, saving a checkpoint in `dir` after every epoch and, when
    /// `dir` already holds one of this model, continuing from it: epochs done
    /// are not repeated, and the history goes on from where it was.
    pub fn fit_generator_with_checkpoints(
        &mut self,
        generator: &mut DirectoryIterator,
        steps_per_epoch: usize,
        epochs: usize,
        validation_data: Option<&mut DirectoryIterator>,
        validation_steps: usize,
        dir: impl AsRef<Path>,
    ) -> Result<History> {
        let dir = dir.as_ref();
        self.fit_generator_impl(generator, steps_per_epoch, epochs, validation_data, validation_steps, Some(dir))
    }

    fn fit_generator_impl(
        &mut self,
        generator: &mut DirectoryIterator,
        steps_per_epoch: usize,
        epochs: usize,
        mut validation_data: Option<&mut DirectoryIterator>,
        validation_steps: usize,
        checkpoints: Option<&Path>,
    ) -> Result<History> {
        let Some(optimizer) = self.optimizer() else { bail!("call compile() before fit_generator()") };
        if steps_per_epoch == 0 {
            bail!("steps_per_epoch must be at least 1");
        }
        if validation_data.is_some() && validation_steps == 0 {
            bail!("validation_steps must be at least 1 when there is validation_data");
        }
        if let Some(val) = validation_data.as_deref() {
            generator.check_same_classes(val)?;
        }
        if self.trainable_changes_pending() {
            eprintln!("aviso: los cambios de `trainable` hechos después de compile() no cuentan hasta volver a compilar");
        }
        // Held until the training returns: a second training on this folder is refused.
        let _lock = checkpoints.map(FolderLock::acquire).transpose()?;
        let seed = current_seed();
        let steps = (steps_per_epoch, validation_steps);
        let mut state = Checkpoint {
            format: 1,
            model: model_fingerprint(self),
            trainable: self.compiled_trainable().unwrap_or_default().to_vec(),
            optimizer,
            seed,
            steps_per_epoch,
            validation_steps,
            epochs_done: 0,
            history: History::default(),
            epoch_seconds: Vec::new(),
            lines: Vec::new(),
            weights_file: String::new(),
            devices: Vec::new(),
            epoch_started: Vec::new(),
            epoch_ended: Vec::new(),
            sessions: Vec::new(),
        };
        if let Some(dir) = checkpoints {
            if let Some(saved) = Checkpoint::load(dir)? {
                saved.check_matches(dir, self, optimizer, seed, steps)?;
                if saved.epochs_done > epochs {
                    // Only the last epoch's weights are kept: there is no epoch `epochs` to go back to.
                    bail!(
                        "checkpoint {} already holds {} epochs, more than the {epochs} asked for, and it keeps \
                         only the weights of its last epoch. Ask for epochs={} (or more) to use it, or give \
                         another checkpoint folder (or delete this one) to train {epochs} epochs from the start",
                        Checkpoint::json_path(dir).display(),
                        saved.epochs_done,
                        saved.epochs_done
                    );
                }
                saved.restore(dir, self)?;
                // The log of the epochs done, as they were printed, each resumption marked.
                println!(
                    "Reanudando desde {}: {} de {epochs} épocas hechas ({:.0} s)",
                    crate::paths::display_path(&Checkpoint::json_path(dir)),
                    saved.epochs_done,
                    saved.epoch_seconds.iter().sum::<f64>()
                );
                for (i, line) in saved.lines.iter().enumerate() {
                    if let Some(s) = saved.sessions.iter().find(|s| s.first_epoch == i + 1 && i > 0) {
                        println!("[reanudado en la época {}: {} · {}]", i + 1, s.started, s.device);
                    }
                    println!("Epoch {}/{epochs}\n{line}", i + 1);
                }
                state = saved;
            }
        }
        if state.epochs_done < epochs {
            let session = Session::now(state.epochs_done + 1);
            if state.epochs_done > 0 {
                println!("[reanudado en la época {}: {} · {}]", session.first_epoch, session.started, session.device);
            }
            state.sessions.push(session);
        }

        self.class_indices = Some(generator.class_indices().to_vec());
        self.history = Some(state.history.clone());
        let mut validation_cache: Option<FrozenPrefixCache> = None;
        let _running = crate::interrupt::Running::start();
        for epoch in state.epochs_done..epochs {
            let start = Instant::now();
            let started = crate::paths::now_utc();
            tch::manual_seed(epoch_seed(seed, epoch));
            generator.seek_batch((epoch * steps_per_epoch) as u64);
            println!("Epoch {}/{epochs}", epoch + 1);
            let mut bar = crate::progress::Progress::new(steps_per_epoch as u64, &format!("época {}/{epochs}", epoch + 1), "pasos");
            let (mut loss_sum, mut acc_sum, mut seen) = (0.0, 0.0, 0.0);
            let mut batch = generator.next_batch()?;
            for step in 0..steps_per_epoch {
                check(|| interrupted(epoch + 1, epochs, &format!("tras {step} de {steps_per_epoch} lotes"), state.epochs_done, checkpoints))?;
                // The next batch is decoded and augmented on another thread while
                // this one trains (the same images and transforms as without).
                let next_indices = (step + 1 < steps_per_epoch).then(|| generator.next_indices());
                let loader: &DirectoryIterator = generator;
                let (trained, next) = std::thread::scope(|s| {
                    let next = next_indices.map(|indices| s.spawn(move || loader.load_batch(&indices)));
                    let trained = self.train_step(&batch.0, &batch.1);
                    (trained, next.map(|h| h.join().expect("the batch loader panicked")))
                });
                let (loss, acc) = trained?;
                terminate_on_nan(loss, epoch + 1, step + 1, &match checkpoints {
                    Some(dir) if state.epochs_done > 0 => format!(
                        "The checkpoint of epoch {} in {} is kept: a rerun continues from it",
                        state.epochs_done,
                        dir.display()
                    ),
                    _ => String::new(),
                })?;
                let n = batch.0.size()[0] as f64;
                loss_sum += loss * n;
                acc_sum += acc * n;
                seen += n;
                bar.inc(1);
                if let Some(next) = next {
                    batch = next?;
                }
            }
            bar.finish();
            let (loss, acc) = (loss_sum / seen, acc_sum / seen);
            state.history.loss.push(loss);
            state.history.acc.push(acc);
            let mut line = format!("loss: {loss:.4} - acc: {acc:.4}");
            if let Some(val) = validation_data.as_deref_mut() {
                val.seek_batch((epoch * validation_steps) as u64);
                // An interrupt here (an inner loop's) stops the training in this epoch's validation.
                let in_validation = |e: anyhow::Error| match e.downcast_ref::<Interrupted>() {
                    Some(_) => anyhow::Error::from(Interrupted {
                        message: interrupted(epoch + 1, epochs, "durante la validación", state.epochs_done, checkpoints),
                    }),
                    None => e,
                };
                if validation_cache.is_none() {
                    validation_cache = FrozenPrefixCache::build(self, val).map_err(in_validation)?;
                }
                let (val_loss, val_acc) = match &validation_cache {
                    Some(cache) => cache.evaluate(self, val, validation_steps),
                    None => self.evaluate_generator(val, validation_steps).map_err(in_validation)?,
                };
                state.history.val_loss.push(val_loss);
                state.history.val_acc.push(val_acc);
                line.push_str(&format!(" - val_loss: {val_loss:.4} - val_acc: {val_acc:.4}"));
            }
            let seconds = start.elapsed().as_secs_f64();
            let line = format!("{steps_per_epoch}/{steps_per_epoch} - {seconds:.0}s - {line}");
            println!("{line}");
            state.lines.push(line);
            state.epoch_seconds.push(seconds);
            state.devices.push(crate::device::device_info());
            state.epoch_started.push(started);
            state.epoch_ended.push(crate::paths::now_utc());
            state.epochs_done = epoch + 1;
            if let Some(dir) = checkpoints {
                state.save(dir, self)?;
            }
            self.history = Some(state.history.clone());
        }
        Ok(state.history)
    }

    /// `model.evaluate_generator(generator, steps)` → (loss, acc) over `steps`
    /// batches, dropout off.
    pub fn evaluate_generator(&self, generator: &mut DirectoryIterator, steps: usize) -> Result<(f64, f64)> {
        let (p, y) = self.predict_generator(generator, steps)?;
        Ok(loss_and_accuracy(&p, &y))
    }

    /// `model.predict_generator(generator, steps)`: the predicted probabilities
    /// (N,) on the CPU, and the true labels that came with the batches.
    ///
    /// When the steps cover every image and the model's first layers are
    /// frozen, those layers' outputs come from (or go to) a cache on disk, so
    /// evaluating the same images again costs only the layers that trained.
    pub fn predict_generator(&self, generator: &mut DirectoryIterator, steps: usize) -> Result<(Tensor, Tensor)> {
        if steps == 0 {
            bail!("steps must be at least 1");
        }
        if let Some(trained) = &self.class_indices {
            crate::data::directory::check_classes(trained, "the model was trained on", generator.class_indices(), generator.directory())?;
        }
        if steps * generator.batch_size() >= generator.samples() {
            if let Some(cache) = FrozenPrefixCache::load_or_build(self, generator)? {
                return Ok(cache.predict(self, generator, steps));
            }
        }
        let _running = crate::interrupt::Running::start();
        let (mut ps, mut ys) = (Vec::new(), Vec::new());
        for step in 0..steps {
            check(|| format!("predicción interrumpida tras {step} de {steps} lotes: no hay resultado; ejecutar otra vez la celda empieza de nuevo."))?;
            let (x, y) = generator.next_batch()?;
            ps.push(self.predict_on_batch(&x).to_device(Device::Cpu).view([-1]));
            ys.push(y);
        }
        Ok((Tensor::cat(&ps, 0), Tensor::cat(&ys, 0)))
    }
}
