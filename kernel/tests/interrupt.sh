#!/usr/bin/env bash
# Interrupting a cell of the "Rust · aula" kernel through the real Jupyter protocol (needs
# `make kernel` and the lesson's images; part of `make test`). Two cold kernels in all.
#
#  1. (jupyter_client) A variable is defined; an uncached feature extraction over real images is
#     interrupted once it runs: the cell ends at the next batch with the Spanish message (though
#     a batch outlasts the grace period set here: the proxy sees aula's loop running and waits),
#     the variable is still there and later cells run. A cell queued behind an interrupted one
#     is aborted (as ipykernel does). An interrupt while nothing runs changes nothing; one that
#     comes while a cell ends by itself does not stop the next training. A `loop {}` cell: the
#     fallback (evcxr's kill) ends it after the grace period and the kernel answers afterwards
#     (its variables are lost: the documented fallback).
#  2. (aula-runner) A cell past --timeout is interrupted the same way: the next cell still sees
#     the variables defined before it.
#
#   kernel/tests/interrupt.sh [OUT_DIR]
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${1:-$(mktemp -d)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
venv=$(bash "$repo/scripts/setup-jupyter-venv.sh" | tail -n 1)
runner=${CARGO_TARGET_DIR:-$repo/target}/debug/aula-runner
export AULA_KERNEL_POOL=0          # cold kernels: nothing left behind
export AULA_NO_FEATURE_CACHE=1     # the extraction really computes
# Shorter than a batch of the extraction here (≈ 3 s; 0.4 s on a fast machine): its stop then
# comes from the loop while the proxy waits (<flag>.loop exists), not from the kill fallback.
export AULA_INTERRUPT_GRACE=1
# The lesson's images: $AULA_DATA, or shared/data/cats_and_dogs_small above the checkout (as aula looks).
data=${AULA_DATA:-}
for up in "$repo" "$repo/.." "$repo/../.."; do
  if [ -z "$data" ] && [ -d "$up/shared/data/cats_and_dogs_small" ]; then
    data=$(cd "$up/shared/data/cats_and_dogs_small" && pwd)
  fi
done
test -d "$data/validation/cats" || { echo "no images in $data (set AULA_DATA)"; exit 1; }
test -x "$runner" || { echo "no $runner (cargo build -p aula-runner)"; exit 1; }

echo "test 1: interrupts through jupyter_client"
"$venv/bin/python" - "$repo" "$data" <<'EOF'
import os, sys, time
repo, data = sys.argv[1:]
sys.path.insert(0, os.path.join(repo, "kernel"))
from jupyter_run import Kernel

grace = float(os.environ["AULA_INTERRUPT_GRACE"])
extract = ('let generator = ImageDataGenerator::rescale(1.0 / 255.0)'
           f'.flow_from_directory("{data}/validation", (150, 150), 20, ClassMode::Binary)?;\n'
           'let features = aula::features::extract_features(&conv_base, &generator)?;')

k = Kernel(name="aula")
k.start(timeout=900)
kc = k.kc
try:

    def run(code, want="ok"):
        cell = k.run(code, timeout=300)
        assert cell.status == want, f"{code!r}: {cell.status}\n{cell.text}\n{cell.error}"
        return cell

    def interrupt_after(ready, code, queued=None):
        """Sends `code` (and `queued` behind it), interrupts once `ready()`; returns the seconds
        from the interrupt to the reply, the reply and the error text, and the queued cell's reply."""
        msg_id = kc.execute(code)
        queued_id = kc.execute(queued) if queued else None
        t = time.time()
        while not ready(msg_id):
            assert time.time() - t < 120, "never ready"
            time.sleep(0.05)
        kc.session.send(kc.control_channel.socket, kc.session.msg("interrupt_request", {}))
        t0 = time.time()
        replies = {}  # (the queued cell's comes first: aborted at once)
        while msg_id not in replies or (queued_id and queued_id not in replies):
            r = kc.get_shell_msg(timeout=120)
            replies[r["parent_header"]["msg_id"]] = (r, time.time() - t0)
        reply, took = replies[msg_id]
        queued_reply = replies[queued_id][0] if queued else None
        errors = []
        # The cell's outputs up to its idle status, as JupyterLab shows them (the proxy holds an
        # interrupted cell's idle a little: evcxr may publish it before the last stderr lines).
        while True:
            m = kc.get_iopub_msg(timeout=30)
            if m["parent_header"].get("msg_id") == msg_id:
                if m["msg_type"] == "error":
                    errors.append(m["content"]["evalue"] + "\n".join(m["content"]["traceback"]))
                elif m["msg_type"] == "stream":
                    errors.append(m["content"]["text"])
                elif m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                    break
        return took, reply["content"], "\n".join(errors), queued_reply

    run("let keep = 41 + 1;")
    run('let conv_base = VGG16("imagenet", false, (150, 150, 3))?;')
    flag = run('std::env::var("AULA_INTERRUPT_FILE").unwrap()').text.strip().strip('"')
    assert flag.endswith("/aula-interrupt"), flag

    def after(seconds):
        t = time.time()
        return lambda _: time.time() - t > seconds

    def printed(text):  # the cell has written `text` (what comes before it on iopub is dropped)
        def ready(msg_id):
            m = kc.get_iopub_msg(timeout=120)
            return m["parent_header"].get("msg_id") == msg_id and text in m["content"].get("text", "")
        return ready

    # An interrupt while nothing runs: nothing happens (evcxr alone would kill the variables).
    kc.session.send(kc.control_channel.socket, kc.session.msg("interrupt_request", {}))
    time.sleep(1)
    assert "42" in run("keep").text
    # One that comes while a cell runs that ends by itself: it does not stop the next training.
    took, reply, _, _ = interrupt_after(printed("ending"), 'println!("ending"); std::thread::sleep(std::time::Duration::from_millis(200));')
    assert reply["status"] == "ok" and not os.path.exists(flag), (reply, flag)
    fit = run('let mut m = Sequential::new("s"); m.add(Dense(1).activation("sigmoid").input_dim(4))?;\n'
              'm.compile(RMSprop::new(1e-3), "binary_crossentropy", &["acc"])?;\n'
              'm.fit(&Tensor::randn([100, 4], (Kind::Float, Device::Cpu)), &Tensor::zeros([100], (Kind::Float, Device::Cpu)), 3, 10, None)?.epochs()')
    assert "interrumpido" not in fit.text and fit.text.strip().endswith("3"), fit.text

    # The extraction (1,000 images, about a minute here) interrupted once its loop runs.
    took, reply, text, queued = interrupt_after(lambda _: os.path.exists(flag + ".loop"), extract,
                                                queued="let queued_ran = true;")
    print(f"  extraction interrupted: the cell ended {took:.2f} s after interrupt_request")
    # (evcxr prints an error a cell's `?` returns on stderr, and replies "ok".)
    assert "extracción de características interrumpida tras" in text, (reply, text)
    assert took < 30, f"{took:.1f} s"
    assert not os.path.exists(flag) and not os.path.exists(flag + ".loop")
    assert queued["content"]["status"] == "aborted", queued["content"]
    assert "42" in run("keep").text, "the variable is gone"
    run("queued_ran", want="error")   # the queued cell did not run
    assert "512" in run("conv_base.output_shape()").text   # the model too
    run("let later = keep * 2;")
    assert "84" in run("later").text

    # Arbitrary code does not look at the flag: evcxr's kill after the grace period.
    took, reply, text, _ = interrupt_after(after(3), "loop { std::hint::spin_loop(); }")
    print(f"  loop {{}} interrupted: the cell ended {took:.2f} s after interrupt_request (fallback kill)")
    assert reply["status"] == "error" and "Subprocess terminated" in text, (reply, text)
    assert "las variables se han perdido" in text, text   # the proxy says so, in Spanish
    assert grace <= took < grace + 10, f"{took:.1f} s"
    assert "2" in run("1 + 1").text, "the kernel does not answer after the fallback"
    run("keep", want="error")   # the documented price of the fallback
    print("  ok")
finally:
    k.shutdown()
EOF

echo "test 2: aula-runner's --timeout interrupts the same way"
# (2,000 training images, uncached: about a minute of extraction even with bf16 on AMX, well past --timeout.)
nb=$out/interrupt.ipynb
"$venv/bin/python" - "$nb" "$data" <<'EOF'
import json, sys
nb, data = sys.argv[1:]
cells = ["let keep = 7;",
         'let conv_base = VGG16("imagenet", false, (150, 150, 3))?;\n'
         f'let generator = ImageDataGenerator::rescale(1.0 / 255.0).flow_from_directory("{data}/train", (150, 150), 20, ClassMode::Binary)?;',
         "let features = aula::features::extract_features(&conv_base, &generator)?;",
         "keep * 2"]
json.dump({"nbformat": 4, "nbformat_minor": 5,
           "metadata": {"kernelspec": {"name": "aula", "display_name": "Rust · aula", "language": "rust"}},
           "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "source": c, "outputs": [],
                      "execution_count": None} for i, c in enumerate(cells)]}, open(nb, "w"))
EOF
set +e
"$runner" clase "$nb" --out "$out/runner" --no-html --timeout 20 --startup-timeout 900 --continue-on-error --quiet \
  > "$out/runner.log" 2>&1
rc=$?
set -e
"$venv/bin/python" - "$out/runner/interrupt.ipynb" "$rc" "$out/runner.log" <<'EOF'
import json, sys
nb, rc, log = json.load(open(sys.argv[1])), int(sys.argv[2]), open(sys.argv[3]).read()
outs = [c["outputs"] for c in nb["cells"]]
text = lambda o: "".join(x.get("text", "") if isinstance(x.get("text", ""), str) else "".join(x["text"]) for x in o) + \
    "".join(x.get("evalue", "") + "".join(x.get("traceback", [])) for x in o) + \
    "".join("".join(x.get("data", {}).get("text/plain", "")) for x in o)
assert rc == 1, (rc, log)
assert "timed out" in log and "exceeded the 20 s timeout" in log, log
assert "extracción de características interrumpida" in text(outs[2]), outs[2]
assert "14" in text(outs[3]), f"the variables did not survive the runner's interrupt: {outs[3]}\n{log}"
print("  the timed-out cell stopped cleanly; the next cell saw `keep`")
EOF
echo "interrupt tests: ok"
