#!/usr/bin/env bash
# Give one kernel its private copy of the prebuilt evcxr build directory.
#
#   kernel/copy-template.sh TEMPLATE DEST        (DEST exists and is empty)
#
# Method (AULA_KERNEL_COPY, default "link"; see kernel/README.md for the measurements):
#   link  hard-link what rustc replaces instead of writing through: the compiled libraries
#         (*.rlib, *.rmeta and the linker's deps/*.so: a new file renamed over the old one)
#         and the incremental state (rustc deletes and recreates its files, since it
#         hard-links them between sessions itself); copy everything else: Cargo.toml,
#         Cargo.lock and src/lib.rs (evcxr rewrites them with fs::write, in place), cargo's
#         fingerprints and rustc's .d files (rewritten in place), build scripts and their
#         outputs.
#   copy  cp -a of everything (what ext4 gets from --reflink=auto too).
#   reflink  cp -a --reflink=always (btrfs, XFS: copy-on-write clones).
# Modification times are kept either way: cargo decides freshness from them.
set -euo pipefail

src=$1
dst=$2
method=${AULA_KERNEL_COPY:-link}

case "$method" in
  copy) exec cp -a "$src/." "$dst/" ;;
  reflink) exec cp -a --reflink=always "$src/." "$dst/" ;;
  link) ;;
  *) echo "copy-template.sh: unknown AULA_KERNEL_COPY=$method (link, copy, reflink)" >&2; exit 2 ;;
esac

cd "$src"
# Directories first (cp --parents would create them without their modes and times).
find . -mindepth 1 -type d -printf '%P\0' | (cd "$dst" && xargs -0 -r mkdir -p --)
# (Incremental sessions' .lock files are copied: rustc flocks them, and two kernels must not
# share one.)
linked=( \( -name '*.rlib' -o -name '*.rmeta' -o -path '*/deps/*.so' -o \( -path '*/incremental/*' ! -name '*.lock' \) \) )
find . -type f "${linked[@]}" -printf '%P\0' | xargs -0 -r cp -l --parents -t "$dst" --
find . \( -type l -o \( -type f ! "${linked[@]}" \) \) -printf '%P\0' | xargs -0 -r cp -a --parents -t "$dst" --
