//! Keras's optimizers (`keras.optimizers`): RMSprop, written here rather than
//! taken from libtorch because its defaults differ (rho 0.9, epsilon 1e-7) and
//! because its state must be saved in checkpoints. Plain data, below both
//! [`crate::model`] (which keeps the compiled one) and [`crate::train`].

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Keras's `optimizers.RMSprop(lr=...)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RMSprop {
    pub lr: f64,
    pub rho: f64,
    pub epsilon: f64,
}

impl RMSprop {
    pub fn new(lr: f64) -> RMSprop {
        RMSprop { lr, rho: 0.9, epsilon: 1e-7 }
    }

    /// One step for one weight `w` with gradient `g`, in place:
    /// `mean_square ← ρ·mean_square + (1−ρ)·g²` and `w ← w − lr·g / (√mean_square + ε)`.
    pub(crate) fn update(&self, w: &mut Tensor, g: &Tensor, mean_square: &mut Tensor) {
        let dense_f32_on_cpu = [&*w, g, &*mean_square]
            .iter()
            .all(|t| t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous());
        if dense_f32_on_cpu {
            self.update_in_one_pass(w, g, mean_square);
            // Those writes bypass libtorch, so it does not count them in the
            // weight's version, which tells a model that its bf16 copy of the
            // weight is stale (`Layer::weight_like`): an in-place operation on
            // an empty view of the weight counts one change, at no cost.
            let _ = w.narrow(0, 0, 0).zero_();
        } else {
            self.update_with_tensor_ops(w, g, mean_square)
        }
    }

    /// The update is memory-bound: a Dense(256) on EfficientNet-Lite0's 32,000
    /// features has 8 M weights (33 MB). As tensor operations it reads and writes
    /// them about 18 times, through three fresh 33 MB temporaries; this loop
    /// reads `w`, `g` and the mean square once and writes two of them once.
    fn update_in_one_pass(&self, w: &mut Tensor, g: &Tensor, mean_square: &mut Tensor) {
        use rayon::prelude::*;
        let n = w.numel();
        assert!(g.numel() == n && mean_square.numel() == n, "RMSprop: weight, gradient and state differ in size");
        // SAFETY: the three are distinct contiguous f32 CPU tensors of n elements
        // (checked by the caller and above), and nothing else touches them during
        // the step (it runs without gradient recording).
        let (w, g, ms) = unsafe {
            (
                std::slice::from_raw_parts_mut(w.data_ptr() as *mut f32, n),
                std::slice::from_raw_parts(g.data_ptr() as *const f32, n),
                std::slice::from_raw_parts_mut(mean_square.data_ptr() as *mut f32, n),
            )
        };
        let (lr, rho, eps) = (self.lr as f32, self.rho as f32, self.epsilon as f32);
        const CHUNK: usize = 1 << 16;
        w.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).zip(ms.par_chunks_mut(CHUNK)).for_each(|((w, g), ms)| {
            for ((w, &g), ms) in w.iter_mut().zip(g).zip(ms) {
                *ms = rho * *ms + (1.0 - rho) * g * g;
                *w -= lr * g / (ms.sqrt() + eps);
            }
        });
    }

    /// The same with tensor operations: for GPUs and non-contiguous kernels.
    fn update_with_tensor_ops(&self, w: &mut Tensor, g: &Tensor, mean_square: &mut Tensor) {
        let RMSprop { lr, rho, epsilon } = *self;
        let _ = mean_square.g_mul_scalar_(rho).addcmul_(&(g * (1.0 - rho)), g);
        let mut denominator = mean_square.sqrt();
        let _ = denominator.g_add_scalar_(epsilon);
        let _ = w.addcdiv_(&(g * -lr), &denominator);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ways of updating count as a change of the weight (its version),
    /// which is how a model knows its bf16 copy of that weight is stale.
    #[test]
    fn an_update_changes_the_weights_version() {
        let opt = RMSprop::new(1e-3);
        for n in [10, 300_001] {
            let mut w = Tensor::randn([n], (Kind::Float, Device::Cpu));
            let mut ms = w.zeros_like();
            let g = w.ones_like();
            let before = w.internal_version();
            tch::no_grad(|| opt.update(&mut w, &g, &mut ms));
            assert!(w.internal_version() > before);
            let mut strided = Tensor::randn([n, 2], (Kind::Float, Device::Cpu)).select(1, 0);
            let (g, mut ms) = (strided.ones_like(), strided.zeros_like());
            let before = strided.internal_version();
            tch::no_grad(|| opt.update(&mut strided, &g, &mut ms));
            assert!(strided.internal_version() > before, "the tensor-operation path");
        }
    }

    #[test]
    fn one_pass_update_equals_the_tensor_operations() {
        let opt = RMSprop::new(1e-3);
        let g = Tensor::randn([300_001], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([300_001], (Kind::Float, Device::Cpu));
        let ms = Tensor::rand([300_001], (Kind::Float, Device::Cpu));
        let (mut w1, mut ms1) = (w.copy(), ms.copy());
        let (mut w2, mut ms2) = (w.copy(), ms.copy());
        for _ in 0..3 {
            opt.update_in_one_pass(&mut w1, &g, &mut ms1);
            opt.update_with_tensor_ops(&mut w2, &g, &mut ms2);
        }
        assert!(ms1.allclose(&ms2, 1e-6, 1e-7, false));
        assert!(w1.allclose(&w2, 1e-6, 1e-7, false));
        assert!(!w1.allclose(&w, 1e-6, 1e-7, false), "the weights moved");
    }

    #[test]
    fn strided_weights_take_the_tensor_path() {
        let opt = RMSprop::new(1e-2);
        // A channels-last kernel is not contiguous: the update must still be right.
        let w = Tensor::randn([4, 3, 2, 2], (Kind::Float, Device::Cpu))
            .permute([0, 2, 3, 1])
            .contiguous()
            .permute([0, 3, 1, 2]);
        assert!(!w.is_contiguous());
        let g = w.ones_like();
        let (mut w1, mut ms1) = (w.copy(), g.zeros_like());
        opt.update(&mut w1, &g, &mut ms1);
        // First step from a zero mean square: w − lr·1/(√0.1 + ε).
        let expected = &w - 1e-2 / (0.1f64.sqrt() + 1e-7);
        assert!(w1.allclose(&expected, 1e-5, 1e-6, false));
    }
}
