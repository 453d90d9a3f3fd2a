#!/usr/bin/env bash
# Start one "Rust · aula" kernel (the kernelspec's argv runs this).
#
#   kernel/launch.sh KERNEL_HOME CONNECTION_FILE
#   kernel/launch.sh --in-place DIR KERNEL_HOME CONNECTION_FILE   (install.sh: build the template)
#
# KERNEL_HOME (${AULA_CACHE:-~/.cache/aula}/kernel, written by kernel/install.sh) holds
#   template/    a prebuilt evcxr build directory (EVCXR_TMPDIR) where aula and all its
#                dependencies are already compiled;
#   config/      EVCXR_CONFIG_DIR: init.evcxr (the `:dep aula` line) and prelude.rs (`use` lines);
#   kernel.env   where evcxr_jupyter, cargo and libtorch are;
#   build-env    the variables cargo fingerprints (build scripts' rerun-if-env-changed,
#                `env!` of dependencies), with the values the template was built with;
#   run/         one private copy of the template per running kernel.
#
# evcxr rebuilds nothing that the template already holds only when the crate, the flags and
# those variables are the same, and two kernels must never share one EVCXR_TMPDIR, so each
# kernel gets run/k.XXXXXX: the template's immutable artifacts (rlibs, rmeta) hard-linked,
# everything cargo, rustc or evcxr rewrite in place copied. The directory is removed when
# the kernel exits, however it exits (a detached reaper waits on a lock the kernel holds).
set -euo pipefail

in_place=
if [ "${1:-}" = --in-place ]; then
  in_place=$2
  shift 2
fi
if [ $# -ne 2 ]; then
  echo "usage: $0 [--in-place DIR] KERNEL_HOME CONNECTION_FILE" >&2
  exit 2
fi
home=$1
connection_file=$2

if [ ! -f "$home/kernel.env" ]; then
  echo "aula kernel: $home/kernel.env is missing; run \`make kernel\` in the aula checkout" >&2
  exit 1
fi
# EVCXR_JUPYTER, CARGO_BIN_DIR, LIBTORCH
# shellcheck source=/dev/null
source "$home/kernel.env"

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
if [ -z "$in_place" ] && [ -f "$home/build-env" ]; then
  while IFS= read -r line; do
    case "$line" in
      '') ;;
      -*) env_args+=(-u "${line#-}") ;;
      *) env_args+=("$line") ;;
    esac
  done < "$home/build-env"
fi

export EVCXR_CONFIG_DIR=$home/config
export LIBTORCH
export LIBTORCH_BYPASS_VERSION_CHECK=0   # as the workspace's .cargo/config.toml
export LD_LIBRARY_PATH=$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PATH=$CARGO_BIN_DIR:$PATH
for name in LIBTORCH_USE_PYTORCH LIBTORCH_INCLUDE LIBTORCH_LIB LIBTORCH_CXX11_ABI LIBTORCH_STATIC TORCH_CUDA_VERSION; do
  env_args+=(-u "$name")
done

if [ -n "$in_place" ]; then
  # Building the template: evcxr works in DIR itself; record the environment it saw.
  mkdir -p "$in_place"
  export EVCXR_TMPDIR=$in_place
  env -0 "${env_args[@]}" > "$in_place.env0"
  exec env "${env_args[@]}" "$EVCXR_JUPYTER" --control_file "$connection_file"
fi

template=$home/template
run=$home/run
mkdir -p "$run"

# Sweep directories left by kernels that are gone (a reaper killed with the machine).
for lock in "$run"/k.*.lock; do
  [ -e "$lock" ] || continue
  dir=${lock%.lock}
  if flock -n -x "$lock" true 2>/dev/null; then
    rm -rf "$dir" "$lock"
  fi
done

private=$(mktemp -d "$run/k.XXXXXX")
lock=$private.lock
: > "$lock"
# The kernel and every process it starts inherit fd 9 and so hold this shared lock;
# the reaper's exclusive lock is granted once the last of them has exited.
exec 9< "$lock"
flock -s 9
setsid -f bash -c 'flock -x "$1" true; rm -rf "$2" "$1"' aula-kernel-reaper "$lock" "$private" \
  < /dev/null > /dev/null 2>&1 9<&-

# The copy, under a shared lock so that install.sh never swaps the template mid-copy.
(
  flock -s 8
  if [ ! -f "$template/.complete" ]; then
    echo "aula kernel: no prebuilt template in $template; run \`make kernel\`" >&2
    exit 1
  fi
  "$(dirname "$0")/copy-template.sh" "$template" "$private"
) 8< "$home/template.lock"

export EVCXR_TMPDIR=$private
exec env "${env_args[@]}" "$EVCXR_JUPYTER" --control_file "$connection_file"
