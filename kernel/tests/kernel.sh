#!/usr/bin/env bash
# Tests of the installed "Rust · aula" kernel, through the Jupyter protocol (needs `make kernel`).
#
#  1. 4 kernels started at once each run aula cells with their own values; each has its own
#     private directory, removed after shutdown; the template is untouched.
#  2. A kernel killed with SIGKILL (no shutdown at all) leaves no private directory behind.
#
#   kernel/tests/kernel.sh [PYTHON]     (PYTHON: one with jupyter_client)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
python=${1:-$(bash "$repo/scripts/setup-jupyter-venv.sh" | tail -n 1)/bin/python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "test 1: 4 kernels at once"
"$python" "$repo/scripts/bench-kernel.py" --runs 0 --concurrent 4 --no-copy-costs --out "$tmp/concurrent.json"

echo "test 2: a killed kernel leaves no private directory"
"$python" - "$repo" <<'EOF'
import os, signal, sys, time
sys.path.insert(0, os.path.join(sys.argv[1], "kernel"))
from jupyter_run import Kernel
k = Kernel(name="aula")
k.start(timeout=120)
d = k.run('std::env::var("EVCXR_TMPDIR").unwrap()').text.strip().strip('"')
assert os.path.isdir(d), d
os.killpg(os.getpgid(k.pid()), signal.SIGKILL)   # the kernel and everything it started
t = time.time()
while os.path.exists(d) and time.time() - t < 30:
    time.sleep(0.2)
k.kc.stop_channels()
assert not os.path.exists(d), f"{d} left behind"
print(f"killed kernel: {d} removed after {time.time() - t:.1f} s")
EOF
echo "kernel tests: ok"
