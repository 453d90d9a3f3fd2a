//! Data augmentation, as Keras's `ImageDataGenerator(rotation_range=40,
//! width_shift_range=0.2, height_shift_range=0.2, shear_range=0.2,
//! zoom_range=0.2, horizontal_flip=True, fill_mode='nearest')`.
//!
//! Keras draws one random affine transformation per image (keras-preprocessing's
//! `get_random_transform`) and applies it with `scipy.ndimage.affine_transform`
//! (bilinear, `order=1`), then flips. We draw the same parameters from the same
//! distributions and sample the decoded pixels exactly as libtorch's
//! `affine_grid` + `grid_sample` would (bilinear, `align_corners`, so pixel
//! centres match scipy's; the tests hold the two equal), writing the network's
//! input tensor in the same pass.
//!
//! Two Keras details kept on purpose: `shear_range` is in **degrees** (0.2 is a
//! tiny shear, a well-known Keras quirk), and the zoom factors for rows and
//! columns are drawn independently (`zx`, `zy` in [1 - z, 1 + z]); a factor
//! above 1 zooms *out*.

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use image::RgbImage;
use tch::Tensor;

use super::image_io::{write_nchw, Preprocessing};

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

impl FillMode {
    /// The name Keras's `fill_mode` argument takes.
    pub fn keras_name(self) -> &'static str {
        match self {
            FillMode::Nearest => "nearest",
            FillMode::Constant => "constant",
            FillMode::Reflect => "reflect",
        }
    }
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
    /// The slide's arguments with what each does, in Spanish: what a cell shows.
    pub fn table(&self) -> crate::display::Table {
        use crate::display::decimal;
        let percent = |f: f64| format!("{} %", decimal(100.0 * f, 0));
        let mut table = crate::display::Table::new(&["argumento", "valor", "qué hace"]);
        table
            .row(vec!["rotation_range".into(), decimal(self.rotation_range, 0), format!("gira hasta ±{}°", decimal(self.rotation_range, 0))])
            .row(vec!["width_shift_range".into(), decimal(self.width_shift_range, 2), format!("desplaza hasta un {} del ancho", percent(self.width_shift_range))])
            .row(vec!["height_shift_range".into(), decimal(self.height_shift_range, 2), format!("desplaza hasta un {} del alto", percent(self.height_shift_range))])
            .row(vec!["shear_range".into(), decimal(self.shear_range, 2), format!("cizalla hasta ±{}° (en grados, como Keras)", decimal(self.shear_range, 2))])
            .row(vec![
                "zoom_range".into(),
                decimal(self.zoom_range, 2),
                format!("zoom entre {} y {}", decimal(1.0 - self.zoom_range, 2), decimal(1.0 + self.zoom_range, 2)),
            ])
            .row(vec![
                "horizontal_flip".into(),
                if self.horizontal_flip { "True" } else { "False" }.into(),
                if self.horizontal_flip { "voltea en horizontal la mitad de las veces" } else { "no voltea" }.into(),
            ])
            .row(vec![
                "fill_mode".into(),
                format!("'{}'", self.fill_mode.keras_name()),
                match self.fill_mode {
                    FillMode::Nearest => "rellena con el píxel del borde más cercano",
                    FillMode::Constant => "rellena de negro",
                    FillMode::Reflect => "rellena con el reflejo de la imagen",
                }
                .into(),
            ]);
        table
    }

    pub fn evcxr_display(&self) {
        self.table().evcxr_display();
    }

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

    /// Augments decoded images into a preprocessed (N, 3, H, W) batch on the
    /// CPU, one transform per image drawn from a generator seeded with `seed`:
    /// the same seed gives the same batch (which is what makes a resumed
    /// training identical).
    pub fn apply(&self, images: &[RgbImage], seed: u64, preprocessing: &Preprocessing) -> Tensor {
        if self.is_identity() {
            // The pixels exactly, not resampled at (almost) their own centres.
            return super::image_io::images_to_tensor(images, preprocessing);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let transforms: Vec<Transform> = images
            .iter()
            .map(|img| {
                let (w, h) = img.dimensions();
                self.random_transform(&mut rng, h.into(), w.into())
            })
            .collect();
        apply_transforms(images, &transforms, self.fill_mode, preprocessing)
    }
}

impl Transform {
    /// No change.
    pub const IDENTITY: Transform =
        Transform { theta: 0.0, tx: 0.0, ty: 0.0, shear: 0.0, zx: 1.0, zy: 1.0, flip_horizontal: false };
}

/// Applies one transform per image, then the preprocessing, into an
/// (N, 3, H, W) float tensor on the CPU. As Keras, the 0..255 pixels are
/// transformed first ('constant' fills black whatever the preprocessing).
///
/// Written out here rather than done with libtorch's `affine_grid` +
/// `grid_sample`, which it equals (see the tests): those need a float copy of
/// the batch, a grid of N·H·W coordinates and a separate preprocessing pass,
/// each spread over OpenMP threads. For a batch of 20 at 150×150 on the 2-core
/// machines they took 12–15 ms, a sixth of an EfficientNet-Lite0 training step;
/// this single pass over the pixels takes a few.
///
/// # Panics
/// When the counts differ or the images are not all the same size.
pub fn apply_transforms(
    images: &[RgbImage],
    transforms: &[Transform],
    fill_mode: FillMode,
    preprocessing: &Preprocessing,
) -> Tensor {
    assert_eq!(images.len(), transforms.len(), "one transform per image");
    let (source, scale, offset) = preprocessing.per_channel();
    write_nchw(images, "augmentation", |index, img, planes| {
        let (w, h) = img.dimensions();
        let theta = grid_theta(&transforms[index], h.into(), w.into()).map(|v| v as f32);
        warp(img, theta, fill_mode, |c, value| value * scale + offset[c], source, planes);
    })
}

/// Samples `img` at `theta`'s grid (grid_sample's arithmetic, in f32) and
/// writes `out(c, value)` of each output pixel's channel `source[c]` into plane c.
fn warp(
    img: &RgbImage,
    theta: [f32; 6],
    fill_mode: FillMode,
    out: impl Fn(usize, f32) -> f32,
    source: [usize; 3],
    planes: [&mut [f32]; 3],
) {
    let (w, h) = img.dimensions();
    let (w, h) = (w as usize, h as usize);
    let pixels = img.as_raw();
    let (w_max, h_max) = ((w - 1) as f32, (h - 1) as f32);
    // affine_grid's base grid: pixel centres on [-1, 1] (torch.linspace).
    let normalized = |n: usize| -> Vec<f32> {
        (0..n).map(|i| if n > 1 { -1.0 + 2.0 * i as f32 / (n - 1) as f32 } else { -1.0 }).collect()
    };
    let (xs, ys) = (normalized(w), normalized(h));
    // Where grid_sample reads for a coordinate, in pixels, per fill mode.
    let place = |coordinate: f32, max: f32| {
        let pixel = (coordinate + 1.0) / 2.0 * max;
        match fill_mode {
            FillMode::Constant => pixel,
            FillMode::Nearest => pixel.clamp(0.0, max),
            FillMode::Reflect => reflect(pixel, max).clamp(0.0, max),
        }
    };
    let [p0, p1, p2] = planes;
    let texel = |x: usize, y: usize| -> [f32; 3] {
        let at = (y * w + x) * 3;
        [f32::from(pixels[at]), f32::from(pixels[at + 1]), f32::from(pixels[at + 2])]
    };
    for (row, &y) in ys.iter().enumerate() {
        for (col, &x) in xs.iter().enumerate() {
            let ix = place(theta[0] * x + theta[1] * y + theta[2], w_max);
            let iy = place(theta[3] * x + theta[4] * y + theta[5], h_max);
            let (x0, y0) = (floor(ix), floor(iy));
            let (dx, dy) = (ix - x0 as f32, iy - y0 as f32);
            // Bilinear over the four neighbours.
            let weights = [(1.0 - dx) * (1.0 - dy), dx * (1.0 - dy), (1.0 - dx) * dy, dx * dy];
            let mut rgb = [0.0f32; 3];
            if x0 >= 0 && y0 >= 0 && x0 + 1 < w as i64 && y0 + 1 < h as i64 {
                // All four inside: the common case, without per-neighbour checks.
                let (x0, y0) = (x0 as usize, y0 as usize);
                let taps = [texel(x0, y0), texel(x0 + 1, y0), texel(x0, y0 + 1), texel(x0 + 1, y0 + 1)];
                for (tap, weight) in taps.iter().zip(weights) {
                    for c in 0..3 {
                        rgb[c] += weight * tap[c];
                    }
                }
            } else {
                // At an edge: neighbours outside the image count as black
                // ('constant'; with the other modes they have weight 0).
                let neighbours = [(x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)];
                for ((tx, ty), weight) in neighbours.into_iter().zip(weights) {
                    if (0..w as i64).contains(&tx) && (0..h as i64).contains(&ty) {
                        let tap = texel(tx as usize, ty as usize);
                        for c in 0..3 {
                            rgb[c] += weight * tap[c];
                        }
                    }
                }
            }
            let i = row * w + col;
            p0[i] = out(0, rgb[source[0]]);
            p1[i] = out(1, rgb[source[1]]);
            p2[i] = out(2, rgb[source[2]]);
        }
    }
}

/// `x.floor()` as an integer, without a call into libm (the default x86-64
/// target has no floor instruction; this loop is hot). Coordinates are far
/// inside i64's range; NaN becomes 0.
fn floor(x: f32) -> i64 {
    let t = x as i64;
    if (t as f32) > x {
        t - 1
    } else {
        t
    }
}

/// grid_sample's `reflect_coordinates` with `align_corners`: mirrors a pixel
/// coordinate into [0, max].
fn reflect(pixel: f32, max: f32) -> f32 {
    if max <= 0.0 {
        return 0.0;
    }
    let distance = pixel.abs();
    let flips = (distance / max).floor();
    let extra = distance % max;
    if flips as i64 % 2 == 0 {
        extra
    } else {
        max - extra
    }
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
    use tch::Kind;

    /// The slides' arguments (rotation 40, shifts 0.2, shear 0.2, zoom 0.2, flip, 'nearest').
    fn slides() -> Augmentation {
        Augmentation {
            rotation_range: 40.0,
            width_shift_range: 0.2,
            height_shift_range: 0.2,
            shear_range: 0.2,
            zoom_range: 0.2,
            horizontal_flip: true,
            fill_mode: FillMode::Nearest,
        }
    }

    #[test]
    fn the_slide_arguments_read_as_a_spanish_table() {
        let slide = slides();
        let text = slide.table().to_string();
        for expected in ["gira hasta ±40°", "hasta un 20 % del ancho", "zoom entre 0,80 y 1,20", "'nearest'"] {
            assert!(text.contains(expected), "{expected:?} not in\n{text}");
        }
    }

    /// value = 10 * row + col in every channel.
    fn ramp(h: u32, w: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |col, row| image::Rgb([(10 * row + col) as u8; 3]))
    }

    /// Channel 0 of image 0, row by row.
    fn plane(x: &Tensor) -> Vec<Vec<f32>> {
        (0..x.size()[2]).map(|r| Vec::try_from(x.get(0).get(0).get(r)).unwrap()).collect()
    }

    fn one(img: &RgbImage, t: Transform, fill_mode: FillMode) -> Tensor {
        apply_transforms(std::slice::from_ref(img), &[t], fill_mode, &Preprocessing::Rescale(1.0))
    }

    const I: Transform = Transform::IDENTITY;

    /// The libtorch version: `affine_grid` + `grid_sample` on the float batch,
    /// then the preprocessing. `apply_transforms` must equal it.
    fn grid_sample_reference(images: &[RgbImage], transforms: &[Transform], fill_mode: FillMode, pre: &Preprocessing) -> Tensor {
        let x = super::super::image_io::images_to_tensor(images, &Preprocessing::Rescale(1.0));
        let (n, c, h, w) = x.size4().unwrap();
        let thetas: Vec<f32> = transforms.iter().flat_map(|t| grid_theta(t, h, w)).map(|v| v as f32).collect();
        let theta = Tensor::from_slice(&thetas).view([n, 2, 3]);
        let grid = Tensor::affine_grid_generator(&theta, [n, c, h, w], true);
        let padding = match fill_mode {
            FillMode::Constant => 0,
            FillMode::Nearest => 1,
            FillMode::Reflect => 2,
        };
        // interpolation 0 = bilinear (Keras's order=1).
        pre.apply(&x.grid_sampler(&grid, 0, padding, true))
    }

    #[test]
    fn identity_transform_changes_nothing() {
        let x = ramp(5, 7);
        let y = one(&x, I, FillMode::Nearest);
        let want = super::super::image_io::images_to_tensor(&[x.clone()], &Preprocessing::Rescale(1.0));
        assert!(y.allclose(&want, 1e-4, 1e-4, false));
        // No augmentation asked for: the pixels exactly (the picture's "original").
        assert!(Augmentation::default().apply(&[x], 3, &Preprocessing::Rescale(1.0)).equal(&want));
    }

    #[test]
    fn flip_reverses_columns() {
        let x = ramp(4, 6);
        let y = one(&x, Transform { flip_horizontal: true, ..I }, FillMode::Nearest);
        let want = super::super::image_io::images_to_tensor(&[x], &Preprocessing::Rescale(1.0)).flip([3]);
        assert!(y.allclose(&want, 1e-4, 1e-4, false));
    }

    #[test]
    fn shift_moves_content_like_keras() {
        // Keras: output(r, c) = input(r + tx, c + ty). A shift of one column
        // (ty = 1) shows column c + 1 at c and repeats the last column (nearest).
        let x = ramp(3, 5);
        let y = one(&x, Transform { ty: 1.0, ..I }, FillMode::Nearest);
        assert_eq!(plane(&y)[1], vec![11.0, 12.0, 13.0, 14.0, 14.0]);
        // ... and one row down (tx = 1), black fill with 'constant'.
        let y = one(&x, Transform { tx: 1.0, ..I }, FillMode::Constant);
        let col: Vec<f32> = plane(&y).iter().map(|row| row[0]).collect();
        assert_eq!(col, vec![10.0, 20.0, 0.0]);
        // 'reflect' mirrors: the row after the last is the one before it.
        let y = one(&x, Transform { tx: 1.0, ..I }, FillMode::Reflect);
        let col: Vec<f32> = plane(&y).iter().map(|row| row[0]).collect();
        assert_eq!(col, vec![10.0, 20.0, 10.0]);
    }

    #[test]
    fn rotation_by_90_degrees_matches_scipy() {
        // scipy.ndimage.affine_transform with Keras's matrix for theta=90 on a
        // 3x3 image, checked value by value.
        // M = [[0, -1], [1, 0]]: input (r_in, c_in) = (-c, r) around the centre.
        // output(0,0): (r,c)=(-1,-1) → input (1,-1) → pixel (2,0) = 20.
        let y = one(&ramp(3, 3), Transform { theta: 90.0, ..I }, FillMode::Nearest);
        let got: Vec<f32> = plane(&y).concat();
        let want = [20.0, 10.0, 0.0, 21.0, 11.0, 1.0, 22.0, 12.0, 2.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-3, "{got:?} != {want:?}");
        }
    }

    #[test]
    fn zoom_above_one_zooms_out() {
        // zx = zy = 2: output pixel at distance d from the centre samples the
        // input at 2d, so the corners show the (nearest-filled) edges.
        let y = one(&ramp(5, 5), Transform { zx: 2.0, zy: 2.0, ..I }, FillMode::Nearest);
        assert_eq!(plane(&y)[2], vec![20.0, 20.0, 22.0, 24.0, 24.0]);
    }

    #[test]
    fn equals_libtorch_grid_sample_for_every_fill_mode_and_preprocessing() {
        let aug = Augmentation {
            rotation_range: 40.0,
            width_shift_range: 0.2,
            height_shift_range: 0.2,
            shear_range: 20.0,
            zoom_range: 0.5,
            horizontal_flip: true,
            fill_mode: FillMode::Nearest,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let images: Vec<RgbImage> =
            (0..6).map(|_| RgbImage::from_fn(23, 17, |_, _| image::Rgb(rng.random::<[u8; 3]>()))).collect();
        let transforms: Vec<Transform> = images.iter().map(|_| aug.random_transform(&mut rng, 17, 23)).collect();
        for fill_mode in [FillMode::Nearest, FillMode::Constant, FillMode::Reflect] {
            for pre in [Preprocessing::Rescale(1.0 / 255.0), Preprocessing::Caffe, Preprocessing::Tf] {
                let ours = apply_transforms(&images, &transforms, fill_mode, &pre);
                let torch = grid_sample_reference(&images, &transforms, fill_mode, &pre);
                // f32 coordinates computed in another order: differences of a
                // few 1e-6 pixel, times the steepest step between pixels (255);
                // measured up to 6.4e-4.
                let scale = match pre {
                    Preprocessing::Rescale(f) => f64::from(f),
                    Preprocessing::Tf => 1.0 / 127.5,
                    Preprocessing::Caffe => 1.0,
                };
                let diff = (&ours - &torch).abs().max().double_value(&[]) / scale;
                assert!(diff < 0.005, "{fill_mode:?} {pre:?}: differs from grid_sample by {diff} (0..255 scale)");
                assert_eq!(ours.kind(), Kind::Float);
            }
        }
    }

    #[test]
    fn same_seed_same_batch_and_ranges_respected() {
        let aug = slides();
        let x = vec![ramp(8, 8); 4];
        let pre = Preprocessing::Rescale(1.0);
        assert!(aug.apply(&x, 7, &pre).equal(&aug.apply(&x, 7, &pre)));
        assert!(!aug.apply(&x, 7, &pre).equal(&aug.apply(&x, 8, &pre)));
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
