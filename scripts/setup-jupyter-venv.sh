#!/usr/bin/env bash
# Create the Python virtualenv with the Jupyter tools aula uses around its Rust kernel:
# JupyterLab (`make lab`), nbconvert (the runner's HTML rendering and the standard-client
# test), nbclient/nbformat, and ipykernel (a fast, real kernel for aula-runner's protocol
# tests) and Selenium (the JupyterLab test in Chromium). ≈ 100 MB, from PyPI, once. Idempotent: a finished venv carries a stamp and is
# left alone.
#
#   scripts/setup-jupyter-venv.sh                  # prints the venv's prefix at the end
#   scripts/setup-jupyter-venv.sh --print-prefix   # only prints where it is (or will be)
#   AULA_JUPYTER_PREFIX="$(scripts/setup-jupyter-venv.sh --print-prefix)" aula-runner ...
set -euo pipefail

cache=${AULA_CACHE:-$HOME/.cache/aula}
venv=$cache/venv-jupyter
stamp=$venv/.complete
python=${PYTHON:-python3}
requirements=(
  jupyterlab==4.6.6
  nbconvert==7.17.2
  nbclient==0.11.0
  nbformat==5.11.1
  ipykernel==7.4.0
  selenium==4.51.0
)

case "${1:-}" in
  --print-prefix) echo "$venv"; exit 0 ;;
  "") ;;
  *) echo "usage: $0 [--print-prefix]" >&2; exit 2 ;;
esac

# A stamp written for another list of pins means the venv is stale: redo it.
want="${requirements[*]}"
if [ -f "$stamp" ] && [ "$(sed -n 2p "$stamp")" != "$want" ]; then
  echo "jupyter venv: pins changed, updating $venv"
  rm -f "$stamp"
fi

if [ ! -f "$stamp" ]; then
  mkdir -p "$cache"
  if [ ! -x "$venv/bin/python" ]; then
    echo "jupyter venv: creating $venv"
    "$python" -m venv "$venv"
  fi
  echo "jupyter venv: installing ${requirements[*]} (≈ 100 MB, once)"
  "$venv/bin/python" -m pip install --disable-pip-version-check --quiet "${requirements[@]}"
  # Check that it works before stamping it: the tools import and ipykernel runs a cell.
  "$venv/bin/python" - <<'EOF'
import nbclient, nbconvert, nbformat, ipykernel, jupyterlab, selenium
nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
nbclient.NotebookClient(nb, kernel_name="python3", timeout=60).execute()
out = nb.cells[0].outputs[0]["text"]
assert out.strip() == "42", out
print(f"jupyter venv: jupyterlab {jupyterlab.__version__}, nbconvert {nbconvert.__version__}, "
      f"nbclient {nbclient.__version__}, nbformat {nbformat.__version__}, ipykernel {ipykernel.__version__}")
EOF
  test -x "$venv/bin/jupyter-nbconvert"
  "$venv/bin/python" -m pip freeze --disable-pip-version-check > "$venv/requirements.lock"
  printf '%s\n%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$want" > "$stamp"
  echo "jupyter venv: ready in $venv"
fi
echo "$venv"
