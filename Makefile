# dsinfer: every target does its own set-up on a fresh Debian 12 machine (packages, configure, build).
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
FUZZ_SECONDS ?= 15
MODEL ?=
SERVE_FLAGS ?=
CMAKE_FLAGS ?=
# The CUDA backend compiles wherever nvcc is (its tests skip without a GPU); DSI_CUDA=OFF leaves it out.
NVCC ?= $(firstword $(wildcard /usr/local/cuda/bin/nvcc) $(shell command -v nvcc 2>/dev/null))
DSI_CUDA ?= $(if $(NVCC),ON,OFF)
CUDA_FLAGS = -DDSI_CUDA=$(DSI_CUDA) $(if $(filter ON,$(DSI_CUDA)),-DCMAKE_CUDA_COMPILER=$(NVCC) -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)

.PHONY: all setup configure build test serve fuzz clean bench

all: build

setup:
	@scripts/setup.sh

$(BUILD)/build.ninja:
	@scripts/setup.sh
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER_LAUNCHER=ccache $(CUDA_FLAGS) $(CMAKE_FLAGS)

configure: $(BUILD)/build.ninja

build: setup configure
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(FUZZ_SECONDS)

# libFuzzer targets (clang), run for a bounded time. Longer by hand: make fuzz FUZZ_SECONDS=600
fuzz: setup
	@scripts/run-fuzz.sh $(FUZZ_SECONDS)

# The main job: the OpenAI-compatible server. Without MODEL=DIR it serves the demo model (random weights).
serve: build
	$(BUILD)/apps/dsinfer/dsinfer serve $(if $(MODEL),--model $(MODEL)) $(SERVE_FLAGS)

bench: build
	$(BUILD)/apps/dsinfer/dsinfer bench --shape ../shared/bench/shapes/deepseek-v2-lite.json --out bench/results

clean:
	rm -rf $(BUILD) build-fuzz
