#!/usr/bin/env bash
# Install the Jupyter kernel "Rust · aula" (`make kernel`). Idempotent and quick when
# nothing changed.
#
#  1. evcxr_jupyter 0.22.0 (`cargo install --locked`, 6–15 min on 2 cores, once);
#  2. ${AULA_CACHE:-~/.cache/aula}/kernel/: config/ (EVCXR_CONFIG_DIR: init.evcxr with the
#     `:dep aula = { path = ... }` line, prelude.rs), kernel.env, and template/: an evcxr
#     build directory in which evcxr itself has compiled aula and all its dependencies.
#     It is rebuilt when its fingerprint changes (aula's sources, Cargo.lock, rustc, evcxr,
#     libtorch, these scripts), starting from the previous template so that only what
#     changed is recompiled;
#  3. the ImageNet weights of assets/weights.json not converted yet, converted by the
#     template's aula from the files scripts/fetch-weights.sh unpacked (make run builds no
#     other aula: the `aula weights` command would compile its dependencies a second time);
#  4. the kernelspec `aula` ("Rust · aula") in the user's Jupyter data dir
#     ($JUPYTER_DATA_DIR or ~/.local/share/jupyter), whose argv is kernel/launch.sh.
#
#   kernel/install.sh [--python PY] [--force] [--evcxr-only]
#     PY: a Python with jupyter_client (default: the venv of scripts/setup-jupyter-venv.sh)
#     --force: rebuild the template from scratch
#     --evcxr-only: step 1 and stop (`make setup` compiles it beside the workspace build)
set -euo pipefail

EVCXR_VERSION=0.22.0
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${AULA_CACHE:-$HOME/.cache/aula}
# One kernel home per checkout (its template is built from that checkout's crates/aula); the
# kernelspec "aula" points to the checkout that ran `make kernel` last.
home=$cache/kernel/$(basename "$repo")-$(printf '%s' "$repo" | sha256sum | cut -c1-8)
python=
force=
evcxr_only=
while [ $# -gt 0 ]; do
  case "$1" in
    --python) python=$2; shift 2 ;;
    --force) force=1; shift ;;
    --evcxr-only) evcxr_only=1; shift ;;
    *) echo "usage: $0 [--python PY] [--force] [--evcxr-only]" >&2; exit 2 ;;
  esac
done

say() { echo "kernel: $*"; }

# --- 1. evcxr_jupyter -------------------------------------------------------------------
cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin
evcxr=$cargo_bin/evcxr_jupyter
if ! { [ -x "$evcxr" ] && cargo install --list 2>/dev/null | grep -qx "evcxr_jupyter v$EVCXR_VERSION:"; }; then
  say "installing evcxr_jupyter $EVCXR_VERSION (cargo install --locked; 6–15 min on 2 cores, once)"
  # opt-level 2, not release's 3: it compiles on make run's critical path (2 cores, beside the
  # workspace). Not 1: on a 2-core AMD EPYC the install took 623 CPU-s at 1 and 718 at 2, but
  # a cold kernel was ready in 21.9 s instead of 19.1 (medians of 3, interleaved), every
  # notebook cell took 0.1-0.4 s longer (rust-analyzer reads each cell), and a fresh make run
  # was no faster (21:28 vs 20:54; kernel/README.md).
  CARGO_PROFILE_RELEASE_OPT_LEVEL=2 cargo install --locked "evcxr_jupyter@$EVCXR_VERSION"
fi
[ -n "$evcxr_only" ] && exit 0
cargo_dir=$(dirname "$(command -v cargo)")
# evcxr links each cell with -Cprefer-dynamic against the toolchain's libstd-*.so, and the
# RUNPATH rustc writes is relative to target/…/deps while evcxr loads the library from one
# level up: it only resolves when the extra `..` is swallowed at / (a dir in /tmp). The
# launcher puts this folder on LD_LIBRARY_PATH instead.
rust_lib=$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/lib

# --- 2. libtorch, Python --------------------------------------------------------------
if [ ! -e "$repo/.libtorch/lib/libtorch_cpu.so" ]; then
  echo "kernel: libtorch is missing at $repo/.libtorch (run \`make libtorch\` first)" >&2
  exit 1
fi
libtorch=$(readlink -f "$repo/.libtorch")
if [ -z "$python" ]; then
  python=$(bash "$repo/scripts/setup-jupyter-venv.sh" | tail -n 1)/bin/python
fi
"$python" -c 'import jupyter_client' 2>/dev/null || {
  echo "kernel: $python has no jupyter_client" >&2; exit 1; }

# evcxr checks every `:dep` with `cargo metadata --offline`, which needs the sources of
# every package in the lock file, for every platform: more than `cargo build` downloads.
# On a fresh machine the first kernel failed with "failed to download `arbitrary`".
cargo fetch --locked --manifest-path "$repo/Cargo.toml" --quiet

mkdir -p "$home/config" "$home/run" "$home/pool/ready"
exec 7> "$home/install.lock"
if ! flock -n 7; then
  say "another install is running; waiting for it"
  flock 7
fi
: >> "$home/template.lock"

# --- 3. configuration (what every kernel reads) ----------------------------------------
sed "s|@AULA_CRATE@|$repo/crates/aula|g" "$repo/kernel/init.evcxr" > "$home/config/init.evcxr.tmp"
mv "$home/config/init.evcxr.tmp" "$home/config/init.evcxr"
cp "$repo/kernel/prelude.rs" "$home/config/prelude.rs.tmp"
mv "$home/config/prelude.rs.tmp" "$home/config/prelude.rs"
cat > "$home/kernel.env.tmp" <<EOF
# Written by kernel/install.sh; read by kernel/launch.sh.
EVCXR_JUPYTER=$evcxr
CARGO_BIN_DIR=$cargo_dir
RUST_LIB_DIR=$rust_lib
LIBTORCH=$libtorch
POOL_PYTHON=$python
EOF
mv "$home/kernel.env.tmp" "$home/kernel.env"
# Cargo reads this for the template and every kernel copy (they all live under $home). evcxr
# builds everything at its opt-level (2); the cell crate (`ctx`, rebuilt at every cell) at 0
# compiles the first lesson cell in 2.3 s instead of 4.0 s. aula, tch and every dependency
# stay at 2, so the template is unaffected; only code written in cells runs unoptimised.
mkdir -p "$home/.cargo"
cat > "$home/.cargo/config.toml" <<'EOF'
# Written by kernel/install.sh.
[profile.dev.package.ctx]
opt-level = 0
# tch's C++ shims: as in the workspace's Cargo.toml (their compile is on the critical path).
[profile.dev.package.torch-sys]
opt-level = 0
EOF

# Whether some ImageNet weights are still to be converted (and can be: their package files
# are in the cache). The template's kernel converts them (aula::convert::import_missing).
weights_todo=$("$python" - "$repo/assets/weights.json" "$cache" <<'EOF'
import json, os, sys
manifest, cache = json.load(open(sys.argv[1])), sys.argv[2]
missing = [m for m, e in manifest.items() if not os.path.exists(os.path.join(cache, "weights", e["file"]))]
sources = [os.path.join(cache, "sources", os.path.basename(manifest[m]["source_file"])) for m in missing]
absent = [s for s in sources if not os.path.exists(s)]
if absent:
    print(f"kernel: ImageNet weights of {', '.join(missing)} not converted: {', '.join(absent)} "
          "missing (run `make weights`)", file=sys.stderr)
elif missing:
    print("yes")
EOF
)

# --- 4. the template -------------------------------------------------------------------
fingerprint() {
  {
    echo "evcxr $EVCXR_VERSION $(stat -c '%s %Y' "$evcxr")"
    rustc -vV
    cargo -V
    echo "libtorch $libtorch"
    (cd "$repo" && sha256sum Cargo.toml Cargo.lock kernel/init.evcxr kernel/prelude.rs \
       kernel/install.sh kernel/launch.sh kernel/build-template.py)
    # Content and modification time: cargo rebuilds on a newer mtime even if the content is
    # the same (a checkout), and every kernel would then recompile aula.
    # aula and the one workspace crate it depends on (aula-paths).
    for crate in aula aula-paths; do
      (cd "$repo/crates/$crate" && find . -path ./target -prune -o -type f -printf '%P %T@\n' | LC_ALL=C sort \
         && find . -path ./target -prune -o -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    done
  } | sha256sum | cut -d' ' -f1
}
want=$(fingerprint)
have=$(cat "$home/template.fingerprint" 2>/dev/null || true)
if [ -z "$force" ] && [ -f "$home/template/.complete" ] && [ "$want" = "$have" ]; then
  say "template up to date ($home/template)"
else
  new=$home/template.new
  rm -rf "$new" "$new.env0"
  mkdir -p "$new"
  # Start from the previous template, or another checkout's: cargo then recompiles only what
  # changed (aula), not its ≈ 170 dependencies.
  seed=
  if [ -z "$force" ]; then
    if [ -f "$home/template/.complete" ]; then
      seed=$home/template
    else
      seed=$(ls -dt "$cache"/kernel/*/template/.complete "$cache"/kernel/template/.complete 2>/dev/null | head -n 1 || true)
      seed=${seed%/.complete}
    fi
  fi
  if [ -n "$seed" ]; then
    say "rebuilding the template from $seed (only what changed recompiles)"
    ( flock -s 8; AULA_KERNEL_COPY=link bash "$repo/kernel/copy-template.sh" "$seed" "$new" ) 8< "$(dirname "$seed")/template.lock"
    rm -f "$new/.complete"
    # aula's incremental sessions are not reused: rebuilding aula incrementally on top of
    # another build's sessions has failed to link (rust-lld: undefined hidden symbol
    # anon.*.llvm.*); deleting them fixed it. aula alone then compiles afresh (≈ 1 min).
    rm -rf "$new"/target/debug/incremental/aula-* "$new"/target/*/debug/incremental/aula-*
  else
    say "building the template from scratch (4–15 min on 2 cores, once)"
  fi
  # Start from the workspace's lock file: the kernel gets the dependency versions the
  # tests ran with (cargo drops what aula does not use), and needs no network.
  cp "$repo/Cargo.lock" "$new/Cargo.lock"
  t0=$(date +%s)
  "$python" "$repo/kernel/build-template.py" --home "$home" --dir "$new" ${weights_todo:+--convert}
  weights_todo=
  # Per-cell libraries of the build kernel: no use to anyone.
  find "$new/target" -name 'libcode_*.so' -delete
  # What the dependencies' fingerprints depend on: the variables their build scripts
  # watch (rerun-if-env-changed) and those rustc recorded for env!/option_env!. Kernels get
  # them with the values the template was built with, whatever environment Jupyter has.
  "$python" - "$new" "$new.env0" > "$home/build-env.tmp" <<'EOF'
import glob, os, re, sys
new, env0 = sys.argv[1], sys.argv[2]
env = dict(e.split("=", 1) for e in open(env0, "rb").read().decode("utf-8", "replace").split("\0") if "=" in e)
names = set()
for out in glob.glob(os.path.join(new, "target", "**", "build", "*", "output"), recursive=True):
    for line in open(out, encoding="utf-8", errors="replace"):
        m = re.match(r"cargo::?rerun-if-env-changed=(.+)", line.strip())
        if m:
            names.add(m.group(1))
for d in glob.glob(os.path.join(new, "target", "**", "deps", "*.d"), recursive=True):
    for line in open(d, encoding="utf-8", errors="replace"):
        m = re.match(r"# env-dep:([^=\s]+)", line)
        if m:
            names.add(m.group(1))
# Cargo sets these itself for each unit, or they are the launcher's own.
skip = re.compile(r"^(CARGO|CARGO_.*|OUT_DIR|TARGET|HOST|NUM_JOBS|OPT_LEVEL|DEBUG|PROFILE|RUSTC|RUSTC_.*|RUSTDOC|DEP_.*|EVCXR_.*|PATH|LD_LIBRARY_PATH|LIBTORCH.*|TORCH_CUDA_VERSION)$")
for n in sorted(names):
    if skip.match(n) or "\n" in env.get(n, ""):
        continue
    print(f"{n}={env[n]}" if n in env else f"-{n}")
EOF
  mv "$home/build-env.tmp" "$home/build-env"
  touch "$new/.complete"
  rm -f "$new.env0"
  # Swap it in; a kernel copying the old one finishes first (shared lock in launch.sh).
  (
    flock -x 8
    rm -rf "$home/template.old"
    [ -d "$home/template" ] && mv "$home/template" "$home/template.old"
    mv "$new" "$home/template"
    echo "$want" > "$home/template.fingerprint"
  ) 8< "$home/template.lock"
  rm -rf "$home/template.old"
  # Warm kernels of the old template retire (their supervisors see the marker gone).
  rm -f "$home/pool/ready/"*
  say "template built in $(( $(date +%s) - t0 )) s: $(du -sh "$home/template" | cut -f1) in $home/template"
fi

# --- 5. the ImageNet weights, when the template was up to date ---------------------------
if [ -n "$weights_todo" ]; then
  "$python" "$repo/kernel/build-template.py" --home "$home" --convert-only
fi

# Bookkeeping of the warm-kernel pool (pool.py) for directories not seen for a day.
find "$home/pool" -maxdepth 2 \( -path "$home/pool/demand/*" -o -name 'refill.*.lock' \) -mtime +1 -delete 2>/dev/null || true

# --- 6. the kernelspec -----------------------------------------------------------------
data_dir=${JUPYTER_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/jupyter}
spec=$data_dir/kernels/aula
mkdir -p "$spec"
"$python" - "$spec/kernel.json" "$repo/kernel/launch.sh" "$home" <<'EOF'
import json, sys
path, launch, home = sys.argv[1:]
spec = {
    "argv": [launch, home, "{connection_file}"],
    "display_name": "Rust · aula",
    "language": "rust",
    "interrupt_mode": "message",
    "metadata": {"aula": {"kernel_home": home}},
}
with open(path + ".tmp", "w") as f:
    json.dump(spec, f, indent=2, ensure_ascii=False)
    f.write("\n")
import os
os.replace(path + ".tmp", path)
EOF
# evcxr's logos, when its sources are at hand.
for logo in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/evcxr_jupyter-"$EVCXR_VERSION"/third_party/rust/rust-logo-{32x32,64x64}.png; do
  [ -f "$logo" ] && cp "$logo" "$spec/$(basename "$logo" | sed 's/^rust-//')"
done
say "kernelspec \"Rust · aula\" in $spec"
