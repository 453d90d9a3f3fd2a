//! Data augmentation, as Keras's `ImageDataGenerator(rotation_range=40,
//! width_shift_range=0.2, height_shift_range=0.2, shear_range=0.2,
//! zoom_range=0.2, horizontal_flip=True, fill_mode='nearest')`.
//!
//! Keras draws one random affine transformation per image (keras-preprocessing's
//! `get_random_transform`) and applies it with `scipy.ndimage.affine_transform`
//! (bilinear, `order=1`), then flips. We draw the same parameters from the same
//! distributions and apply the whole batch at once with libtorch's
//! `affine_grid` + `grid_sample` (bilinear, `align_corners`, so pixel centres
//! match scipy's), which is what keeps augmentation from starving training.
//!
//! Two Keras details kept on purpose: `shear_range` is in **degrees** (0.2 is a
//! tiny shear, a well-known Keras quirk), and the zoom factors for rows and
//! columns are drawn independently (`zx`, `zy` in [1 - z, 1 + z]); a factor
//! above 1 zooms *out*.

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// How points outside the input image are filled (Keras's `fill_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FillMode {
    /// `'nearest'` (Keras's default): the closest edge pixel, `aaaa|abcd|dddd`.
    #[default]
    Nearest,
    /// `'constant'` with `cval=0`: black.
    Constant,
    /// `'reflect'`: mirrored at the edge.
    Reflect,
}

impl std::str::FromStr for FillMode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "nearest" => FillMode::Nearest,
            "constant" => FillMode::Constant,
            "reflect" => FillMode::Reflect,
            other => bail!("fill_mode '{other}' is not supported (use 'nearest', 'constant' or 'reflect')"),
        })
    }
}

impl FillMode {
    /// libtorch's `grid_sampler` padding mode.
    fn padding_mode(self) -> i64 {
        match self {
            FillMode::Constant => 0,
            FillMode::Nearest => 1,
            FillMode::Reflect => 2,
        }
    }
}

/// The augmentation arguments of `ImageDataGenerator`. All zero / false (the
/// default) means no augmentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Augmentation {
    /// Degrees, rotation drawn in [-r, r].
    pub rotation_range: f64,
    /// Fraction of the width, shift drawn in [-s, s] × width.
    pub width_shift_range: f64,
    /// Fraction of the height.
    pub height_shift_range: f64,
    /// Degrees (as in Keras), shear angle drawn in [-s, s].
    pub shear_range: f64,
    /// Zoom factors drawn in [1 - z, 1 + z], rows and columns independently.
    pub zoom_range: f64,
    /// Flip left-right with probability 1/2.
    pub horizontal_flip: bool,
    pub fill_mode: FillMode,
}

/// One image's random transformation, Keras's `transform_parameters`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transform {
    /// Degrees.
    pub theta: f64,
    /// Shift in pixels along rows (height) and columns (width).
    pub tx: f64,
    pub ty: f64,
    /// Degrees.
    pub shear: f64,
    pub zx: f64,
    pub zy: f64,
    pub flip_horizontal: bool,
}

impl Augmentation {
    pub fn is_identity(&self) -> bool {
        self.rotation_range == 0.0
            && self.width_shift_range == 0.0
            && self.height_shift_range == 0.0
            && self.shear_range == 0.0
            && self.zoom_range == 0.0
            && !self.horizontal_flip
    }

    /// Draws one image's parameters, in Keras's order and from its ranges.
    pub fn random_transform(&self, rng: &mut impl Rng, height: i64, width: i64) -> Transform {
        let mut uniform = |r: f64| if r > 0.0 { rng.random_range(-r..=r) } else { 0.0 };
        let theta = uniform(self.rotation_range);
        let tx = uniform(self.height_shift_range) * height as f64;
        let ty = uniform(self.width_shift_range) * width as f64;
        let shear = uniform(self.shear_range);
        let (zx, zy) = if self.zoom_range > 0.0 {
            let z = self.zoom_range;
            (rng.random_range(1.0 - z..=1.0 + z), rng.random_range(1.0 - z..=1.0 + z))
        } else {
            (1.0, 1.0)
        };
        let flip_horizontal = self.horizontal_flip && rng.random_bool(0.5);
        Transform { theta, tx, ty, shear, zx, zy, flip_horizontal }
    }

    /// Augments a batch of images (N, C, H, W) on any device, one transform
    /// per image drawn from a generator seeded with `seed`: the same seed gives
    /// the same batch (which is what makes a resumed training identical).
    pub fn apply(&self, x: &Tensor, seed: u64) -> Tensor {
        if self.is_identity() || x.size()[0] == 0 {
            return x.shallow_clone();
        }
        let (h, w) = (x.size()[2], x.size()[3]);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let transforms: Vec<Transform> = (0..x.size()[0]).map(|_| self.random_transform(&mut rng, h, w)).collect();
        apply_transforms(x, &transforms, self.fill_mode)
    }
}

/// Applies one transform per image of an (N, C, H, W) float batch.
pub fn apply_transforms(x: &Tensor, transforms: &[Transform], fill_mode: FillMode) -> Tensor {
    let (n, c, h, w) = x.size4().expect("images are (N, C, H, W)");
    assert_eq!(n as usize, transforms.len(), "one transform per image");
    let thetas: Vec<f32> = transforms.iter().flat_map(|t| grid_theta(t, h, w)).map(|v| v as f32).collect();
    let theta = Tensor::from_slice(&thetas).view([n, 2, 3]).to_device(x.device());
    let grid = Tensor::affine_grid_generator(&theta, [n, c, h, w], true);
    // interpolation 0 = bilinear (Keras's order=1).
    x.to_kind(Kind::Float).grid_sampler(&grid, 0, fill_mode.padding_mode(), true)
}

/// Keras's transformation matrix (output pixel → input pixel, in (row, col)
/// coordinates centred on the image), rewritten for `affine_grid`, whose
/// coordinates are (x = col, y = row), normalised to [-1, 1].
fn grid_theta(t: &Transform, h: i64, w: i64) -> [f64; 6] {
    // keras_preprocessing.image.affine_transformations.apply_affine_transform:
    // M = rotation · shift · shear · zoom, acting on (row, col, 1).
    let (th, sh) = (t.theta.to_radians(), t.shear.to_radians());
    let rotation = [[th.cos(), -th.sin(), 0.0], [th.sin(), th.cos(), 0.0], [0.0, 0.0, 1.0]];
    let shift = [[1.0, 0.0, t.tx], [0.0, 1.0, t.ty], [0.0, 0.0, 1.0]];
    let shear = [[1.0, -sh.sin(), 0.0], [0.0, sh.cos(), 0.0], [0.0, 0.0, 1.0]];
    let zoom = [[t.zx, 0.0, 0.0], [0.0, t.zy, 0.0], [0.0, 0.0, 1.0]];
    let m = matmul(&matmul(&matmul(&rotation, &shift), &shear), &zoom);
    // Pixel centres: row r ↦ (r - rc) / rc with rc = (h - 1) / 2 (scipy's offset
    // centre and align_corners=True agree on this).
    let (rc, cc) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
    let (rc, cc) = (rc.max(0.5), cc.max(0.5));
    // Keras flips the transformed image; flipping the output columns is the same.
    let f = if t.flip_horizontal { -1.0 } else { 1.0 };
    [
        // x_in (col) from (x_out, y_out)
        m[1][1] * f,
        m[1][0] * rc / cc,
        m[1][2] / cc,
        // y_in (row)
        m[0][1] * cc / rc * f,
        m[0][0],
        m[0][2] / rc,
    ]
}

fn matmul(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut out = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            out[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(h: i64, w: i64) -> Tensor {
        // value = 10 * row + col, one channel
        Tensor::arange(h * w, (Kind::Float, tch::Device::Cpu)).view([1, 1, h, w]).remainder(w as f64)
            + Tensor::arange(h, (Kind::Float, tch::Device::Cpu)).view([1, 1, h, 1]) * 10.0
    }

    fn identity() -> Transform {
        Transform { theta: 0.0, tx: 0.0, ty: 0.0, shear: 0.0, zx: 1.0, zy: 1.0, flip_horizontal: false }
    }

    #[test]
    fn identity_transform_changes_nothing() {
        let x = ramp(5, 7);
        let y = apply_transforms(&x, &[identity()], FillMode::Nearest);
        assert!(y.allclose(&x, 1e-4, 1e-4, false));
    }

    #[test]
    fn flip_reverses_columns() {
        let x = ramp(4, 6);
        let y = apply_transforms(&x, &[Transform { flip_horizontal: true, ..identity() }], FillMode::Nearest);
        assert!(y.allclose(&x.flip([3]), 1e-4, 1e-4, false));
    }

    #[test]
    fn shift_moves_content_like_keras() {
        // Keras: output(r, c) = input(r + tx, c + ty). A shift of one column
        // (ty = 1) shows column c + 1 at c and repeats the last column (nearest).
        let x = ramp(3, 5);
        let y = apply_transforms(&x, &[Transform { ty: 1.0, ..identity() }], FillMode::Nearest);
        let row: Vec<f32> = Vec::try_from(y.get(0).get(0).get(1)).unwrap();
        assert_eq!(row, vec![11.0, 12.0, 13.0, 14.0, 14.0]);
        // ... and one row down (tx = 1), black fill with 'constant'.
        let y = apply_transforms(&x, &[Transform { tx: 1.0, ..identity() }], FillMode::Constant);
        let col: Vec<f32> = Vec::try_from(y.get(0).get(0).select(1, 0)).unwrap();
        assert_eq!(col, vec![10.0, 20.0, 0.0]);
    }

    #[test]
    fn rotation_by_90_degrees_matches_scipy() {
        // scipy.ndimage.affine_transform with Keras's matrix for theta=90 on a
        // 3x3 image: output(r, c) = input(c', -r') around the centre, i.e. the
        // image turned a quarter anti-clockwise... checked value by value.
        let x = ramp(3, 3);
        let y = apply_transforms(&x, &[Transform { theta: 90.0, ..identity() }], FillMode::Nearest);
        // M = [[0, -1], [1, 0]]: input (r_in, c_in) = (-c, r) around the centre.
        // output(0,0): (r,c)=(-1,-1) → input (1,-1) → pixel (2,0) = 20.
        let got: Vec<f32> = Vec::try_from(y.flatten(0, -1)).unwrap();
        let want = [20.0, 10.0, 0.0, 21.0, 11.0, 1.0, 22.0, 12.0, 2.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-3, "{got:?} != {want:?}");
        }
    }

    #[test]
    fn zoom_above_one_zooms_out() {
        // zx = zy = 2: output pixel at distance d from the centre samples the
        // input at 2d, so the corners show the (nearest-filled) edges.
        let x = ramp(5, 5);
        let y = apply_transforms(&x, &[Transform { zx: 2.0, zy: 2.0, ..identity() }], FillMode::Nearest);
        let row: Vec<f32> = Vec::try_from(y.get(0).get(0).get(2)).unwrap();
        assert_eq!(row, vec![20.0, 20.0, 22.0, 24.0, 24.0]);
    }

    #[test]
    fn same_seed_same_batch_and_ranges_respected() {
        let aug = Augmentation {
            rotation_range: 40.0,
            width_shift_range: 0.2,
            height_shift_range: 0.2,
            shear_range: 0.2,
            zoom_range: 0.2,
            horizontal_flip: true,
            fill_mode: FillMode::Nearest,
        };
        let x = ramp(8, 8).repeat([4, 3, 1, 1]);
        assert!(aug.apply(&x, 7).equal(&aug.apply(&x, 7)));
        assert!(!aug.apply(&x, 7).equal(&aug.apply(&x, 8)));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut flips = 0;
        for _ in 0..1000 {
            let t = aug.random_transform(&mut rng, 150, 150);
            assert!(t.theta.abs() <= 40.0 && t.tx.abs() <= 30.0 && t.ty.abs() <= 30.0 && t.shear.abs() <= 0.2);
            assert!((0.8..=1.2).contains(&t.zx) && (0.8..=1.2).contains(&t.zy));
            flips += t.flip_horizontal as i32;
        }
        assert!((400..600).contains(&flips), "{flips} flips in 1000");
    }
}
