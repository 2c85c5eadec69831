# The two commands of the README, and a few helpers. Everything is built by
# CMake in $(BUILD); this file only installs what is missing and calls it.
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release

.PHONY: all build run test deps-build deps-test deps-run clean

all: build

deps-build:
	@scripts/deps.sh build
deps-test:
	@scripts/deps.sh build test
deps-run:
	@scripts/deps.sh build run

build: deps-build
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# The main job: optim lab's default report (runs/default-<timestamp>/report.html), about a minute or two.
run: deps-run build
	$(BUILD)/tools/optim lab

# C and Python suites.
test: deps-test build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

clean:
	rm -rf $(BUILD)
