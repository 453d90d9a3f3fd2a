#!/usr/bin/env bash
# Install a JupyterHub for a whole class (`make hub-setup`, run as root). Idempotent; quick
# when nothing changed.
#
#   hub/setup.sh [--classlist FILE]
#   hub/setup.sh --image     for a single-user container image (hub/docker/Dockerfile): the
#                            shared install without the proxy and without Unix users
#
# Everything the students share is installed once, read-only (root-owned, a+rX), under
# $AULA_HUB_PREFIX (default /opt/aula-hub), so that no student needs anything in root's home:
#   venv/      JupyterHub, JupyterLab, the authenticator, the idle culler (pinned, PyPI)
#   node/      configurable-http-proxy (pinned, npm; the machine's Node 20)
#   rust/      the Rust toolchain (hard links to rustup's), cargo/: CARGO_HOME with the
#              crates' sources (hard links) and evcxr_jupyter
#   libtorch/  (hard links to the instructor's), cache/: the ImageNet weights, the feature
#              cache, the precision calibration (hard links), and the kernel home
#              (cache/kernel/src-*/: the template built for this location)
#   data/      the data set (hard links)
#   src/       a snapshot of this checkout: aula's sources (the kernel's `:dep`), kernel/,
#              hub/, notebooks/ (what students get a copy of)
#   state/     the hub's own database, cookie secret (root only, 0700)
# Hard links cost no disk and keep root's originals untouched: every writer in aula replaces
# files (write + rename), it never writes into them.
#
# The kernel template is built for these paths: cargo fingerprints the absolute paths of the
# crates' sources (CARGO_HOME), libtorch and aula, so a template built under ~/.cache would
# recompile everything in every student's first kernel. The first build takes 4–15 min on 2
# cores; later ones only recompile what changed.
#
# Then the class: one Unix user per name in the class list (home 0700), see hub/README.md.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=${AULA_HUB_PREFIX:-/opt/aula-hub}
cache=${AULA_CACHE:-$HOME/.cache/aula}
classlist=${AULA_HUB_CLASSLIST:-$repo/hub/classlist.txt}
image=
while [ $# -gt 0 ]; do
  case "$1" in
    --classlist) classlist=$2; shift 2 ;;
    --image) image=1; shift ;;
    *) echo "usage: $0 [--classlist FILE | --image]" >&2; exit 2 ;;
  esac
done

# Pinned versions (checked together here, 2026-12-02).
PY_PINS=(
  jupyterhub==5.4.6
  jupyterlab==4.6.6
  jupyterhub-firstuseauthenticator==1.1.1
  jupyterhub-idle-culler==2.0.0
  jupyter_client==8.10.0
  requests==2.34.2
  websocket-client==1.9.2
  psutil==7.2.2
)
CHP_VERSION=5.3.0

say() { echo "hub setup: $*"; }
die() { echo "hub setup: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root: it creates one Unix user per student and installs into $prefix"
if [ -z "$image" ]; then
  [ -f "$classlist" ] || die "no class list at $classlist (one user name a line; 'NAME admin' for the instructor)"
  command -v node > /dev/null && command -v npm > /dev/null || die "node and npm are needed (configurable-http-proxy)"
  node_major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$node_major" -ge 18 ] || die "node $node_major is too old for configurable-http-proxy $CHP_VERSION (needs ≥ 18)"
fi

link_tree() {  # SRC DST: DST gets hard links to SRC's files (new ones only); never deletes
  mkdir -p "$2"
  cp -alu "$1/." "$2/"
}

mkdir -p "$prefix"
chmod 755 "$prefix"
exec 7> "$prefix/.setup.lock"
flock 7

# --- 1. Python: JupyterHub, JupyterLab, the authenticator, the culler -------------------
# Every student's server runs this venv's Python, so the interpreter it links to must be
# reachable by everyone: the system's, not one under root's home (pyenv).
python=${AULA_HUB_PYTHON:-/usr/bin/python3}
runuser -u nobody -- "$python" -c 'import venv, ensurepip' 2> /dev/null || \
  die "$python cannot be run by other users or lacks venv (apt-get install python3-venv; or set AULA_HUB_PYTHON)"
venv=$prefix/venv
want="${PY_PINS[*]} $(readlink -f "$python")"
if [ "$(sed -n 1p "$venv/.complete" 2>/dev/null)" != "$want" ]; then
  say "installing ${PY_PINS[*]} into $venv ($python)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --disable-pip-version-check --quiet "${PY_PINS[@]}"
  "$venv/bin/python" -c 'import jupyterhub, jupyterlab, firstuseauthenticator, jupyterhub_idle_culler, websocket, psutil'
  "$venv/bin/python" -m pip freeze --disable-pip-version-check > "$venv/requirements.lock"
  echo "$want" > "$venv/.complete"
fi

# --- 2. configurable-http-proxy from npm ---------------------------------------------------
chp=$prefix/node/node_modules/.bin/configurable-http-proxy
if [ -z "$image" ] && { [ ! -x "$chp" ] || [ "$("$chp" --version 2>/dev/null)" != "$CHP_VERSION" ]; }; then
  say "installing configurable-http-proxy@$CHP_VERSION (npm) into $prefix/node"
  mkdir -p "$prefix/node"
  npm install --prefix "$prefix/node" --no-audit --no-fund --loglevel=error "configurable-http-proxy@$CHP_VERSION"
  [ "$("$chp" --version)" = "$CHP_VERSION" ] || die "configurable-http-proxy did not install"
fi

# --- 3. Rust: the toolchain, CARGO_HOME with the crates' sources, evcxr_jupyter ---------------
# Hard links (cp -al) of what rustup installed: no disk, and a rustup update replaces files,
# it never rewrites ours.
sysroot=$(rustc --print sysroot)
if [ ! -x "$prefix/rust/bin/rustc" ] || [ "$("$prefix/rust/bin/rustc" -vV)" != "$(rustc -vV)" ]; then
  say "linking the Rust toolchain $sysroot → $prefix/rust"
  rm -rf "$prefix/rust.new"
  cp -al "$sysroot" "$prefix/rust.new"
  rm -rf "$prefix/rust"
  mv "$prefix/rust.new" "$prefix/rust"
fi
host_cargo_home=${CARGO_HOME:-$HOME/.cargo}
mkdir -p "$prefix/cargo/bin"
# evcxr_jupyter: root's (from `make kernel`), else built here (6–15 min on 2 cores, once).
if [ -x "$host_cargo_home/bin/evcxr_jupyter" ]; then
  cmp -s "$host_cargo_home/bin/evcxr_jupyter" "$prefix/cargo/bin/evcxr_jupyter" || \
    cp -p "$host_cargo_home/bin/evcxr_jupyter" "$prefix/cargo/bin/evcxr_jupyter"
  cp -p "$host_cargo_home/.crates.toml" "$host_cargo_home/.crates2.json" "$prefix/cargo/"
elif [ ! -x "$prefix/cargo/bin/evcxr_jupyter" ]; then
  say "building evcxr_jupyter 0.22.0 into $prefix/cargo (6–15 min on 2 cores, once)"
  cargo install --locked --root "$prefix/cargo" evcxr_jupyter@0.22.0
fi
# The registry (index, .crate files, unpacked sources): hard links for what is new.
[ -d "$host_cargo_home/registry" ] && link_tree "$host_cargo_home/registry" "$prefix/cargo/registry"

# --- 4. libtorch, weights, features, the data set ------------------------------------------
[ -e "$repo/.libtorch/lib/libtorch_cpu.so" ] || die "no libtorch at $repo/.libtorch (run \`make libtorch\`)"
link_tree "$(readlink -f "$repo/.libtorch")" "$prefix/libtorch"
for d in weights features precision; do
  if [ -d "$cache/$d" ]; then link_tree "$cache/$d" "$prefix/cache/$d"; fi
done
[ -f "$prefix/cache/weights/vgg16_imagenet_notop.safetensors" ] || die "no VGG16 weights in $cache/weights (run \`make weights\`)"
data=${AULA_DATA:-$(cd "$repo/.." && pwd)/shared/data/cats_and_dogs_small}
[ -d "$data/train" ] || die "no data set at $data (set AULA_DATA)"
link_tree "$data" "$prefix/data/cats_and_dogs_small"

# --- 5. a snapshot of the checkout ----------------------------------------------------------
# Tracked and new files (not ignored ones: no target/, no out/), with their modification
# times: cargo and the template's fingerprint see the same sources as here.
say "snapshot of $repo → $prefix/src"
rm -rf "$prefix/src.new"
mkdir -p "$prefix/src.new"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard | \
   while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done | \
   xargs -0 cp -a --parents -t "$prefix/src.new")
ln -sfn "$prefix/libtorch" "$prefix/src.new/.libtorch"
if [ -d "$prefix/src" ] && diff -rq --no-dereference "$prefix/src" "$prefix/src.new" > /dev/null; then
  rm -rf "$prefix/src.new"
else
  rm -rf "$prefix/src.old"
  [ -d "$prefix/src" ] && mv "$prefix/src" "$prefix/src.old"
  mv "$prefix/src.new" "$prefix/src"
  rm -rf "$prefix/src.old"
fi

# --- 6. the kernel, built for these paths ------------------------------------------------
# The environment students' kernels will have: our toolchain first, our CARGO_HOME, nothing
# from rustup (its proxies would pick root's toolchain).
hub_env=(env -u RUSTUP_TOOLCHAIN -u RUSTUP_HOME -u CARGO_TARGET_DIR
  PATH="$prefix/rust/bin:$prefix/cargo/bin:/usr/local/bin:/usr/bin:/bin"
  CARGO_HOME="$prefix/cargo" AULA_CACHE="$prefix/cache"
  JUPYTER_DATA_DIR="$venv/share/jupyter")
say "kernel template for $prefix (kernel/install.sh; 4–15 min the first time)"
nice -n 10 "${hub_env[@]}" bash "$prefix/src/kernel/install.sh" --python "$venv/bin/python"
# The kernelspec: the per-student launcher in front of kernel/launch.sh (hub/kernel-launch.sh).
"$venv/bin/python" - "$venv/share/jupyter/kernels/aula/kernel.json" "$prefix" <<'EOF'
import json, os, sys
path, prefix = sys.argv[1:]
spec = json.load(open(path))
home = spec["metadata"]["aula"]["kernel_home"]
spec["argv"] = [f"{prefix}/src/hub/kernel-launch.sh", home, "{connection_file}"]
with open(path + ".tmp", "w") as f:
    json.dump(spec, f, indent=2, ensure_ascii=False)
    f.write("\n")
os.replace(path + ".tmp", path)
print(f"hub setup: kernelspec {path} → shared kernel home {home}")
EOF
# Remove warm kernels and private copies root's own install run left in the shared home: it
# is read-only for students, their kernels live in their homes.
shared_home=$(dirname "$(ls -d "$prefix"/cache/kernel/src-*/template/.complete | head -n 1)")
shared_home=${shared_home%/template}

# --- 7. read-only for everyone but root ------------------------------------------------
mkdir -p "$prefix/state"
chmod 700 "$prefix/state"
chmod -R go-w "$prefix"
mkdir -p "$prefix/node"
chmod -R a+rX "$prefix/venv" "$prefix/node" "$prefix/rust" "$prefix/cargo" "$prefix/libtorch" \
  "$prefix/cache" "$prefix/data" "$prefix/src"
echo "$shared_home" > "$prefix/kernel-home"

# --- 8. the class: one Unix user per student -----------------------------------------------
[ -n "$image" ] || "$venv/bin/python" "$repo/hub/classlist.py" "$classlist" --create-users
say "ready: $prefix (kernel home $shared_home); start it with \`make hub\`"
