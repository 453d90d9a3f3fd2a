#!/usr/bin/env bash
# Start one "Rust · aula" kernel (the kernelspec's argv runs this).
#
#   kernel/launch.sh KERNEL_HOME CONNECTION_FILE                  a kernel for Jupyter: a warm
#                         one from the pool when one is ready, else --cold (see pool.py)
#   kernel/launch.sh --cold KERNEL_HOME CONNECTION_FILE           start evcxr now, in a private
#                         copy of the template, removed when the kernel exits
#   kernel/launch.sh --private DIR KERNEL_HOME CONNECTION_FILE    (pool.py) same, in DIR, which
#                         the caller removes
#   kernel/launch.sh --in-place DIR KERNEL_HOME CONNECTION_FILE   (install.sh) build the
#                         template: evcxr works in DIR itself
#   kernel/launch.sh --print-key [KERNEL_HOME]  the pool key of this directory and environment
#   kernel/launch.sh --prewarm [KERNEL_HOME]    start a warm kernel for them now (background);
#                         KERNEL_HOME defaults to the installed kernelspec's
#
# KERNEL_HOME (${AULA_CACHE:-~/.cache/aula}/kernel, written by kernel/install.sh) holds
#   template/    a prebuilt evcxr build directory (EVCXR_TMPDIR) where aula and all its
#                dependencies are already compiled;
#   config/      EVCXR_CONFIG_DIR: init.evcxr (the `:dep aula` line) and prelude.rs;
#   kernel.env   where evcxr_jupyter, cargo, the toolchain's libstd and libtorch are;
#   build-env    the variables cargo fingerprints (build scripts' rerun-if-env-changed, `env!`
#                of dependencies) with the values the template was built with;
#   run/         one private copy of the template per cold-started kernel;
#   pool/        warm kernels (pool.py).
#
# Two kernels must never share one EVCXR_TMPDIR, so each gets its own copy of the template:
# the immutable artifacts (rlibs, rmeta) hard-linked, everything cargo, rustc or evcxr rewrite
# in place copied (copy-template.sh). A cold kernel's copy is removed when it exits, however
# it exits: a detached reaper waits for a lock that the kernel and its children hold.
#
# AULA_KERNEL_POOL=N keeps N warm kernels per working directory and environment asked for
# twice (default 1; 0: always start cold), AULA_KERNEL_POOL_MAX=M at most in all (default 2);
# AULA_KERNEL_POOL_IDLE: seconds an unused warm kernel lives (3600). See pool.py.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
self=$here/launch.sh
mode=serve
dir=
case "${1:-}" in
  --cold) mode=cold; shift ;;
  --print-key|--prewarm)
    mode=${1#--}; shift
    if [ $# -eq 0 ]; then  # the installed kernelspec's kernel home
      spec=${JUPYTER_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/jupyter}/kernels/aula/kernel.json
      set -- "$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["argv"][1])' "$spec")"
    fi
    set -- "$1" - ;;
  --private|--in-place) mode=${1#--}; dir=$2; shift 2 ;;
esac
if [ $# -ne 2 ]; then
  echo "usage: $0 [--cold | --private DIR | --in-place DIR] KERNEL_HOME CONNECTION_FILE" >&2
  exit 2
fi
home=$1
connection_file=$2

if [ ! -f "$home/kernel.env" ]; then
  echo "aula kernel: $home/kernel.env is missing; run \`make kernel\` in the aula checkout" >&2
  exit 1
fi
# EVCXR_JUPYTER, CARGO_BIN_DIR, RUST_LIB_DIR, LIBTORCH, POOL_PYTHON
# shellcheck source=/dev/null
source "$home/kernel.env"

# Spares only serve kernels that would start exactly like them: same template and
# configuration, working directory and environment (less per-launch noise).
pool_key() {
  {
    cat "$home/template.fingerprint" "$home/kernel.env" "$home/build-env" "$home/.cargo/config.toml" "$self" 2>/dev/null
    pwd -P
    env -0 | grep -zvE '^(JPY_[A-Z_]*|PYDEVD_[A-Z_]*|MAKEFLAGS|MAKELEVEL|MFLAGS|MAKE_TERMOUT|MAKE_TERMERR|SHLVL|_|OLDPWD|PWD|AULA_KERNEL_POOL[A-Z_]*)=' | LC_ALL=C sort -z
  } | sha256sum | cut -c1-16
}
if [ "$mode" = print-key ]; then
  pool_key
  exit 0
fi
if [ "$mode" = prewarm ]; then
  # A warm kernel for kernels that will start from this directory with this environment
  # (e.g. `cd notebooks && kernel/launch.sh --prewarm HOME && jupyter lab`), starting now.
  key=$(pool_key)
  mkdir -p "$home/pool/ready" "$home/pool/demand"
  touch "$home/pool/demand/$key"
  AULA_KERNEL_POOL_DELAY=0 setsid -f nice -n 19 "$POOL_PYTHON" "$here/pool.py" refill "$home" "$key" "$self" \
    < /dev/null >> "$home/pool/refill.log" 2>&1
  exit 0
fi
if [ "$mode" = serve ]; then
  if [ "${AULA_KERNEL_POOL:-1}" != 0 ] && [ -x "${POOL_PYTHON:-}" ] && [ -f "$home/template/.complete" ]; then
    key=$(pool_key)
    mkdir -p "$home/pool/ready" "$home/pool/demand"
    # A directory and environment seen before (within AULA_KERNEL_POOL_IDLE) will likely ask
    # again (a restart, the next student): keep a spare for it. One-off ones (a test's
    # temporary directory) get none.
    demand=$home/pool/demand/$key
    seen=$(find "$demand" -mmin -$(( ${AULA_KERNEL_POOL_IDLE:-3600} / 60 + 1 )) 2>/dev/null || true)
    touch "$demand"
    if compgen -G "$home/pool/ready/$key.*" > /dev/null; then
      # Claims a spare and refills the pool, or comes back here with --cold.
      exec "$POOL_PYTHON" "$here/pool.py" serve "$home" "$key" "$connection_file" "$self"
    fi
    if [ -n "$seen" ]; then
      # In the background, at the lowest priority, after a delay (pool.py).
      setsid -f nice -n 19 "$POOL_PYTHON" "$here/pool.py" refill "$home" "$key" "$self" \
        < /dev/null >> "$home/pool/refill.log" 2>&1 || true
    fi
  fi
  mode=cold
fi

# The environment cargo sees must be the template's, or it rebuilds (torch-sys's C++ takes
# minutes): drop cargo/rustc settings inherited from whoever started Jupyter (a `cargo run`
# exports CARGO_*), then pin what the dependencies' fingerprints depend on.
env_args=()
while IFS= read -r name; do
  case "$name" in
    CARGO_HOME) ;;
    CARGO_*|RUSTFLAGS|RUSTDOCFLAGS|RUSTC|RUSTC_WRAPPER|RUSTC_WORKSPACE_WRAPPER|RUSTUP_TOOLCHAIN)
      env_args+=(-u "$name") ;;
  esac
done < <(compgen -e)
if [ "$mode" != in-place ] && [ -f "$home/build-env" ]; then
  while IFS= read -r line; do
    case "$line" in
      '') ;;
      -*) env_args+=(-u "${line#-}") ;;
      *) env_args+=("$line") ;;
    esac
  done < "$home/build-env"
fi
for name in LIBTORCH_USE_PYTORCH LIBTORCH_INCLUDE LIBTORCH_LIB LIBTORCH_CXX11_ABI LIBTORCH_STATIC TORCH_CUDA_VERSION; do
  env_args+=(-u "$name")
done

export EVCXR_CONFIG_DIR=$home/config
export LIBTORCH
export LIBTORCH_BYPASS_VERSION_CHECK=0   # as the workspace's .cargo/config.toml
# libtorch for aula; the toolchain's libstd for evcxr's cells (see install.sh).
export LD_LIBRARY_PATH=$LIBTORCH/lib:$RUST_LIB_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PATH=$CARGO_BIN_DIR:$PATH

case "$mode" in
  in-place)
    mkdir -p "$dir"
    export EVCXR_TMPDIR=$dir AULA_INTERRUPT_FILE=$dir/aula-interrupt
    env -0 "${env_args[@]}" > "$dir.env0"   # install.sh pins build-env from it
    exec env "${env_args[@]}" "$EVCXR_JUPYTER" --control_file "$connection_file"
    ;;
  private)
    mkdir -p "$dir"
    ( flock -s 8; "$here/copy-template.sh" "$home/template" "$dir" ) 8< "$home/template.lock"
    export EVCXR_TMPDIR=$dir AULA_INTERRUPT_FILE=$dir/aula-interrupt
    exec env "${env_args[@]}" "$EVCXR_JUPYTER" --control_file "$connection_file"
    ;;
esac

# --cold
run=$home/run
mkdir -p "$run"
# Sweep copies left by kernels that are gone (a reaper killed with the machine); a lock
# younger than a minute may belong to a kernel being set up right now.
while IFS= read -r -d '' lock; do
  if flock -n -x "$lock" true 2>/dev/null; then
    rm -rf "${lock%.lock}" "$lock"
  fi
done < <(find "$run" -maxdepth 1 -name 'k.*.lock' -mmin +1 -print0)

private=$(mktemp -d "$run/k.XXXXXX")
lock=$private.lock
: > "$lock"
# The kernel and every process it starts inherit fd 9 and so hold this shared lock; the
# reaper's exclusive lock is granted once the last of them has exited.
exec 9< "$lock"
flock -s 9
setsid -f bash -c 'flock -x "$1" true; rm -rf "$2" "$1"' aula-kernel-reaper "$lock" "$private" \
  < /dev/null > /dev/null 2>&1 9<&-

# Copy under a shared lock so that install.sh never swaps the template mid-copy.
(
  flock -s 8
  if [ ! -f "$home/template/.complete" ]; then
    echo "aula kernel: no prebuilt template in $home/template; run \`make kernel\`" >&2
    exit 1
  fi
  "$here/copy-template.sh" "$home/template" "$private"
) 8< "$home/template.lock"

# aula's loops stop at the next batch when AULA_INTERRUPT_FILE appears: the proxy creates it when
# Jupyter asks for an interrupt (evcxr's own interrupt kills the process holding the variables).
export EVCXR_TMPDIR=$private AULA_INTERRUPT_FILE=$private/aula-interrupt
# Behind the proxy (as warm kernels are), which starts evcxr on local ports of its own.
exec "$POOL_PYTHON" "$here/proxy.py" "$connection_file" "$private" env "${env_args[@]}" "$EVCXR_JUPYTER" --control_file
