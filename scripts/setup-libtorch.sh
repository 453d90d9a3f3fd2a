#!/usr/bin/env bash
# Assemble a CPU libtorch 2.11.0 (the version tch 0.24.0 binds) from PyPI wheels.
# PyPI has no CPU-only torch, so we take the pieces tch needs out of the CUDA wheel:
# headers, libtorch/libtorch_cpu/libc10, OpenMP, and the two CUDA runtime libraries
# libtorch_cpu.so links against even when no GPU is used. Idempotent: a finished
# folder carries a stamp and is left alone.
set -euo pipefail

cache=${AULA_CACHE:-$HOME/.cache/aula}
dest=$cache/libtorch-2.11.0
wheels=$cache/wheels
link=${1:-.libtorch}

if [ ! -f "$dest/.complete" ]; then
  mkdir -p "$wheels"
  echo "libtorch: fetching torch 2.11.0 pieces from PyPI into $wheels (≈ 550 MB, once)"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$wheels" \
    torch==2.11.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
  tmp=$(mktemp -d "$cache/libtorch.XXXX")
  trap 'rm -rf "$tmp"' EXIT
  unzip -q "$wheels"/torch-2.11.0-*.whl 'torch/include/*' 'torch/lib/libtorch_cpu.so' \
    'torch/lib/libtorch.so' 'torch/lib/libc10.so' 'torch/lib/libgomp.so.1' -d "$tmp"
  unzip -q -j "$wheels"/nvidia_cuda_runtime-13.0.96-*.whl 'nvidia/cu13/lib/libcudart.so.13' -d "$tmp/torch/lib"
  unzip -q -j "$wheels"/nvidia_cuda_cupti-13.0.85-*.whl 'nvidia/cu13/lib/libcupti.so.13' -d "$tmp/torch/lib"
  touch "$tmp/torch/.complete"
  rm -rf "$dest"
  mv "$tmp/torch" "$dest"
  echo "libtorch: ready in $dest"
fi
# The repository sees libtorch at a fixed relative path (.cargo/config.toml), so
# cargo never rebuilds torch-sys because the location changed.
ln -sfn "$dest" "$link"
