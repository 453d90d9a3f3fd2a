#!/usr/bin/env bash
# Create the Python virtualenv used only by scripts/bench.py: a full torch 2.11.0
# (the version tch 0.24.0 binds, with its CUDA dependencies, since PyPI has no
# CPU-only build), pillow and numpy. It is ≈ 3 GB and is never needed to build,
# test or use aula. Idempotent: a finished venv carries a stamp and is left alone.
#
#   scripts/setup-bench-venv.sh            # prints the venv's python at the end
#   "$(scripts/setup-bench-venv.sh --print-python)" scripts/bench.py ...
set -euo pipefail

cache=${AULA_CACHE:-$HOME/.cache/aula}
venv=$cache/venv-bench
stamp=$venv/.complete
python=${PYTHON:-python3}
requirements=(torch==2.11.0 pillow numpy)

if [ "${1:-}" = "--print-python" ]; then
  echo "$venv/bin/python"
  exit 0
fi

if [ ! -f "$stamp" ]; then
  mkdir -p "$cache"
  if [ ! -x "$venv/bin/python" ]; then
    echo "bench venv: creating $venv"
    "$python" -m venv "$venv"
  fi
  # Reuse the torch wheel scripts/setup-libtorch.sh may already have downloaded.
  find_links=()
  if [ -d "$cache/wheels" ]; then find_links=(--find-links "$cache/wheels"); fi
  echo "bench venv: installing ${requirements[*]} (≈ 3 GB with the CUDA wheels, once)"
  "$venv/bin/python" -m pip install --disable-pip-version-check --quiet \
    "${find_links[@]}" "${requirements[@]}"
  # Check that it works before stamping it.
  "$venv/bin/python" - <<'EOF'
import numpy, PIL, torch
torch.set_num_threads(2)
x = torch.randn(64, 64)
assert torch.allclose(x @ torch.eye(64), x)
assert torch.__version__.split("+")[0] == "2.11.0", torch.__version__
print(f"bench venv: torch {torch.__version__}, numpy {numpy.__version__}, pillow {PIL.__version__}, "
      f"{torch.get_num_threads()} threads")
EOF
  "$venv/bin/python" -m pip freeze --disable-pip-version-check > "$venv/requirements.lock"
  date -u +%Y-%m-%dT%H:%M:%SZ > "$stamp"
  echo "bench venv: ready in $venv"
fi
echo "$venv/bin/python"
