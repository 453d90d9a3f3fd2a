#!/usr/bin/env bash
# Tests of the installed "Rust · aula" kernel, through the Jupyter protocol (needs `make kernel`).
#
#  1. 4 kernels started at once each run aula cells with their own values; each has its own
#     private directory, removed after shutdown; the template is untouched.
#  2. A cold kernel killed with SIGKILL (no shutdown at all) leaves no private directory.
#  3. A warm kernel (from the pool) killed with SIGKILL: its evcxr process and its directory go.
#  In 2 and 3, first: an interrupt stops an aula training and the variables survive (both go
#  through kernel/proxy.py).
#
#   kernel/tests/kernel.sh [PYTHON]     (PYTHON: one with jupyter_client; default: the jupyter venv)
#   SKIP_CONCURRENT=1 kernel/tests/kernel.sh     (tests 2 and 3 only)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
python=${1:-$(bash "$repo/scripts/setup-jupyter-venv.sh" | tail -n 1)/bin/python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ -z "${SKIP_CONCURRENT:-}" ]; then
  echo "test 1: 4 kernels at once"
  "$python" "$repo/scripts/bench-kernel.py" --runs 0 --cold-runs 0 --concurrent 4 --no-copy-costs \
    --out "$tmp/concurrent.json"
fi

echo "test 2 and 3: a killed kernel, cold and warm, leaves nothing behind"
"$python" - "$repo" <<'EOF'
import glob, os, signal, subprocess, sys, time
repo = sys.argv[1]
sys.path.insert(0, os.path.join(repo, "kernel"))
from jupyter_run import Kernel
from jupyter_client.kernelspec import KernelSpecManager

argv = KernelSpecManager().get_kernel_spec("aula").argv   # [launch.sh, HOME, {connection_file}]
launch, home = argv[0], argv[-2]

def gone(pred, timeout=60):
    t = time.time()
    while not pred() and time.time() - t < timeout:
        time.sleep(0.2)
    return pred(), time.time() - t

def interrupt_keeps_variables(k, label):
    """An interrupt stops an aula training through the proxy (kernel/README.md) and the
    variables survive: cold and warm kernels alike (kernel/tests/interrupt.sh has more)."""
    assert k.run("let kept = 6 * 7;").status == "ok"
    kc = k.kc
    msg_id = kc.execute('let mut m = Sequential::new("s"); m.add(Dense(1).activation("sigmoid").input_dim(4))?;\n'
                        'm.compile(RMSprop::new(1e-3), "binary_crossentropy", &["acc"])?;\n'
                        'm.fit(&Tensor::randn([2000, 4], (Kind::Float, Device::Cpu)), '
                        '&Tensor::zeros([2000], (Kind::Float, Device::Cpu)), 1_000_000, 10, None)?;')
    time.sleep(4)
    kc.session.send(kc.control_channel.socket, kc.session.msg("interrupt_request", {}))
    t0 = time.time()
    while True:
        r = kc.get_shell_msg(timeout=60)
        if r["parent_header"]["msg_id"] == msg_id:
            break
    took = time.time() - t0
    text = ""
    # Up to the cell's idle status, as JupyterLab shows a cell's output. (evcxr may publish it
    # before the last lines of stderr, here the stop message after a flood of epochs: the proxy
    # holds an interrupted cell's idle a little.)
    while True:
        m = kc.get_iopub_msg(timeout=30)
        if m["parent_header"].get("msg_id") == msg_id:
            if m["msg_type"] == "stream":
                text += m["content"]["text"]
            elif m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                break
    assert "entrenamiento interrumpido en la época" in text, text[-2000:]
    assert "42" in k.run("kept").text, f"{label}: the variables did not survive the interrupt"
    print(f"{label}: the training stopped {took:.2f} s after the interrupt; variables kept")

def kill_and_check(env, label, want_pooled):
    k = Kernel(name="aula")
    k.start(timeout=300, env=env)
    with open(f"/proc/{k.pid()}/cmdline", "rb") as f:
        pooled = b"pool.py" in f.read()
    assert pooled == want_pooled, f"{label}: pooled={pooled}"
    try:
        interrupt_keeps_variables(k, label)
    except BaseException:
        k.shutdown()  # not a kernel left running
        raise
    d = k.run('std::env::var("EVCXR_TMPDIR").unwrap()').text.strip().strip('"')
    evcxr = int(k.run("std::os::unix::process::parent_id()").text.strip())  # the kernel's evcxr
    assert os.path.isdir(d), d
    os.killpg(os.getpgid(k.pid()), signal.SIGKILL)   # Jupyter's kernel process and its group
    k.kc.stop_channels()
    def evcxr_gone():  # a zombie (not yet reaped by its parent: this test, for a cold kernel) is gone
        try:
            with open(f"/proc/{evcxr}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True
    def clean():
        return not os.path.exists(d) and evcxr_gone()
    ok, s = gone(clean)
    assert ok, f"{label}: {d} or evcxr {evcxr} left behind"
    print(f"{label}: evcxr gone and {d} removed {s:.1f} s after SIGKILL")

kill_and_check({**os.environ, "AULA_KERNEL_POOL": "0"}, "cold kernel", False)

# A spare for this directory and environment, started now (no delay, no cap), then claimed.
key = subprocess.run(["bash", launch, "--print-key", home], capture_output=True, text=True, check=True).stdout.strip()
ready = os.path.join(home, "pool", "ready")
if not glob.glob(os.path.join(ready, key + ".*")):
    subprocess.Popen([sys.executable, os.path.join(os.path.dirname(launch), "pool.py"), "refill", home, key, launch],
                     start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     env={**os.environ, "AULA_KERNEL_POOL_DELAY": "0", "AULA_KERNEL_POOL_MAX": "99"})
ok, s = gone(lambda: glob.glob(os.path.join(ready, key + ".*")), timeout=900)
assert ok, "no warm kernel after 900 s"
kill_and_check(dict(os.environ), "warm kernel", True)
EOF
echo "kernel tests: ok"
