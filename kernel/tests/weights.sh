#!/usr/bin/env bash
# make run's ImageNet weights, converted by the kernel's aula (part of `make test`; needs
# `make kernel` and `make weight-sources`). One cold kernel of the installed "Rust · aula"
# kernelspec runs with an empty AULA_CACHE:
#  1. the cell kernel/install.sh runs (kernel/build-template.py's CONVERT) fails while the
#     package files are missing, with a message naming the file and `make weights`, and
#     without the line that says it succeeded;
#  2. with the real package files in place it converts all three models, and each file has the
#     SHA-256 of assets/weights.json (the bytes `aula weights` writes);
#  3. run again, it converts nothing (the files are there and verified).
#
#   kernel/tests/weights.sh
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cache=${AULA_CACHE:-$HOME/.cache/aula}
venv=$(bash "$repo/scripts/setup-jupyter-venv.sh" | tail -n 1)
spec=${JUPYTER_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/jupyter}/kernels/aula/kernel.json
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$venv/bin/python" - "$repo" "$cache" "$spec" "$tmp" <<'EOF'
import hashlib, importlib.util, json, os, sys
repo, cache, spec, tmp = sys.argv[1:]
sys.path.insert(0, os.path.join(repo, "kernel"))
from jupyter_run import Kernel

loader = importlib.util.spec_from_file_location("build_template", os.path.join(repo, "kernel", "build-template.py"))
build_template = importlib.util.module_from_spec(loader)
loader.loader.exec_module(build_template)
convert, ok = build_template.CONVERT

manifest = json.load(open(os.path.join(repo, "assets", "weights.json")))
home = json.load(open(spec))["metadata"]["aula"]["kernel_home"]
empty = os.path.join(tmp, "cache")
os.makedirs(os.path.join(empty, "sources"))

env = dict(os.environ, AULA_CACHE=empty)
k = Kernel(argv=[os.path.join(repo, "kernel", "launch.sh"), "--cold", home, "{connection_file}"])
k.start(timeout=900, env=env)
try:
    cell = k.run(convert, timeout=600)
    first = sorted(manifest)[0]  # the manifest's first model (a BTreeMap in aula)
    source = os.path.join(empty, "sources", os.path.basename(manifest[first]["source_file"]))
    assert ok not in cell.text and source in cell.text and "make weights" in cell.text, cell.text
    print(f"1. no package files: {cell.text.strip().splitlines()[0][:160]}")

    for e in manifest.values():
        name = os.path.basename(e["source_file"])
        os.symlink(os.path.join(cache, "sources", name), os.path.join(empty, "sources", name))
    cell = k.run(convert, timeout=600)
    assert cell.status == "ok" and ok in cell.text, cell.text + cell.error
    for model, e in manifest.items():
        path = os.path.join(empty, "weights", e["file"])
        assert f"converted: {path}" in cell.text, cell.text
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
        assert digest == e["sha256"], f"{model}: {path} has sha256 {digest}, the manifest {e['sha256']}"
    print(f"2. converted in {cell.seconds:.1f} s, the manifest's SHA-256s: {', '.join(manifest)}")

    cell = k.run(convert, timeout=600)
    assert ok in cell.text and "converted:" not in cell.text, cell.text + cell.error
    print(f"3. again: nothing converted ({cell.seconds:.1f} s)")
finally:
    k.shutdown()
EOF
echo "weights: ok"
