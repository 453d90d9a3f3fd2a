#!/usr/bin/env python3
"""Build the prebuilt evcxr directory through evcxr itself (called by kernel/install.sh).

Starts evcxr_jupyter via kernel/launch.sh --in-place DIR, so that evcxr compiles aula and
all its dependencies into DIR exactly as every kernel will ask for them (same Cargo.toml,
flags, environment), runs the cells a first lesson runs, checks their output, and stops.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jupyter_run import Kernel  # noqa: E402

WARMUP = [
    # (code, text that must be in the output)
    ("1 + 1", "2"),
    ('let conv_base = VGG16("none", false, (150, 150, 3))?;\nconv_base.summary()', "14,714,688"),
    ("conv_base.layers().len()", ""),
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", required=True, help="the kernel home (…/aula/kernel)")
    ap.add_argument("--dir", required=True, help="the directory to build the template in")
    ap.add_argument("--timeout", type=float, default=3600, help="kernel start-up timeout (s)")
    args = ap.parse_args()

    launch = os.path.join(os.path.dirname(os.path.abspath(__file__)), "launch.sh")
    k = Kernel(argv=[launch, "--in-place", args.dir, args.home, "{connection_file}"])
    t0 = time.perf_counter()
    print(f"template: evcxr compiles aula and its dependencies in {args.dir} "
          f"(4–15 min on 2 cores the first time, about 1 min when only aula changed)", flush=True)
    try:
        k.start(timeout=args.timeout)
        print(f"template: kernel ready after {k.ready_s:.1f} s", flush=True)
        for code, want in WARMUP:
            cell = k.run(code, timeout=args.timeout)
            first_line = code.splitlines()[0]
            print(f"template: [{cell.status}] {cell.seconds:6.2f} s  {first_line}", flush=True)
            if cell.status != "ok" or want not in cell.all_text():
                print(cell.text, cell.error, sep="\n", file=sys.stderr)
                print(f"template: the cell `{first_line}` failed", file=sys.stderr)
                return 1
    except RuntimeError as e:  # the kernel died (e.g. aula did not compile)
        print(f"template: the kernel failed to start: {e}", file=sys.stderr)
        return 1
    finally:
        k.shutdown()
    print(f"template: built in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
