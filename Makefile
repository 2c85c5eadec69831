# The two commands of the README, and a few helpers. Everything is built by
# CMake in $(BUILD); this file only installs what is missing and calls it.
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release

.PHONY: all build run test mutate deps-build deps-test deps-run clean

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

# C and Python suites. CI=true (set by .ci/run, or `make test CI=true`) turns a test skipped for a
# missing dependency into a failure; it reaches CMake and the tests through the environment. The first
# line printed lists the CPU paths the suites exercise on this machine.
test: deps-test build
	@$(BUILD)/tests/optim_tests cpu_paths | sed -n 's/^  //p'
	cd $(BUILD) && CI=$(CI) ctest --output-on-failure -j $(JOBS)

# Standing mutation testing, not part of test (tens of minutes): every mutant of
# scripts/mutants/mutants.txt applied to a copy of the tree in build-mutate/, rebuilt, and
# checked by its tests; a table of what killed each, non-zero exit if one survived or went
# stale. MUTATE_ARGS: --only ID,..., --full, --check (docs/TESTING.md).
mutate: deps-test
	@/usr/bin/python3 scripts/mutants/run.py $(MUTATE_ARGS)

clean:
	rm -rf $(BUILD)
