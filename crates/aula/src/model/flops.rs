//! How much arithmetic one image costs: the "GFLOP per image" column of the
//! backbone comparison. Counted as 2 FLOPs per multiply-add of the
//! convolutions and dense layers (the usual convention; papers that quote
//! "mult-adds" give half): VGG16's base at 224×224 is 30.7 GFLOPs.

use super::{LayerKind, Sequential};

impl Sequential {
    /// FLOPs of one image through the model (inference).
    pub fn flops(&self) -> i64 {
        let mut input = self.input_shape().map(<[i64]>::to_vec).unwrap_or_default();
        let mut total = 0;
        for layer in self.layers() {
            let out = &layer.output_shape;
            let pixels = out.iter().take(2).product::<i64>();
            let in_channels = input.last().copied().unwrap_or(0);
            total += match &layer.kind {
                LayerKind::Conv2D { filters, kernel_size: [kh, kw], .. } => 2 * pixels * kh * kw * in_channels * filters,
                LayerKind::DepthwiseConv2D { kernel_size: [kh, kw], depth_multiplier, .. } => {
                    2 * pixels * kh * kw * in_channels * depth_multiplier
                }
                LayerKind::SeparableConv2D { filters, kernel_size: [kh, kw], depth_multiplier, .. } => {
                    2 * pixels * in_channels * depth_multiplier * (kh * kw + filters)
                }
                LayerKind::Dense { units, .. } => 2 * in_channels * units,
                _ => layer.models().iter().map(|m| m.flops()).sum(),
            };
            input = out.clone();
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use crate::model::vgg16;
    use crate::weights::Weights;

    #[test]
    fn vgg16_costs_what_the_paper_says() {
        // Simonyan & Zisserman: 15.3 G mult-adds for the base at 224×224.
        let base = vgg16(Weights::None, false, (224, 224, 3)).unwrap();
        let gflops = base.flops() as f64 / 1e9;
        assert!((gflops - 30.7).abs() < 0.1, "{gflops}");
        let top = vgg16(Weights::None, true, (224, 224, 3)).unwrap();
        // The classifier adds 2 × (25088·4096 + 4096·4096 + 4096·1000).
        assert_eq!(top.flops() - base.flops(), 2 * (25088 * 4096 + 4096 * 4096 + 4096 * 1000));
    }
}
