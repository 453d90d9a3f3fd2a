# Sourced by every script that runs as a student (singleuser.sh, kernel-launch.sh,
# distribute.py's caller): where the shared install is and what the student's own state is.
# The environment must be the same for every kernel (the warm-kernel pool matches kernels
# by their environment), so it is set here and nowhere else.
AULA_HUB_PREFIX=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export AULA_HUB_PREFIX
# The toolchain and CARGO_HOME the shared template was built with (same absolute paths, or
# cargo recompiles everything); read-only: cargo works offline without writing there.
export PATH=$AULA_HUB_PREFIX/venv/bin:$AULA_HUB_PREFIX/rust/bin:/usr/local/bin:/usr/bin:/bin
export CARGO_HOME=$AULA_HUB_PREFIX/cargo
unset RUSTUP_HOME RUSTUP_TOOLCHAIN CARGO_TARGET_DIR
# Per-student: checkpoints, new feature files, the kernel home. The shared weights and
# features are reached through links in it (see singleuser.sh).
export AULA_CACHE=$HOME/.cache/aula
export AULA_DATA=$AULA_HUB_PREFIX/data/cats_and_dogs_small
export AULA_ASSETS=$AULA_HUB_PREFIX/src/assets
# The Jupyter data dir with the "Rust · aula" kernelspec is the venv's own (share/jupyter).
