# libmultifrost — the two commands: `make demo` and `make test`.
# Each installs what it needs (cargo crates, Python packages into build/venv).

CARGO   ?= cargo
BUILD   ?= build
PYTHON  ?= python3
VENV    := $(BUILD)/venv
VPY     := $(VENV)/bin/python
LIBDIR  := target/release

.PHONY: all build lib programs demo test test-rust test-c test-interop test-go test-node test-python test-matrix test-soak soak test-sanitize test-fuzz-build bench deps-system header venv clean

all: build

build: lib programs

lib:
	$(CARGO) build --release

# The C++ wrapper's dependencies come from Debian's packages.
deps-system:
	@test -f /usr/include/msgpack.hpp -a -d /usr/include/gtest || { \
	  echo "installing libmsgpack-cxx-dev libgtest-dev (apt)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libmsgpack-cxx-dev libgtest-dev >/dev/null; }

$(BUILD)/build.ninja: CMakeLists.txt $(wildcard tests/*/CMakeLists.txt examples/*/CMakeLists.txt benches/CMakeLists.txt)
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMF_REQUIRE_CPP=ON

programs: lib deps-system $(BUILD)/build.ninja
	cmake --build $(BUILD)

# The main job: a C parent spawns the C math worker, calls it, prints results and stats.
demo: build
	$(BUILD)/math_parent $(BUILD)/math_worker

$(VENV)/.ready: tests/interop/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
	touch $@

venv: $(VENV)/.ready

test: build venv test-rust test-c test-interop test-go test-node test-python test-matrix test-soak test-sanitize test-fuzz-build

test-rust:
	$(CARGO) test --release

test-c: programs venv
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" ctest --test-dir $(BUILD) --output-on-failure --no-tests=error -j2

test-interop: programs venv
	MF_BUILD_DIR=$(CURDIR)/$(BUILD) $(VPY) -m pytest -q tests/interop/test_interop.py

# Every example parent (C, C++, Go, Node, Python, the independent peer)
# against every example worker; needs the Node and Python bindings set up.
test-matrix: programs venv bindings/node/node_modules/.package-lock.json
	$(VPY) -m pip install --quiet --disable-pip-version-check ./bindings/python
	MF_BUILD_DIR=$(CURDIR)/$(BUILD) $(VPY) -m pytest -q tests/interop/test_matrix.py

# Go: cgo links target/release; -count=1 because Go's test cache does not see
# a rebuilt libmultifrost.so. GOFLAGS keeps -buildvcs=false (the tests run
# `go build` inside the checkout).
GO      ?= go
GOENV   := CGO_ENABLED=1 GOFLAGS=-buildvcs=false
# Fails when gofmt fails to run, not only when it lists files: a bare
# `test -z "$$(gofmt -l .)"` passes when gofmt is missing.
GOFMT_CHECK = unformatted=$$(gofmt -l .) && { test -z "$$unformatted" || { echo "gofmt: not formatted: $$unformatted"; false; }; }

test-go: programs
	cd bindings/go && $(GOENV) $(GO) mod download
	cd bindings/go && $(GOFMT_CHECK) && $(GOENV) $(GO) vet ./...
	cd bindings/go && $(GOENV) $(GO) test -race -count=1 ./...
	cd examples/go && $(GOENV) $(GO) mod download
	cd examples/go && $(GOFMT_CHECK) && $(GOENV) $(GO) vet ./...
	cd examples/go && $(GOENV) $(GO) test -race -count=1 ./...

# Node: koffi + msgpackr from the npm registry, then node --test.
bindings/node/node_modules/.package-lock.json: bindings/node/package-lock.json
	cd bindings/node && npm ci --no-audit --no-fund

test-node: programs bindings/node/node_modules/.package-lock.json
	cd bindings/node && npm test

# Python: the binding installed into build/venv (pip fetches setuptools for
# the build); its tests point MULTIFROST_LIB at target/release.
test-python: programs venv
	$(VPY) -m pip install --quiet --disable-pip-version-check ./bindings/python
	$(VPY) -m pytest -q bindings/python/tests

# Soak with faults: callers on a spawned worker that is SIGKILLed at random
# and restarted, plus three parents sharing a connect-mode worker.
SOAK_SECONDS ?= 600
soak: lib
	$(CARGO) build --release --examples
	target/release/examples/soak --seconds $(SOAK_SECONDS)

test-soak: lib
	$(CARGO) build --release --examples
	target/release/examples/soak --seconds 30

# The C tests built with AddressSanitizer + UndefinedBehaviorSanitizer (the
# test programs and the C test worker; LeakSanitizer also sees the Rust
# library's allocations, which go through the same malloc).
test-sanitize: lib deps-system
	cmake -S . -B $(BUILD)-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DMF_TEST_VALGRIND=OFF \
	  -DCMAKE_C_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer" \
	  -DCMAKE_CXX_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer" \
	  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined"
	cmake --build $(BUILD)-asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  ctest --test-dir $(BUILD)-asan --output-on-failure --no-tests=error -j2 -L 'c|cpp'

# The fuzz target compiles on the stable toolchain (running it needs
# cargo-fuzz and nightly; this only keeps it from rotting).
test-fuzz-build:
	$(CARGO) check --manifest-path fuzz/Cargo.toml

# Benchmarks against the raw libzmq floor (not part of `make test`): prints a
# table, writes bench/results.json. Options: make bench BENCH_ARGS="--rounds 9".
bench: build venv bindings/node/node_modules/.package-lock.json
	$(CARGO) build --release --example bench_floor
	$(VPY) -m pip install --quiet --disable-pip-version-check ./bindings/python
	cd benches/go && $(GOENV) $(GO) build -o $(CURDIR)/$(BUILD)/benches/bench_go .
	$(PYTHON) benches/run.py --build-dir $(BUILD) $(BENCH_ARGS)

# Regenerates include/multifrost.h from src/ffi (commit the result).
header:
	MF_UPDATE_HEADER=1 $(CARGO) test --release --test header

clean:
	rm -rf $(BUILD) target
