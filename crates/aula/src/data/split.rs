//! Where the data lives, and how to build it.
//!
//! The lesson uses Chollet's small subset of Kaggle's dogs-vs-cats: 1,000
//! cats and 1,000 dogs for training, 500 + 500 for validation and 500 + 500
//! for test, taken by number from Kaggle's `train/` folder.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

/// Chollet's split: (folder, first image number, one past the last).
pub const SPLITS: [(&str, usize, usize); 3] = [
    ("train", 0, 1000),
    ("validation", 1000, 1500),
    ("test", 1500, 2000),
];

/// Class folders and the Kaggle file prefix of each class.
pub const CLASSES: [(&str, &str); 2] = [("cats", "cat"), ("dogs", "dog")];

/// Builds Chollet's split under `dest` by copying from Kaggle's `train/` folder
/// (`cat.0.jpg` … `dog.12499.jpg`): `cat.0`–`cat.999` go to `train/cats`,
/// `cat.1000`–`cat.1499` to `validation/cats`, `cat.1500`–`cat.1999` to
/// `test/cats`, and the same for dogs. Every source file is checked before
/// anything is copied. Running it again replaces the copies.
///
/// Each copy is written to a temporary file and renamed over its destination,
/// so a destination that is a hard link or a symbolic link to a source image
/// is replaced, never written through (writing through it would truncate the
/// user's Kaggle image). A class folder that already holds files the split
/// does not make (e.g. `cat.5000.jpg`) is refused before anything is written:
/// it would silently change the lesson's numbers.
pub fn make_split(kaggle_train: &Path, dest: &Path) -> Result<()> {
    if !kaggle_train.is_dir() {
        bail!(
            "{} is not a directory: expected Kaggle's dogs-vs-cats train/ folder \
             (unzip train.zip from https://www.kaggle.com/c/dogs-vs-cats/data)",
            kaggle_train.display()
        );
    }

    // Plan every copy first, so that a wrong folder fails before writing anything.
    let mut copies = Vec::new();
    for (split, first, end) in SPLITS {
        for (class, prefix) in CLASSES {
            for i in first..end {
                let name = format!("{prefix}.{i}.jpg");
                copies.push((
                    kaggle_train.join(&name),
                    dest.join(split).join(class).join(name),
                ));
            }
        }
    }
    let missing: Vec<&PathBuf> = copies
        .iter()
        .map(|(src, _)| src)
        .filter(|s| !s.is_file())
        .collect();
    if !missing.is_empty() {
        let shown: Vec<String> = missing
            .iter()
            .take(5)
            .map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        bail!(
            "{} of the {} images the split needs are missing from {} (e.g. {}{}): \
             expected Kaggle's dogs-vs-cats train/ folder, which holds cat.0.jpg … cat.12499.jpg \
             and dog.0.jpg … dog.12499.jpg",
            missing.len(),
            copies.len(),
            kaggle_train.display(),
            shown.join(", "),
            if missing.len() > shown.len() {
                ", …"
            } else {
                ""
            }
        );
    }

    refuse_extra_files(dest, &copies)?;
    for (split, _, _) in SPLITS {
        for (class, _) in CLASSES {
            let dir = dest.join(split).join(class);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
    }
    copies
        .par_iter()
        .try_for_each(|(src, dst)| copy_replacing(src, dst))?;

    for (split, first, end) in SPLITS {
        let n = end - first;
        println!(
            "{split}: {n} cats, {n} dogs in {}",
            dest.join(split).display()
        );
    }
    Ok(())
}

/// Copies `src` to a temporary file beside `dst`, then renames it over `dst`:
/// whatever `dst` was (a file, a hard link or a symlink to `src`) is replaced
/// as a directory entry, and `src` is only ever read.
fn copy_replacing(src: &Path, dst: &Path) -> Result<()> {
    aula_paths::write_atomic_with(dst, |tmp| std::fs::copy(src, tmp).map(drop))
        .with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))
}

/// Fails, naming the folder and the files, when a class folder of `dest`
/// already holds files that the split would not put there.
fn refuse_extra_files(dest: &Path, copies: &[(PathBuf, PathBuf)]) -> Result<()> {
    let planned: std::collections::HashSet<&Path> =
        copies.iter().map(|(_, dst)| dst.as_path()).collect();
    for (split, _, _) in SPLITS {
        for (class, _) in CLASSES {
            let dir = dest.join(split).join(class);
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            let mut extra: Vec<String> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| !planned.contains(p.as_path()))
                .map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned())
                .collect();
            if !extra.is_empty() {
                extra.sort();
                let more = if extra.len() > 5 { ", …" } else { "" };
                bail!(
                    "{} already holds {} file(s) that the split does not make ({}{more}): they would \
                     be counted as training data. Move them away, or pass an empty --to folder",
                    dir.display(),
                    extra.len(),
                    extra[..extra.len().min(5)].join(", ")
                );
            }
        }
    }
    Ok(())
}

/// Where the data is: `$AULA_DATA` when set, otherwise the first
/// `<ancestor>/shared/data/cats_and_dogs_small` that exists, looking upwards
/// from the current directory and then from this crate's source folder (so a
/// notebook run anywhere inside the checkout finds `../shared/data` next to
/// the workspace). `None` when neither applies.
pub fn default_data_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("AULA_DATA").filter(|v| !v.is_empty()) {
        // Returned even if it does not exist: the error then names the path the
        // user asked for, rather than silently falling back to another one.
        return Some(PathBuf::from(dir));
    }
    let starts = std::env::current_dir()
        .ok()
        .into_iter()
        .chain(std::iter::once(PathBuf::from(env!("CARGO_MANIFEST_DIR"))));
    for start in starts {
        for ancestor in start.ancestors() {
            let candidate = ancestor
                .join("shared")
                .join("data")
                .join("cats_and_dogs_small");
            if candidate.is_dir() {
                return Some(candidate);
            }
        }
    }
    None
}
