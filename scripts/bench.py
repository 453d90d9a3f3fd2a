#!/usr/bin/env python3
"""Compare aula with PyTorch eager and PIL on this machine, in one run.

Run it with the benchmark venv (scripts/setup-bench-venv.sh):

    "$(scripts/setup-bench-venv.sh --print-python)" scripts/bench.py

What it measures, all with the same number of threads (default 2):

1. aula: runs ``--aula-cmd`` (default ``target/release/aula bench --json``) with
   ``--threads N`` appended, through bash, from the repository root; the last line of its stdout must hold one JSON object with
   ``vgg16_extract_img_s`` (VGG16 conv base, 150x150, batch 32) and ``decode_img_s``
   (decode + resize of the data directory's JPEGs). Other numeric keys are kept too.
2. PyTorch eager: the VGG16 conv base (torchvision's ``vgg16().features``: 13 convs,
   5 max-pools, random weights) at batch 32, 150x150, under inference mode, in three
   configurations: fp32 NCHW (the default, ``pytorch_extract_img_s``), fp32
   channels-last, and bf16 autocast + channels-last (only where oneDNN has a bf16 path,
   i.e. AVX-512; elsewhere bf16 is emulated, ~20x slower, and skipped unless
   ``--force-bf16``). The fastest of them is ``pytorch_best_extract_img_s``. Also the peak of 2048x2048 matrix products in fp32
   and bf16 (GFLOP/s).
3. Training steps of 20 augmented images, aula's (``da_step_s``, ``ft_step_s``) against
   PyTorch eager's (``train_step_seconds``): the data-augmentation step (base frozen, head
   trains) and the fine-tuning step (blocks 1-4 frozen, block 5 and head train), PyTorch in
   fp32 and, where bf16 is native, with its frozen layers in bf16 autocast; the faster of
   the two is the reference (``da_epoch_ratio_vs_pytorch``, ``ft_epoch_ratio_vs_pytorch``).
4. PIL: ``Image.open(p).convert('RGB').resize((150, 150), Image.NEAREST)`` over every
   JPEG of ``--data``, in one process (``pil_decode_img_s``) and in N processes.

The measurements are interleaved: each round runs every one of them once, in an order
rotated from round to round, and the result is the median over rounds (the maximum for
the matrix-product peaks). Machine noise then hits both sides of each ratio alike.

The results are merged into ``--out`` (default out/bench.json): keys written by other
benchmarks are kept.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def default_data() -> Path:
    """$AULA_DATA, else ../shared/data/cats_and_dogs_small beside the checkout (where
    `aula` looks too): no machine's absolute path."""
    if os.environ.get("AULA_DATA"):
        return Path(os.environ["AULA_DATA"])
    return REPO.parent / "shared" / "data" / "cats_and_dogs_small"


# torchvision's vgg16 "D" configuration: output channels of each 3x3 conv, "M" = 2x2 max-pool.
VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--aula-cmd", default="target/release/aula bench --json",
                   help="command printing aula's JSON on its last stdout line (run from the repo root)")
    p.add_argument("--no-aula", action="store_true", help="measure only PyTorch and PIL")
    p.add_argument("--aula-timeout", type=float, default=1800.0, help="seconds allowed per aula run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", type=Path, default=default_data(),
                   help="cats_and_dogs_small, searched for *.jpg (default: $AULA_DATA, else "
                        "../shared/data/cats_and_dogs_small relative to the repository)")
    p.add_argument("--out", type=Path, default=REPO / "out" / "bench.json")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (median over rounds)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=150)
    p.add_argument("--batches", type=int, default=None,
                   help="timed batches per PyTorch configuration (default: about --seconds)")
    p.add_argument("--seconds", type=float, default=20.0,
                   help="target time per PyTorch configuration when --batches is not given")
    p.add_argument("--matmul-n", type=int, default=2048)
    p.add_argument("--matmul-seconds", type=float, default=3.0, help="time per matmul dtype per round")
    p.add_argument("--force-bf16", action="store_true",
                   help="time the bf16 VGG16 configuration even where the CPU lacks bf16 support (very slow)")
    p.add_argument("--da-steps", type=int, default=4,
                   help="timed steps of the data-augmentation and of the fine-tuning training (0: skip)")
    p.add_argument("--pil-limit", type=int, default=None, help="decode only the first N images (tests)")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.threads < 1 or args.batch < 1:
        p.error("--rounds, --threads and --batch must be >= 1")
    return args


# ---------------------------------------------------------------- host

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [f for f in wanted if f in flags]
    except OSError:
        pass
    return []


# ---------------------------------------------------------------- PyTorch

def vgg16_features(torch):
    nn = torch.nn
    layers, channels = [], 3
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = v
    return nn.Sequential(*layers).eval()


def vgg16_gflop_per_image(size: int) -> float:
    """Multiply-adds x 2 of the 13 convolutions (pools and ReLUs are negligible)."""
    flop, channels, side = 0, 3, size
    for v in VGG16_CFG:
        if v == "M":
            side //= 2
        else:
            flop += 2 * side * side * channels * v * 9
            channels = v
    return flop / 1e9


def bf16_supported(torch) -> bool:
    """Whether oneDNN has a bf16 path on this CPU (AVX-512 or better). Without one, bf16
    convolutions and products are emulated and 20x slower than fp32, not worth timing."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return any(f in cpu_flags() for f in ("avx512_bf16", "amx_bf16", "avx512f"))


class TorchBench:
    CONFIGS = {
        "fp32": "fp32 NCHW (default)",
        "fp32_cl": "fp32 channels-last",
        "bf16_cl": "bf16 autocast + channels-last",
    }

    def __init__(self, torch, args):
        self.torch, self.args = torch, args
        self.bf16 = args.force_bf16 or bf16_supported(torch)
        self.configs = [c for c in self.CONFIGS if self.bf16 or not c.startswith("bf16")]
        self.batches: dict[str, int] = {}
        self.matmul_sizes: dict[str, int] = {}
        self.models, self.inputs = {}, {}
        x = torch.randn(args.batch, 3, args.size, args.size)
        for name in self.configs:
            torch.manual_seed(0)
            model = vgg16_features(torch)
            if name.endswith("_cl"):
                model = model.to(memory_format=torch.channels_last)
                self.inputs[name] = x.contiguous(memory_format=torch.channels_last)
            else:
                self.inputs[name] = x
            self.models[name] = model

    def _batch(self, name):
        torch = self.torch
        model, x = self.models[name], self.inputs[name]
        with torch.inference_mode():
            if name.startswith("bf16"):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    y = model(x)
            else:
                y = model(x)
        assert y.shape[1:] == (512, self.args.size // 32, self.args.size // 32), y.shape
        return y

    def extract(self, name) -> float:
        """Warm-up one batch, then time N batches; returns images per second."""
        t0 = time.perf_counter()
        self._batch(name)
        warm = time.perf_counter() - t0
        if name not in self.batches:
            n = self.args.batches or max(1, round(self.args.seconds / max(warm, 1e-3)))
            self.batches[name] = n
        n = self.batches[name]
        t0 = time.perf_counter()
        for _ in range(n):
            self._batch(name)
        elapsed = time.perf_counter() - t0
        return n * self.args.batch / elapsed

    def matmul_gflops(self, dtype) -> float:
        """Best rate over chunks of products of two n x n matrices, for about --matmul-seconds.
        Emulated bf16 (no AVX-512) uses n / 4: the number only shows how slow it is."""
        torch = self.torch
        slow = dtype == torch.bfloat16 and not self.bf16
        n = self.args.matmul_n // 4 if slow else self.args.matmul_n
        self.matmul_sizes[str(dtype).removeprefix("torch.")] = n
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        c = torch.empty(n, n, dtype=dtype)
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)  # warm-up
        once = time.perf_counter() - t0
        reps = max(1, min(10, round(0.3 / max(once, 1e-6))))
        flop = 2 * n ** 3
        best, deadline = 0.0, time.perf_counter() + self.args.matmul_seconds
        while True:
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b, out=c)
            elapsed = time.perf_counter() - t0
            best = max(best, reps * flop / elapsed / 1e9)
            if time.perf_counter() > deadline:
                return best


# ---------------------------------------------------------------- PIL

# torchvision's features[24:] is block 5 (block5_conv1 on): what the fine-tuning trains.
BLOCK5 = 24


def train_step_seconds(torch, paths: list[str], steps: int, size: int, trainable_from: int | None = None,
                    bf16: bool = False) -> float:
    """Seconds per training step in PyTorch eager, as aula trains it: 20 training images
    decoded and resized with PIL (nearest) in a first pass and kept in memory, as aula keeps
    them after its first epoch, augmented as Keras does (rotation 40, shifts 0.2, shear 0.2
    degrees, zoom 0.2, flips; bilinear, edge fill) with affine_grid + grid_sample on the batch,
    rescaled; the frozen part of the VGG16 base under no_grad (in bf16 autocast with `bf16`,
    as aula runs frozen layers where bf16 measures faster); Flatten + Dense(256, relu) +
    Dense(1, sigmoid) trained with binary cross-entropy and Keras's RMSprop (alpha=0.9,
    eps=1e-7). `trainable_from=None`: the whole base frozen, lr 2e-5 (data augmentation);
    `BLOCK5`: block 5 trains too, in fp32, lr 1e-5 (the fine-tuning). One warm-up step first."""
    import math
    import random
    import numpy as np
    from PIL import Image
    nn, F = torch.nn, torch.nn.functional
    torch.manual_seed(0)
    rng = random.Random(0)
    base = vgg16_features(torch).to(memory_format=torch.channels_last)
    split = len(base) if trainable_from is None else trainable_from
    frozen, trained = base[:split], base[split:].train()
    for p in frozen.parameters():
        p.requires_grad_(False)
    head = nn.Sequential(nn.Flatten(), nn.Linear(512 * (size // 32) ** 2, 256), nn.ReLU(), nn.Linear(256, 1), nn.Sigmoid())
    params = list(trained.parameters()) + list(head.parameters())
    opt = torch.optim.RMSprop(params, lr=2e-5 if trainable_from is None else 1e-5, alpha=0.9, eps=1e-7)
    train = [p for p in paths if "/train/" in p] or paths

    def theta():
        th, sh = math.radians(rng.uniform(-40, 40)), math.radians(rng.uniform(-0.2, 0.2))
        tx, ty = rng.uniform(-0.2, 0.2) * size, rng.uniform(-0.2, 0.2) * size
        zx, zy = rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.2)
        m = np.array([[math.cos(th), -math.sin(th), 0], [math.sin(th), math.cos(th), 0], [0, 0, 1]])
        m = m @ np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]]) @ np.array([[1, -math.sin(sh), 0], [0, math.cos(sh), 0], [0, 0, 1]])
        m = m @ np.diag([zx, zy, 1])
        c = (size - 1) / 2
        f = -1.0 if rng.random() < 0.5 else 1.0
        return [[m[1][1] * f, m[1][0], m[1][2] / c], [m[0][1] * f, m[0][0], m[0][2] / c]]

    # As aula does from its second epoch on: every image decoded and resized
    # once, kept in memory (aula::data::decoded).
    decoded = {p: np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.NEAREST)) for p in train}

    def step():
        batch = rng.sample(train, 20)
        x = np.stack([decoded[p] for p in batch])
        y = torch.tensor([1.0 if "/dogs/" in p else 0.0 for p in batch]).view(-1, 1)
        x = torch.from_numpy(x).permute(0, 3, 1, 2).float()
        grid = F.affine_grid(torch.tensor([theta() for _ in batch], dtype=torch.float32), list(x.shape), align_corners=True)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True) / 255.0
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            f = frozen(x.contiguous(memory_format=torch.channels_last))
        loss = F.binary_cross_entropy(head(trained(f.float())).clamp(1e-7, 1 - 1e-7), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def _pil_decode(path: str) -> int:
    from PIL import Image
    with Image.open(path) as im:
        im.convert("RGB").resize((150, 150), Image.NEAREST)
    return 1


def pil_decode(paths: list[str]) -> float:
    t0 = time.perf_counter()
    for p in paths:
        _pil_decode(p)
    return len(paths) / (time.perf_counter() - t0)


def pil_decode_parallel(paths: list[str], processes: int) -> float:
    import multiprocessing as mp
    with mp.get_context("fork").Pool(processes) as pool:
        pool.map(_pil_decode, paths[: 2 * processes])  # start the workers
        t0 = time.perf_counter()
        done = sum(pool.imap_unordered(_pil_decode, paths, chunksize=32))
        elapsed = time.perf_counter() - t0
    return done / elapsed


# ---------------------------------------------------------------- aula

def run_aula(args) -> dict:
    # A shell command line (so "VAR=value target/release/aula ..." works), with the thread count appended.
    # The same images for aula's decode and augmentation benchmarks as for PIL's and PyTorch's.
    data = shlex.quote(str(args.data.resolve()))
    cmd = f"{args.aula_cmd} --threads {args.threads} --da-steps {args.da_steps} --data {data}"
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), RAYON_NUM_THREADS=str(args.threads))
    proc = subprocess.run(["bash", "-c", cmd], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=args.aula_timeout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        hint = (" (command not found: build it, e.g. cargo build --release, or pass --aula-cmd or --no-aula)"
                if proc.returncode == 127 else "")
        sys.exit(f"bench: {cmd!r} exited with status {proc.returncode}{hint}")
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    if not lines or "{" not in lines[-1]:
        sys.exit(f"bench: no JSON object on the last stdout line of {args.aula_cmd!r}:\n{proc.stdout[-2000:]}")
    last = lines[-1]
    try:
        # raw_decode ignores anything after the object (e.g. an echoed "--threads 2").
        result, _ = json.JSONDecoder().raw_decode(last[last.index("{"):])
    except json.JSONDecodeError as e:
        sys.exit(f"bench: cannot parse aula's JSON ({e}): {last[:500]}")
    missing = [k for k in ("vgg16_extract_img_s", "decode_img_s") if k not in result]
    if missing:
        sys.exit(f"bench: aula's JSON lacks {missing}: {last[:500]}")
    return result


# ---------------------------------------------------------------- main

def median(values):
    return statistics.median(values) if values else None


def ratio(a, b):
    return a / b if a is not None and b else None


def merge_write(path: Path, new: dict) -> dict:
    data = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            sys.exit(f"bench: {path} is not valid JSON ({e}); move it away first")
        if not isinstance(data, dict):
            sys.exit(f"bench: {path} does not hold a JSON object")
    data.update(new)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return data


def fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, float):
        s = f"{v:,.0f}" if v >= 100 else f"{v:.3g}" if v < 10 else f"{v:.1f}"
        return s + unit
    return f"{v}{unit}"


def print_table(r: dict) -> None:
    rows = [
        ("VGG16 conv base img/s vs PyTorch default (fp32 NCHW)",
         r.get("vgg16_extract_img_s"), r["pytorch_extract_img_s"], r.get("vgg16_extract_ratio_vs_pytorch")),
        (f"VGG16 conv base img/s vs PyTorch best ({r['pytorch_best_config']})",
         r.get("vgg16_extract_img_s"), r["pytorch_best_extract_img_s"], r.get("vgg16_extract_ratio_vs_pytorch_best")),
        ("decode + resize 150 img/s vs PIL, 1 process",
         r.get("decode_img_s"), r["pil_decode_img_s"], r.get("decode_ratio_vs_pil")),
        (f"decode + resize 150 img/s vs PIL, {r['threads']} processes",
         r.get("decode_img_s"), r["pil_decode_parallel_img_s"], r.get("decode_ratio_vs_pil_parallel")),
        (f"frozen DA epoch, s (100 steps of 20; lower is better; PyTorch {r.get('pytorch_da_precision')})",
         r.get("da_epoch_s"), r.get("pytorch_da_epoch_s"), r.get("da_epoch_ratio_vs_pytorch")),
        (f"fine-tuning epoch (block 5 + head), s (PyTorch {r.get('pytorch_ft_precision')})",
         r.get("ft_epoch_s"), r.get("pytorch_ft_epoch_s"), r.get("ft_epoch_ratio_vs_pytorch")),
        (f"frozen DA step, s, both in aula's precision ({r.get('precision')})",
         r.get("da_step_s"), r.get(f"pytorch_{r.get('precision')}_da_step_s"), r.get("da_epoch_ratio_vs_pytorch_same_precision")),
        (f"fine-tuning step, s, both in aula's precision ({r.get('precision')})",
         r.get("ft_step_s"), r.get(f"pytorch_{r.get('precision')}_ft_step_s"), r.get("ft_epoch_ratio_vs_pytorch_same_precision")),
        ("the same epoch: aula VGG16 vs aula EfficientNet-Lite0, s (speed-up)",
         r.get("da_epoch_s"), r.get("effnet_lite0_da_epoch_s"), r.get("effnet_lite0_da_speedup_vs_vgg16")),
    ]
    w = max(len(name) for name, *_ in rows)
    print(f"\n{'':<{w}}  {'aula':>9}  {'reference':>9}  {'ratio':>7}")
    for name, a, b, q in rows:
        print(f"{name:<{w}}  {fmt(a):>9}  {fmt(b):>9}  {fmt(q, 'x') if q is not None else '-':>7}")
    print(f"\nPyTorch {r['torch_version']} VGG16 conv base, batch {r['batch']}, {r['image_size']}x{r['image_size']}, "
          f"{r['vgg16_gflop_per_image']:.2f} GFLOP/image:")
    for key, label in TorchBench.CONFIGS.items():
        v = r.get(f"pytorch_{key}_extract_img_s")
        if v is None:
            print(f"  {label:<32} skipped: {r['pytorch_bf16_extract_skipped']}")
        else:
            print(f"  {label:<32} {fmt(v):>7} img/s  {v * r['vgg16_gflop_per_image']:6.0f} GFLOP/s")
    n = r["matmul_n"]
    print(f"matrix product peak: fp32 {fmt(r['fp32_matmul_peak_gflops'])} GFLOP/s (n={n['float32']}), "
          f"bf16 {fmt(r['bf16_matmul_peak_gflops'])} GFLOP/s (n={n['bfloat16']})  "
          f"(CPU {r['cpu_model']}, torch capability {r['cpu_capability']}, flags {' '.join(r['cpu_flags']) or '-'})")
    if r.get("vgg16_extract_gflops") is not None:
        print(f"aula VGG16 conv base: {r['vgg16_extract_gflops']:.0f} GFLOP/s = "
              f"{100 * r['vgg16_extract_peak_fraction']:.0f}% of the {r['matmul_peak_dtype']} matrix-product peak")
    speeds = sorted(((k[: -len("_extract_img_s")], v) for k, v in r.items()
                     if k.endswith("_extract_img_s") and not k.startswith("pytorch")),
                    key=lambda kv: -kv[1])
    print("aula conv bases, 150x150, batch 32 (random weights): "
          + ", ".join(f"{name} {fmt(v)} img/s" for name, v in speeds))
    print(f"{r['threads']} threads, {r['rounds']} interleaved rounds (medians), {r['date']}")


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)

    paths = sorted(str(p) for p in args.data.rglob("*.jpg"))
    if not paths:
        sys.exit(f"bench: no .jpg under {args.data} (pass --data)")
    if args.pil_limit:
        paths = paths[: args.pil_limit]
    for p in paths:  # the page cache holds the files for every round
        Path(p).read_bytes()

    tb = TorchBench(torch, args)
    samples: dict[str, list[float]] = {}
    aula_extra: dict = {}

    def add(key, value):
        samples.setdefault(key, []).append(value)
        print(f"  {key:<34} {fmt(value)}", flush=True)

    def aula_step():
        out = run_aula(args)
        for k, v in out.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                add(k, float(v))
            else:
                aula_extra[k] = v

    steps = [] if args.no_aula else [("aula", aula_step)]
    steps += [(f"pytorch {name}", lambda name=name: add(f"pytorch_{name}_extract_img_s", tb.extract(name)))
              for name in tb.configs]
    if args.da_steps:
        # Both precisions where bf16 is native: the reference is PyTorch's faster correct one.
        for precision in ["fp32"] + (["bf16"] if tb.bf16 else []):
            bf16 = precision == "bf16"
            steps.append((f"pytorch DA step {precision}", lambda bf16=bf16, precision=precision: add(
                f"pytorch_{precision}_da_step_s", train_step_seconds(torch, paths, args.da_steps, args.size, None, bf16))))
            steps.append((f"pytorch FT step {precision}", lambda bf16=bf16, precision=precision: add(
                f"pytorch_{precision}_ft_step_s", train_step_seconds(torch, paths, args.da_steps, args.size, BLOCK5, bf16))))
    steps += [
        ("PIL", lambda: add("pil_decode_img_s", pil_decode(paths))),
        ("PIL parallel", lambda: add("pil_decode_parallel_img_s", pil_decode_parallel(paths, args.threads))),
        ("matmul", lambda: (add("fp32_matmul_peak_gflops", tb.matmul_gflops(torch.float32)),
                            add("bf16_matmul_peak_gflops", tb.matmul_gflops(torch.bfloat16)))),
    ]
    t_start = time.perf_counter()
    for rnd in range(args.rounds):
        k = rnd % len(steps)
        order = steps[k:] + steps[:k]
        print(f"round {rnd + 1}/{args.rounds}: {', '.join(n for n, _ in order)}", flush=True)
        for _, step in order:
            step()

    peaks = {"fp32_matmul_peak_gflops", "bf16_matmul_peak_gflops"}
    r = {k: (max(v) if k in peaks else median(v)) for k, v in samples.items()}
    r.update(aula_extra)
    for step in ("da", "ft"):
        timed = {p: r[f"pytorch_{p}_{step}_step_s"] for p in ("fp32", "bf16") if f"pytorch_{p}_{step}_step_s" in r}
        if timed:
            fastest = min(timed, key=timed.get)
            r[f"pytorch_{step}_step_s"], r[f"pytorch_{step}_precision"] = timed[fastest], fastest
    gflop = vgg16_gflop_per_image(args.size)
    configs = {name: r[f"pytorch_{name}_extract_img_s"] for name in tb.configs}
    best = max(configs, key=configs.get)
    peak_dtype = "bf16" if r["bf16_matmul_peak_gflops"] >= r["fp32_matmul_peak_gflops"] else "fp32"
    peak = r[f"{peak_dtype}_matmul_peak_gflops"]
    aula_gflops = r["vgg16_extract_img_s"] * gflop if "vgg16_extract_img_s" in r else None
    r.update({
        "pytorch_extract_img_s": r["pytorch_fp32_extract_img_s"],
        "pytorch_best_extract_img_s": configs[best],
        "pytorch_best_config": TorchBench.CONFIGS[best],
        "pytorch_best_gflops": configs[best] * gflop,
        "vgg16_gflop_per_image": gflop,
        "vgg16_extract_gflops": aula_gflops,
        "vgg16_extract_ratio_vs_pytorch": ratio(r.get("vgg16_extract_img_s"), r["pytorch_fp32_extract_img_s"]),
        "vgg16_extract_ratio_vs_pytorch_best": ratio(r.get("vgg16_extract_img_s"), configs[best]),
        # The best matrix-product rate this CPU reached: bf16 where it has bf16 units.
        "matmul_peak_dtype": peak_dtype,
        "vgg16_extract_peak_fraction": ratio(aula_gflops, peak),
        "decode_ratio_vs_pil": ratio(r.get("decode_img_s"), r["pil_decode_img_s"]),
        # Time per frozen DA epoch (100 steps of 20), aula / PyTorch: below 1 is faster.
        "pytorch_da_epoch_s": r["pytorch_da_step_s"] * 100 if "pytorch_da_step_s" in r else None,
        "da_epoch_ratio_vs_pytorch": ratio(r.get("da_step_s"), r.get("pytorch_da_step_s")),
        # The fine-tuning step (block 5 + head train), aula / PyTorch's faster precision.
        "pytorch_ft_epoch_s": r["pytorch_ft_step_s"] * 100 if "pytorch_ft_step_s" in r else None,
        "ft_epoch_ratio_vs_pytorch": ratio(r.get("ft_step_s"), r.get("pytorch_ft_step_s")),
        # The same two steps against PyTorch in aula's own precision: with AULA_PRECISION=fp32
        # on a CPU where bf16 pays, this times the fp32 path most CPUs take, in one script.
        "da_epoch_ratio_vs_pytorch_same_precision": ratio(r.get("da_step_s"), r.get(f"pytorch_{r.get('precision')}_da_step_s")),
        "ft_epoch_ratio_vs_pytorch_same_precision": ratio(r.get("ft_step_s"), r.get(f"pytorch_{r.get('precision')}_ft_step_s")),
        # The same frozen DA step with EfficientNet-Lite0's base instead of VGG16's (target >= 10).
        "effnet_lite0_da_epoch_s": r["effnet_lite0_da_step_s"] * 100 if "effnet_lite0_da_step_s" in r else None,
        "effnet_lite0_da_speedup_vs_vgg16": ratio(r.get("da_step_s"), r.get("effnet_lite0_da_step_s")),
        "decode_ratio_vs_pil_parallel": ratio(r.get("decode_img_s"), r["pil_decode_parallel_img_s"]),
        "pil_images": len(paths),
        "threads": args.threads,
        "rounds": args.rounds,
        "batch": args.batch,
        "image_size": args.size,
        "matmul_n": tb.matmul_sizes,
        "cpu_bf16": tb.bf16,
        "pytorch_bf16_extract_skipped": None if "bf16_cl" in tb.configs else
            "no bf16 support on this CPU (emulated bf16 is ~20x slower than fp32); --force-bf16 times it",
        "pytorch_timed_batches": tb.batches,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_version": torch.__version__,
        "aula_cmd": None if args.no_aula else args.aula_cmd,
        "bench_seconds": round(time.perf_counter() - t_start, 1),
        "bench_samples": samples,
    })
    merge_write(args.out, r)
    print_table(r)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
