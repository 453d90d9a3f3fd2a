#!/usr/bin/env python3
"""Build the prebuilt evcxr directory through evcxr itself (called by kernel/install.sh).

Starts evcxr_jupyter via kernel/launch.sh --in-place DIR, so that evcxr compiles aula and
all its dependencies into DIR exactly as every kernel will ask for them (same Cargo.toml,
flags, environment), runs the cells a first lesson runs, checks their output, and stops.

--convert: then converts the ImageNet weights missing from aula's cache with that aula
(`aula::convert::import_missing`, what `aula weights` runs): make run needs no other
build of aula. --convert-only: the template is there; a cold kernel of it converts them.
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
# evcxr answers "ok" to a cell whose `?` returned an error (it prints the error's first line
# on stderr): the cell prints the whole error itself, and the last line only on success.
CONVERT = ("""match aula::convert::import_missing() {
    Ok(written) => {
        for path in written { println!("converted: {}", path.display()); }
        println!("ImageNet weights: ok");
    }
    Err(e) => eprintln!("{e:#}"),
}""", "ImageNet weights: ok")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", required=True, help="the kernel home (…/aula/kernel)")
    ap.add_argument("--dir", help="the directory to build the template in")
    ap.add_argument("--convert", action="store_true", help="then convert the missing ImageNet weights")
    ap.add_argument("--convert-only", action="store_true",
                    help="only convert them, in a cold kernel of KERNEL_HOME's template")
    ap.add_argument("--timeout", type=float, default=3600, help="kernel start-up timeout (s)")
    args = ap.parse_args()

    launch = os.path.join(os.path.dirname(os.path.abspath(__file__)), "launch.sh")
    if args.convert_only:
        k = Kernel(argv=[launch, "--cold", args.home, "{connection_file}"])
        cells = [CONVERT]
        print("template: converting the ImageNet weights with the kernel's aula", flush=True)
    elif args.dir:
        k = Kernel(argv=[launch, "--in-place", args.dir, args.home, "{connection_file}"])
        cells = WARMUP + ([CONVERT] if args.convert else [])
        print(f"template: evcxr compiles aula and its dependencies in {args.dir} "
              f"(4–15 min on 2 cores the first time, about 1 min when only aula changed)", flush=True)
    else:
        ap.error("--dir or --convert-only is required")
    t0 = time.perf_counter()
    try:
        k.start(timeout=args.timeout)
        print(f"template: kernel ready after {k.ready_s:.1f} s", flush=True)
        for code, want in cells:
            cell = k.run(code, timeout=args.timeout)
            first_line = code.splitlines()[0]
            print(f"template: [{cell.status}] {cell.seconds:6.2f} s  {first_line}", flush=True)
            if code == CONVERT[0] and cell.status == "ok" and want in cell.text:
                print(cell.text.strip(), flush=True)
            if cell.status != "ok" or want not in cell.all_text():
                print(cell.text, cell.error, sep="\n", file=sys.stderr)
                print(f"template: the cell `{first_line}` failed", file=sys.stderr)
                return 1
    except RuntimeError as e:  # the kernel died (e.g. aula did not compile)
        print(f"template: the kernel failed to start: {e}", file=sys.stderr)
        return 1
    finally:
        k.shutdown()
    print(f"template: {'weights converted' if args.convert_only else 'built'} in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
