//! Decoded images kept in memory between epochs.
//!
//! Keras decodes every file again in every epoch, although the decoded,
//! resized pixels are the same each time (augmentation comes after). Decoding
//! a batch of 20 JPEGs takes 12–17 ms on the 2-core machines, as much as a
//! tenth of a light backbone's training step, so an iterator keeps the images
//! it has decoded, up to a memory budget: from the second epoch on, only the
//! images beyond the budget are decoded again. The batches are the same.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use anyhow::Result;
use image::RgbImage;
use rayon::prelude::*;

use super::image_io::load_image;

/// Default budget per iterator: the 2,000 training images of the lesson at
/// 150×150 take 135 MB; 512 MiB also holds them at 224×224 (301 MB).
pub const DEFAULT_BUDGET_BYTES: usize = 512 << 20;

pub(crate) struct DecodedImages {
    /// One slot per file of the iterator, filled the first time it is decoded
    /// while the budget allows.
    slots: Vec<OnceLock<RgbImage>>,
    bytes: AtomicUsize,
    budget: usize,
}

impl DecodedImages {
    pub(crate) fn new(files: usize, budget: usize) -> Self {
        DecodedImages { slots: (0..files).map(|_| OnceLock::new()).collect(), bytes: AtomicUsize::new(0), budget }
    }

    /// The images of `indices` (into `paths`), resized to `target_size`, in
    /// parallel; decoded only when not kept from an earlier call. Fails on the
    /// first file that cannot be read or decoded, naming it.
    pub(crate) fn load(&self, indices: &[usize], paths: &[impl AsRef<Path> + Sync], target_size: (u32, u32)) -> Result<Vec<RgbImage>> {
        indices
            .par_iter()
            .map(|&i| {
                if let Some(image) = self.slots[i].get() {
                    return Ok(image.clone());
                }
                let image = load_image(paths[i].as_ref(), target_size)?;
                let size = image.as_raw().len();
                if self.bytes.fetch_add(size, Ordering::Relaxed) + size <= self.budget {
                    // Another thread may have filled the slot meanwhile: same pixels.
                    if self.slots[i].set(image.clone()).is_err() {
                        self.bytes.fetch_sub(size, Ordering::Relaxed);
                    }
                } else {
                    self.bytes.fetch_sub(size, Ordering::Relaxed);
                }
                Ok(image)
            })
            .collect()
    }

    /// How many images are kept, and their bytes.
    pub(crate) fn kept(&self) -> (usize, usize) {
        (self.slots.iter().filter(|s| s.get().is_some()).count(), self.bytes.load(Ordering::Relaxed))
    }

    /// Forgets every image and sets a new budget.
    pub(crate) fn clear(&mut self, budget: usize) {
        *self = DecodedImages::new(self.slots.len(), budget);
    }
}

/// Counts, not the pixels: an iterator's `{:?}` stays readable.
impl std::fmt::Debug for DecodedImages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (images, bytes) = self.kept();
        write!(f, "DecodedImages {{ kept: {images} of {}, bytes: {bytes}, budget: {} }}", self.slots.len(), self.budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_images(dir: &Path, n: usize) -> Vec<std::path::PathBuf> {
        (0..n)
            .map(|i| {
                let path = dir.join(format!("{i}.png"));
                RgbImage::from_pixel(8, 6, image::Rgb([i as u8 * 10, 1, 2])).save(&path).unwrap();
                path
            })
            .collect()
    }

    #[test]
    fn kept_images_are_served_without_reading_the_file_again() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_images(dir.path(), 3);
        let cache = DecodedImages::new(3, DEFAULT_BUDGET_BYTES);
        let first = cache.load(&[2, 0], &paths, (6, 8)).unwrap();
        assert_eq!(cache.kept(), (2, 2 * 8 * 6 * 3));
        // The files are gone: kept images still load, the third one fails naming its file.
        for p in &paths {
            std::fs::remove_file(p).unwrap();
        }
        let again = cache.load(&[2, 0], &paths, (6, 8)).unwrap();
        assert_eq!(first, again);
        assert_eq!(again[0].get_pixel(0, 0).0, [20, 1, 2]);
        let err = cache.load(&[1], &paths, (6, 8)).unwrap_err().to_string();
        assert!(err.contains("1.png"), "{err}");
    }

    #[test]
    fn the_budget_is_respected() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_images(dir.path(), 4);
        let one = 8 * 6 * 3;
        let cache = DecodedImages::new(4, 2 * one + 1);
        let images = cache.load(&[0, 1, 2, 3], &paths, (6, 8)).unwrap();
        assert_eq!(images.len(), 4);
        assert_eq!(cache.kept(), (2, 2 * one));
        let mut cache = cache;
        cache.clear(0);
        cache.load(&[0, 1], &paths, (6, 8)).unwrap();
        assert_eq!(cache.kept(), (0, 0));
    }
}
