//! Speed without changing a number a student sees: a convolution followed by batch
//! normalization in inference mode runs as one folded convolution, and
//! [`run_layers`] walks layers folding such pairs where it can.

use super::{ActivationFn, LayerKind, Layer};
use tch::Tensor;

impl Layer {
    /// A convolution without activation followed by batch normalization in
    /// inference mode is one convolution: the normalization is then an affine
    /// map per channel, folded here into the kernel and the bias. That saves a
    /// pass over every activation map (EfficientNet-Lite0's base: 62 → 117 img/s
    /// on 2 cores, `make bench`). None when the pair does not fold: another layer kind, an
    /// activation in between, or batch statistics (training a trainable BN).
    pub(super) fn forward_folded(&self, x: &Tensor, bn: &Layer, train: bool, frozen: bool) -> Option<Tensor> {
        let LayerKind::BatchNormalization { epsilon, .. } = bn.kind else { return None };
        if train && !frozen && bn.trainable {
            return None;
        }
        let linear_conv = matches!(
            self.kind,
            LayerKind::Conv2D { activation: ActivationFn::Linear, .. }
                | LayerKind::DepthwiseConv2D { activation: ActivationFn::Linear, .. }
                | LayerKind::SeparableConv2D { activation: ActivationFn::Linear, .. }
        );
        if !linear_conv {
            return None;
        }
        let inv_std = (bn.weight("moving_variance")? + epsilon).rsqrt();
        let scale = match bn.weight("gamma") {
            Some(gamma) => gamma * inv_std,
            None => inv_std,
        };
        let mean = bn.weight("moving_mean")?;
        let shift = match bn.weight("beta") {
            Some(beta) => beta - mean * &scale,
            None => -(mean * &scale),
        };
        // Output channels are the kernels' first dimension (OIHW), depthwise ones
        // included. Folded in fp32, then in the input's precision.
        let kernel = |w: &Tensor| in_kind_of(&(w * scale.view([-1, 1, 1, 1])), x);
        let bias = in_kind_of(
            &match self.weight("bias") {
                Some(b) => b * &scale + shift,
                None => shift,
            },
            x,
        );
        Some(match &self.kind {
            LayerKind::Conv2D { kernel_size, strides, padding, .. } => {
                let (x, pad) = padding.apply(x, *kernel_size, *strides, 0.0);
                x.conv2d(&kernel(&self.weights[0].1), Some(&bias), strides, pad, [1, 1], 1)
            }
            LayerKind::DepthwiseConv2D { kernel_size, strides, padding, .. } => {
                let (x, pad) = padding.apply(x, *kernel_size, *strides, 0.0);
                let groups = x.size()[1];
                x.conv2d(&kernel(&self.weights[0].1), Some(&bias), strides, pad, [1, 1], groups)
            }
            LayerKind::SeparableConv2D { kernel_size, strides, padding, .. } => {
                let (x, pad) = padding.apply(x, *kernel_size, *strides, 0.0);
                let groups = x.size()[1];
                let depthwise = x.conv2d::<&Tensor>(&self.weight_like(0, &x), None, strides, pad, [1, 1], groups);
                depthwise.conv2d(&kernel(&self.weights[1].1), Some(&bias), [1, 1], [0, 0], [1, 1], 1)
            }
            _ => unreachable!("checked above"),
        })
    }
}

/// `w` in the element type of `x` (itself when it already is): a folded
/// kernel, computed at each pass, in the pass's precision.
pub(super) fn in_kind_of(w: &Tensor, x: &Tensor) -> Tensor {
    if w.kind() == x.kind() {
        w.shallow_clone()
    } else {
        w.to_kind(x.kind())
    }
}

/// Runs `layers` one after the other, each with whether an enclosing model
/// freezes it; a convolution and the batch normalization after it run as one
/// folded convolution where they can (`Layer::forward_folded`).
pub(super) fn run_layers<'a>(layers: impl IntoIterator<Item = (&'a Layer, bool)>, mut x: Tensor, train: bool) -> Tensor {
    let mut layers = layers.into_iter().peekable();
    while let Some((layer, frozen)) = layers.next() {
        match layers.peek().and_then(|&(next, next_frozen)| layer.forward_folded(&x, next, train, next_frozen)) {
            Some(y) => {
                layers.next();
                x = y;
            }
            None => x = layer.forward_t(&x, train, frozen),
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::layers::{Activation, BatchNormalization, Conv2D, DepthwiseConv2D, SeparableConv2D};
    use crate::model::{Dense, Flatten, Sequential};
    use tch::{Device, Kind};
    use crate::model::applications::test_support::randomize_batch_norm;

    /// Each convolution kind, then batch normalization; with `separated`, a
    /// linear activation in between keeps every pair from folding.
    fn convs_and_batch_norms(separated: bool) -> Sequential {
        let mut model = Sequential::new("m");
        let specs = [
            Conv2D(8, 3).padding("same").use_bias(false).input_shape(&[9, 9, 3]),
            DepthwiseConv2D(3).strides(2).padding("same").depth_multiplier(2),
            SeparableConv2D(6, 3),
        ];
        for (i, spec) in specs.into_iter().enumerate() {
            model.add(spec).unwrap();
            if separated {
                model.add(Activation("linear")).unwrap();
            }
            model.add(BatchNormalization().name(&format!("bn{i}"))).unwrap();
        }
        model
    }

    /// The same weights in both forms.
    fn folded_and_separated() -> (Sequential, Sequential) {
        let (mut folded, mut separated) = (convs_and_batch_norms(false), convs_and_batch_norms(true));
        randomize_batch_norm(&mut folded);
        separated.set_weights(&folded.get_weights(), "the folded model").unwrap();
        (folded, separated)
    }

    #[test]
    fn batch_norm_folded_into_convolutions_gives_the_same_output() {
        let (folded, separated) = folded_and_separated();
        assert_eq!(folded.count_params(), separated.count_params());
        let x = Tensor::rand([2, 3, 9, 9], (Kind::Float, Device::Cpu));
        let (y, z) = (folded.forward_t(&x, false), separated.forward_t(&x, false));
        assert_eq!(y.size(), [2, 6, 3, 3]);
        assert!(y.allclose(&z, 1e-4, 1e-5, false), "max difference {}", (&y - &z).abs().max());
        // Training a trainable BN uses the batch's statistics: nothing folds.
        let (y, z) = (folded.forward_t(&x, true), separated.forward_t(&x, true));
        assert!(y.allclose(&z, 1e-4, 1e-5, false));
        assert!(
            !y.allclose(&folded.forward_t(&x, false), 1e-2, 1e-2, false),
            "batch statistics differ from moving ones"
        );
    }

    /// In bf16 the folded convolutions (each kind, batch normalization folded
    /// in fp32 first) give fp32's numbers up to bf16's rounding.
    #[test]
    fn folded_convolutions_in_bf16() {
        use crate::precision::Precision;
        let (mut folded, _) = folded_and_separated();
        let x = Tensor::rand([2, 3, 9, 9], (Kind::Float, Device::Cpu));
        folded.set_precision(Precision::Fp32);
        let fp32 = folded.predict_on_batch(&x);
        folded.set_precision(Precision::Bf16);
        let bf16 = folded.predict_on_batch(&x);
        let relative = (&bf16 - &fp32).norm().double_value(&[]) / fp32.norm().double_value(&[]);
        assert!(bf16.kind() == Kind::Float && relative > 0.0 && relative < 2e-2, "relative L2 error {relative}");
    }

    /// A bf16 pass makes its bf16 copy of each weight once and reuses it
    /// while the weight is unchanged; `set_weights` or a training step (both
    /// ways RMSprop updates) make it anew.
    #[test]
    fn bf16_weight_copies_follow_the_weights() {
        use crate::precision::Precision;
        use crate::optimizers::RMSprop;
        for channels_last in [true, false] {
            let mut model = Sequential::new("m");
            // Channels-last kernels take RMSprop's tensor-operation path, NCHW ones its one-pass loop.
            model.set_channels_last(channels_last);
            model.add(Conv2D(4, 3).activation("relu").input_shape(&[8, 8, 3]).name("conv")).unwrap();
            model.add(Flatten()).unwrap();
            model.add(Dense(1).activation("sigmoid")).unwrap();
            let x = Tensor::rand([6, 3, 8, 8], (Kind::Float, Device::Cpu));
            let y = Tensor::from_slice(&[0f32, 1., 0., 1., 0., 1.]);
            let run = |model: &mut Sequential, precision| {
                model.set_precision(precision);
                model.predict_on_batch(&x)
            };
            let copy_ptr = |model: &Sequential| {
                model.layers[0].casts.lock().unwrap()[0].as_ref().map(|c| c.copy.data_ptr() as usize)
            };
            let first = run(&mut model, Precision::Bf16);
            let made = copy_ptr(&model).expect("a bf16 copy of the kernel");
            assert!(run(&mut model, Precision::Bf16).equal(&first));
            assert_eq!(copy_ptr(&model), Some(made), "the copy was made again for unchanged weights");
            assert!(first.allclose(&run(&mut model, Precision::Fp32), 0.0, 1e-2, false));

            let mut weights = model.get_weights();
            let kernel = weights["conv/kernel"].shallow_clone() * 3.0;
            weights.insert("conv/kernel".into(), kernel);
            model.set_weights(&weights, "test").unwrap();
            let (fp32, bf16) = (run(&mut model, Precision::Fp32), run(&mut model, Precision::Bf16));
            assert!(!bf16.allclose(&first, 0.0, 1e-2, false), "the new kernel changed nothing");
            assert!(bf16.allclose(&fp32, 0.0, 1e-2, false), "a stale bf16 kernel after set_weights");

            model.compile(RMSprop::new(0.1), "binary_crossentropy", &["acc"]).unwrap();
            model.fit(&x, &y, 3, 6, None).unwrap();
            let (fp32_trained, bf16_trained) = (run(&mut model, Precision::Fp32), run(&mut model, Precision::Bf16));
            assert!(!fp32_trained.allclose(&fp32, 0.0, 1e-2, false), "training changed nothing");
            assert!(bf16_trained.allclose(&fp32_trained, 0.0, 1e-2, false), "a stale bf16 kernel after training");
        }
    }

    /// The gradient reaches a trainable kernel through the folding (fine-tuning
    /// a network whose batch normalization is frozen).
    #[test]
    fn folded_kernels_still_learn() {
        let (mut folded, mut separated) = folded_and_separated();
        for model in [&mut folded, &mut separated] {
            for bn in ["bn0", "bn1", "bn2"] {
                model.get_layer(bn).unwrap().trainable = false;
            }
        }
        let x = Tensor::rand([2, 3, 9, 9], (Kind::Float, Device::Cpu));
        let grads: Vec<Tensor> = [&folded, &separated]
            .iter()
            .map(|model| {
                let kernel = &model.layers()[0].weights[0].1;
                model.forward_t(&x, true).sum(Kind::Float).backward();
                let g = kernel.grad().copy();
                let _ = kernel.grad().zero_();
                g
            })
            .collect();
        assert!(grads[0].abs().sum(Kind::Float).double_value(&[]) > 0.0);
        assert!(
            grads[0].allclose(&grads[1], 1e-3, 1e-4, false),
            "{} vs {}",
            grads[0].abs().max(),
            (&grads[0] - &grads[1]).abs().max()
        );
    }
}
