//! `ImageDataGenerator(...).flow_from_directory(...)`, as in Keras.
//!
//! A directory holds one subfolder per class (`train/cats`, `train/dogs`); the
//! classes are the subfolder names in sorted order, so `cats` is 0 and `dogs`
//! is 1. The iterator hands out batches of preprocessed images and their
//! labels, endlessly, reshuffling at each epoch, as Keras's generators do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use tch::{Kind, Tensor};

use super::image_io::IMAGE_EXTENSIONS;
use super::augment::Augmentation;
use super::decoded::{DecodedImages, DEFAULT_BUDGET_BYTES};
use super::image_io::{has_image_extension, images_to_tensor, Preprocessing};

/// What the labels of a batch look like (Keras's `class_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassMode {
    /// Two classes, label 0.0 or 1.0 as f32, shape (N,): for a sigmoid output
    /// and binary cross-entropy.
    Binary,
    /// One-hot f32 labels, shape (N, classes): for softmax outputs.
    Categorical,
    /// The class index as f32, shape (N,).
    Sparse,
}

/// How images are turned into network inputs (Keras's `ImageDataGenerator`).
/// `ImageDataGenerator::default()` is Keras's `ImageDataGenerator()`: values
/// left in 0..255.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImageDataGenerator {
    /// Pixel scaling: `rescale=1./255` or VGG16's 'caffe' preprocessing.
    pub preprocessing: Preprocessing,
    /// Random transformations applied to every batch (none by default).
    pub augmentation: Augmentation,
}

impl ImageDataGenerator {
    /// `ImageDataGenerator(rescale=factor)`, e.g. `rescale(1.0 / 255.0)`.
    pub fn rescale(factor: f32) -> Self {
        ImageDataGenerator { preprocessing: Preprocessing::Rescale(factor), ..Default::default() }
    }

    /// VGG16's own preprocessing (`vgg16.preprocess_input`, 'caffe' mode).
    pub fn caffe() -> Self {
        ImageDataGenerator { preprocessing: Preprocessing::Caffe, ..Default::default() }
    }

    /// `ImageDataGenerator(preprocessing_function=<model>.preprocess_input)`:
    /// each pretrained model's own scaling (see `Application::preprocessing`).
    pub fn preprocess_input(preprocessing: Preprocessing) -> Self {
        ImageDataGenerator { preprocessing, ..Default::default() }
    }

    /// `rotation_range=40`: degrees.
    pub fn rotation_range(mut self, degrees: f64) -> Self {
        self.augmentation.rotation_range = degrees;
        self
    }

    /// `width_shift_range=0.2`: fraction of the width.
    pub fn width_shift_range(mut self, fraction: f64) -> Self {
        self.augmentation.width_shift_range = fraction;
        self
    }

    /// `height_shift_range=0.2`: fraction of the height.
    pub fn height_shift_range(mut self, fraction: f64) -> Self {
        self.augmentation.height_shift_range = fraction;
        self
    }

    /// `shear_range=0.2`: degrees, as in Keras.
    pub fn shear_range(mut self, degrees: f64) -> Self {
        self.augmentation.shear_range = degrees;
        self
    }

    /// `zoom_range=0.2`: factors in [0.8, 1.2].
    pub fn zoom_range(mut self, range: f64) -> Self {
        self.augmentation.zoom_range = range;
        self
    }

    /// `horizontal_flip=True`.
    pub fn horizontal_flip(mut self, flip: bool) -> Self {
        self.augmentation.horizontal_flip = flip;
        self
    }

    /// `fill_mode='nearest'` (also 'constant' and 'reflect').
    pub fn fill_mode(mut self, mode: &str) -> Result<Self> {
        self.augmentation.fill_mode = mode.parse()?;
        Ok(self)
    }

    /// `count` augmented versions of one image file (values 0..1 for
    /// `ImageGrid`), the slide's picture of what augmentation does.
    pub fn augmented_versions(&self, path: impl AsRef<Path>, target_size: (u32, u32), count: usize, seed: u64) -> Result<Tensor> {
        let path = path.as_ref();
        let image = super::image_io::load_image(path, target_size)?;
        Ok(self.augmentation.apply(&vec![image; count], seed, &Preprocessing::Rescale(1.0 / 255.0)))
    }

    /// `flow_from_directory(directory, target_size=(h, w), batch_size=..., class_mode=...)`.
    ///
    /// Shuffles by default, like Keras, with seed 0; change that with
    /// [`DirectoryIterator::shuffle`] and [`DirectoryIterator::seed`].
    /// Prints "Found N images belonging to C classes." as Keras does.
    pub fn flow_from_directory(
        &self,
        directory: impl AsRef<Path>,
        target_size: (u32, u32),
        batch_size: usize,
        class_mode: ClassMode,
    ) -> Result<DirectoryIterator> {
        DirectoryIterator::new(
            self.clone(),
            directory.as_ref(),
            target_size,
            batch_size,
            class_mode,
        )
    }
}

/// The iterator `flow_from_directory` returns.
#[derive(Debug)]
pub struct DirectoryIterator {
    generator: ImageDataGenerator,
    directory: PathBuf,
    target_size: (u32, u32),
    batch_size: usize,
    class_mode: ClassMode,
    class_indices: Vec<(String, usize)>,
    /// Relative to `directory`, as Keras's `filenames` (e.g. `cats/cat.0.jpg`).
    filenames: Vec<PathBuf>,
    /// `directory` joined with each filename, ready to open.
    filepaths: Vec<PathBuf>,
    classes: Vec<i64>,
    skipped: Vec<PathBuf>,
    shuffle: bool,
    seed: u64,
    /// Epoch being served, from 0; its order is `order`.
    epoch: u64,
    order: Vec<usize>,
    /// How many samples of this epoch have been served.
    position: usize,
    /// Images decoded in earlier batches, served again without decoding.
    decoded: DecodedImages,
}

impl DirectoryIterator {
    fn new(
        generator: ImageDataGenerator,
        directory: &Path,
        target_size: (u32, u32),
        batch_size: usize,
        class_mode: ClassMode,
    ) -> Result<Self> {
        ensure!(batch_size > 0, "batch_size must be at least 1");
        ensure!(
            target_size.0 > 0 && target_size.1 > 0,
            "target_size must be positive, got {target_size:?}"
        );
        let class_names = list_classes(directory)?;
        if class_mode == ClassMode::Binary && class_names.len() != 2 {
            bail!(
                "class_mode Binary needs exactly 2 class folders in {}, found {}: {:?} \
                 (use ClassMode::Categorical or ClassMode::Sparse for other counts)",
                directory.display(),
                class_names.len(),
                class_names
            );
        }

        let mut filenames = Vec::new();
        let mut classes = Vec::new();
        let mut skipped = Vec::new();
        for (index, name) in class_names.iter().enumerate() {
            let class_dir = directory.join(name);
            let mut files = Vec::new();
            walk_files(&class_dir, &mut files)?;
            let before = filenames.len();
            for file in files {
                if has_image_extension(&file) {
                    let relative = file.strip_prefix(directory).unwrap_or(&file).to_path_buf();
                    filenames.push(relative);
                    classes.push(index as i64);
                } else {
                    eprintln!(
                        "warning: skipping {}: not an image file (extension not one of {})",
                        file.display(),
                        IMAGE_EXTENSIONS.join(", ")
                    );
                    skipped.push(file);
                }
            }
            if filenames.len() == before {
                bail!(
                    "class folder {} holds no images (expected files ending in {})",
                    class_dir.display(),
                    IMAGE_EXTENSIONS.join(", ")
                );
            }
        }
        println!("{}", found_message(filenames.len(), class_names.len()));

        let filepaths: Vec<PathBuf> = filenames.iter().map(|f| directory.join(f)).collect();
        let decoded = DecodedImages::new(filepaths.len(), DEFAULT_BUDGET_BYTES);
        let class_indices = class_names
            .into_iter()
            .enumerate()
            .map(|(i, n)| (n, i))
            .collect();
        let mut it = DirectoryIterator {
            generator,
            directory: directory.to_path_buf(),
            target_size,
            batch_size,
            class_mode,
            class_indices,
            filenames,
            filepaths,
            classes,
            skipped,
            shuffle: true,
            seed: 0,
            epoch: 0,
            order: Vec::new(),
            position: 0,
            decoded,
        };
        it.start_epoch(0);
        Ok(it)
    }

    /// Fails unless `other` has the same class folders, so that each label
    /// means the same class in both (Keras's `class_indices`): `train/dogs`
    /// with `validation/Dogs` would otherwise swap the labels silently
    /// (folders sort with capitals first).
    pub fn check_same_classes(&self, other: &DirectoryIterator) -> Result<()> {
        check_classes(&self.class_indices, &format!("{} has", self.directory.display()), &other.class_indices, &other.directory)
    }

    /// Keras's line "Found 2000 images belonging to 2 classes.", printed when
    /// the iterator was made.
    pub fn found(&self) -> String {
        found_message(self.samples(), self.class_indices.len())
    }

    /// Whether each epoch visits the samples in a fresh random order
    /// (default true, as in Keras). Restarts at epoch 0.
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self.reset();
        self
    }

    /// Seed of the shuffling (default 0). Restarts at epoch 0.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self.reset();
        self
    }

    /// Memory for the decoded images this iterator keeps between epochs
    /// (512 MiB by default; 0 decodes every image every time, as Keras does).
    /// The batches are the same either way; see [`super::decoded`].
    pub fn decoded_budget(mut self, bytes: usize) -> Self {
        self.decoded.clear(bytes);
        self
    }

    /// `Some(seed)` when shuffling, `None` when batches come in file order.
    pub fn shuffle_seed(&self) -> Option<u64> {
        self.shuffle.then_some(self.seed)
    }

    /// Back to the start of epoch 0 (Keras's `reset()`).
    pub fn reset(&mut self) {
        self.start_epoch(0);
    }

    /// Number of images found (Keras's `samples`).
    pub fn samples(&self) -> usize {
        self.filenames.len()
    }

    /// Class names and their indices, in index order (Keras's `class_indices`,
    /// `{'cats': 0, 'dogs': 1}`).
    pub fn class_indices(&self) -> &[(String, usize)] {
        &self.class_indices
    }

    /// The same as a map, handy to look a class up by name.
    pub fn class_indices_map(&self) -> BTreeMap<String, usize> {
        self.class_indices.iter().cloned().collect()
    }

    /// Files relative to the directory, grouped by class, sorted by name
    /// within each class (Keras's `filenames`). Not shuffled.
    pub fn filenames(&self) -> &[PathBuf] {
        &self.filenames
    }

    /// Full paths of the same files (Keras's `filepaths`).
    pub fn filepaths(&self) -> &[PathBuf] {
        &self.filepaths
    }

    /// Class index of each file, in `filenames` order (Keras's `classes`).
    pub fn classes(&self) -> &[i64] {
        &self.classes
    }

    /// Files left out because their extension is not an image one.
    pub fn skipped(&self) -> &[PathBuf] {
        &self.skipped
    }

    pub fn directory(&self) -> &Path {
        &self.directory
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// (height, width), Keras's order.
    pub fn target_size(&self) -> (u32, u32) {
        self.target_size
    }

    pub fn class_mode(&self) -> ClassMode {
        self.class_mode
    }

    pub fn generator(&self) -> &ImageDataGenerator {
        &self.generator
    }

    /// The epoch the next batch belongs to (0 first).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Batches per epoch, the last one possibly smaller (Keras's `len()`).
    pub fn len(&self) -> usize {
        self.samples().div_ceil(self.batch_size)
    }

    pub fn is_empty(&self) -> bool {
        self.samples() == 0
    }

    /// The next batch `(images, labels)`, endlessly, as iterating a Keras
    /// generator: after the last batch of an epoch comes the first of the next,
    /// in a new order when shuffling. Images are f32 (N, 3, H, W) on the CPU,
    /// preprocessed; labels as [`ClassMode`] says.
    pub fn next_batch(&mut self) -> Result<(Tensor, Tensor)> {
        let indices = self.next_indices();
        self.load_batch(&indices)
    }

    /// Which images (indices into `filenames`) the next batch holds, moving on
    /// as `next_batch` does but without loading them.
    pub fn next_indices(&mut self) -> Vec<usize> {
        if self.position >= self.order.len() {
            self.start_epoch(self.epoch + 1);
        }
        let end = (self.position + self.batch_size).min(self.order.len());
        let indices = self.order[self.position..end].to_vec();
        self.position = end;
        indices
    }

    /// One full epoch, `len()` batches, every image exactly once (in a new
    /// shuffled order when shuffling). If an epoch was under way (after
    /// `next_batch` calls), its rest is dropped and a new epoch starts.
    pub fn epoch_batches(&mut self) -> impl Iterator<Item = Result<(Tensor, Tensor)>> + '_ {
        if self.position > 0 {
            self.start_epoch(self.epoch + 1);
        }
        (0..self.len()).map(move |_| self.next_batch())
    }

    /// Loads the images with these indices (into `filenames`), decoding them
    /// in parallel unless kept from an earlier epoch, with their labels.
    pub fn load_batch(&self, indices: &[usize]) -> Result<(Tensor, Tensor)> {
        let images = self.decoded.load(indices, &self.filepaths, self.target_size)?;
        let augmentation = &self.generator.augmentation;
        let x = if augmentation.is_identity() {
            // Preprocessing folded into the u8 → f32 copy.
            images_to_tensor(&images, &self.generator.preprocessing)
        } else {
            augmentation.apply(&images, self.augment_seed(indices), &self.generator.preprocessing)
        };
        let classes: Vec<i64> = indices.iter().map(|&i| self.classes[i]).collect();
        let y = labels_tensor(&classes, self.class_mode, self.class_indices.len());
        Ok((x, y))
    }

    /// The seed of a batch's random transforms: from the iterator's seed, the
    /// epoch and the images, so a batch is the same whenever it is replayed
    /// (after a resume, say).
    fn augment_seed(&self, indices: &[usize]) -> u64 {
        let mut h = Sha256::new();
        h.update(self.seed.to_le_bytes());
        h.update(self.epoch.to_le_bytes());
        for &i in indices {
            h.update((i as u64).to_le_bytes());
        }
        u64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
    }

    /// Jumps to the start of `epoch` (its order is the same as if the epochs
    /// before had been served): how a resumed training continues.
    pub fn set_epoch(&mut self, epoch: u64) {
        self.start_epoch(epoch);
    }

    /// Jumps to the `batch`-th batch counted from the start of epoch 0, as if
    /// the ones before had been served (`fit_generator` resumes with it: with
    /// `steps_per_epoch` batches per epoch, epoch e starts at batch e × steps).
    pub fn seek_batch(&mut self, batch: u64) {
        let per_epoch = self.len().max(1) as u64;
        self.start_epoch(batch / per_epoch);
        self.position = ((batch % per_epoch) as usize * self.batch_size).min(self.order.len());
    }

    /// All labels in `filenames` order, shaped as batches' labels are.
    pub fn labels(&self) -> Tensor {
        labels_tensor(&self.classes, self.class_mode, self.class_indices.len())
    }

    /// A stable hex key of the data: sha256 over the class names, and, in
    /// `filenames` order, each relative filename, its label and the sha256 of
    /// its bytes. Same files, same key, whatever the directory is called or
    /// where it lives. It does not cover target size or preprocessing: a
    /// cache of features must add those to its own key.
    pub fn content_key(&self) -> Result<String> {
        // Files are hashed in parallel; the combination is sequential, so the
        // key does not depend on scheduling.
        let digests: Vec<[u8; 32]> = self
            .filepaths
            .par_iter()
            .map(|p| {
                let bytes = std::fs::read(p)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
                Ok(Sha256::digest(&bytes).into())
            })
            .collect::<Result<_>>()?;
        let mut h = Sha256::new();
        h.update(b"aula-data-v1\0");
        for (name, index) in &self.class_indices {
            h.update(name.as_bytes());
            h.update(b"\0");
            h.update((*index as u64).to_le_bytes());
        }
        for ((name, class), digest) in self.filenames.iter().zip(&self.classes).zip(&digests) {
            // '/' separators on every platform, so the key travels.
            let parts: Vec<String> = name
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            h.update(parts.join("/").as_bytes());
            h.update(b"\0");
            h.update(class.to_le_bytes());
            h.update(digest);
        }
        Ok(hex::encode(h.finalize()))
    }

    /// Sets up epoch `epoch`: its order is a permutation drawn from a ChaCha
    /// stream chosen by (seed, epoch), so any epoch can be reproduced alone.
    fn start_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.position = 0;
        self.order = (0..self.filenames.len()).collect();
        if self.shuffle {
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
            rng.set_stream(epoch);
            self.order.shuffle(&mut rng);
        }
    }
}

/// The error when `b`'s class folders are not `a`'s (see
/// [`DirectoryIterator::check_same_classes`]); `a_is` says what `a` is, with its verb
/// ("… train has", "the model was trained on").
pub(crate) fn check_classes(a: &[(String, usize)], a_is: &str, b: &[(String, usize)], b_dir: &Path) -> Result<()> {
    if a != b {
        let show = |c: &[(String, usize)]| c.iter().map(|(n, i)| format!("{n}={i}")).collect::<Vec<_>>().join(", ");
        bail!(
            "the class folders do not match: {a_is} {} but {} has {}. Each label must mean the same \
             class in every split: rename the folders so that they have the same names",
            show(a),
            b_dir.display(),
            show(b)
        );
    }
    Ok(())
}

fn found_message(images: usize, classes: usize) -> String {
    format!("Found {images} images belonging to {classes} classes.")
}

/// Labels for these class indices, shaped for the class mode.
fn labels_tensor(classes: &[i64], mode: ClassMode, num_classes: usize) -> Tensor {
    let t = Tensor::from_slice(classes);
    match mode {
        ClassMode::Binary | ClassMode::Sparse => t.to_kind(Kind::Float),
        ClassMode::Categorical => t.one_hot(num_classes as i64).to_kind(Kind::Float),
    }
}

/// Class folders of `directory`, sorted by name. Hidden folders (such as
/// Jupyter's `.ipynb_checkpoints`) are not classes.
fn list_classes(directory: &Path) -> Result<Vec<String>> {
    if !directory.is_dir() {
        let what = if directory.exists() {
            "is not a directory"
        } else {
            "does not exist"
        };
        // The split command creates train/, validation/ and test/ inside `--to`.
        let is_split = directory
            .file_name()
            .is_some_and(|n| ["train", "validation", "test"].iter().any(|s| n == *s));
        let to = match directory.parent() {
            Some(parent) if is_split => parent,
            _ => directory,
        };
        bail!(
            "data directory {} {what}. Build Chollet's split (train/validation/test, \
             cats and dogs) from Kaggle's dogs-vs-cats train/ folder with \
             `aula split --from <kaggle train dir> --to {}`, or set AULA_DATA to where it is",
            directory.display(),
            to.display()
        );
    }
    let mut names = Vec::new();
    let entries = std::fs::read_dir(directory)
        .with_context(|| format!("cannot list {}", directory.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", directory.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // `Path::is_dir` follows symbolic links, as Keras's `os.path.isdir` does.
        if !name.starts_with('.') && entry.path().is_dir() {
            names.push(name);
        }
    }
    if names.is_empty() {
        bail!(
            "{} has no class subfolders: flow_from_directory expects one folder per class, \
             e.g. {}/cats and {}/dogs",
            directory.display(),
            directory.display(),
            directory.display()
        );
    }
    names.sort();
    Ok(names)
}

/// Every file under `dir`, recursively, in Keras's order: the folder's own
/// files sorted by name, then each subfolder's, subfolders sorted by name.
/// Hidden files and folders (`.DS_Store`, `.ipynb_checkpoints`) are left out.
fn walk_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    entries.retain(|p| {
        !p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
    });
    entries.sort();
    let (subdirs, files): (Vec<PathBuf>, Vec<PathBuf>) =
        entries.into_iter().partition(|p| p.is_dir());
    out.extend(files);
    for sub in subdirs {
        walk_files(&sub, out)?;
    }
    Ok(())
}
