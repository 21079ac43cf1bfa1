# libmultifrost — the two commands: `make demo` and `make test`.
# Each installs what it needs (cargo crates, Python packages into build/venv).

CARGO   ?= cargo
BUILD   ?= build
PYTHON  ?= python3
VENV    := $(BUILD)/venv
VPY     := $(VENV)/bin/python
OUT     := target/release

# The release, from Cargo.toml; the SONAME's number is the ABI version (build.rs).
VERSION   := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
SOVERSION := 0
SONAME    := libmultifrost.so.$(SOVERSION)
REALNAME  := libmultifrost.so.$(SOVERSION).$(word 2,$(subst ., ,$(VERSION))).$(word 3,$(subst ., ,$(VERSION)))

# `make install`: the usual GNU variables.
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DATADIR    ?= $(PREFIX)/share
STRIP      ?= strip
empty      :=
space      := $(empty) $(empty)
# What libmultifrost.a needs besides itself (`cargo rustc -- --print
# native-static-libs`; libzmq inside is C++).
STATIC_LIBS := -lstdc++ -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc

.PHONY: all build lib programs demo demo-programs test test-rust test-c test-interop test-go test-node test-python test-matrix test-soak test-install soak test-sanitize test-fuzz-build bench deps-system header venv install uninstall wheel node-pack clean

all: build

build: lib programs

# Also the SONAME link that in-tree programs load (build.rs sets the SONAME).
lib:
	$(CARGO) build --release
	ln -sfn libmultifrost.so $(OUT)/$(SONAME)

# The C++ wrapper's dependencies come from Debian's packages.
deps-system:
	@test -f /usr/include/msgpack.hpp -a -d /usr/include/gtest -a -x "$$(command -v valgrind)" || { \
	  echo "installing libmsgpack-cxx-dev libgtest-dev valgrind (apt)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libmsgpack-cxx-dev libgtest-dev valgrind >/dev/null; }

$(BUILD)/build.ninja: CMakeLists.txt $(wildcard tests/*/CMakeLists.txt examples/*/CMakeLists.txt benches/CMakeLists.txt)
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMF_REQUIRE_CPP=ON

programs: lib deps-system $(BUILD)/build.ninja
	cmake --build $(BUILD)

# The main job: a C parent spawns the C math worker, calls it, prints results and stats.
# It builds only the library (not the CLI) and the C examples (no tests, no
# benches, no C++, no system packages): a separate CMake tree configured with
# MF_EXAMPLES_ONLY.
demo: demo-programs
	$(BUILD)/demo/math_parent $(BUILD)/demo/math_worker

demo-programs:
	$(CARGO) build --release --lib
	ln -sfn libmultifrost.so $(OUT)/$(SONAME)
	cmake -S . -B $(BUILD)/demo -G Ninja -DCMAKE_BUILD_TYPE=Release -DMF_EXAMPLES_ONLY=ON >/dev/null
	cmake --build $(BUILD)/demo --target math_worker math_parent connect_parent

$(VENV)/.ready: tests/interop/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
	touch $@

venv: $(VENV)/.ready

test: build venv test-rust test-c test-interop test-go test-node test-python test-matrix test-soak test-install test-sanitize test-fuzz-build

test-rust:
	$(CARGO) test --release

test-c: programs venv
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" ctest --test-dir $(BUILD) --output-on-failure --no-tests=error -j2

test-interop: programs venv
	MF_BUILD_DIR=$(CURDIR)/$(BUILD) $(VPY) -m pytest -q tests/interop/test_interop.py

# Every example parent (C, C++, Go, Node, Python, the independent peer)
# against every example worker; needs the Node and Python bindings set up.
test-matrix: programs venv bindings/node/node_modules/.package-lock.json $(BUILD)/pkgconfig/multifrost.pc
	$(VPY) -m pip install --quiet --disable-pip-version-check ./bindings/python
	PKG_CONFIG_PATH=$(CURDIR)/$(BUILD)/pkgconfig MF_BUILD_DIR=$(CURDIR)/$(BUILD) $(VPY) -m pytest -q tests/interop/test_matrix.py

# Go: the binding finds the library with `#cgo pkg-config: multifrost`; here
# PKG_CONFIG_PATH points at build/pkgconfig/multifrost.pc, which names the
# checkout's include/ and target/release (with an rpath), so the tests use the
# in-tree build and nothing installed. -count=1 because Go's test cache does
# not see a rebuilt libmultifrost.so. GOFLAGS keeps -buildvcs=false (the tests
# run `go build` inside the checkout).
GO      ?= go
GOENV   := CGO_ENABLED=1 GOFLAGS=-buildvcs=false PKG_CONFIG_PATH=$(CURDIR)/$(BUILD)/pkgconfig
# Fails when gofmt fails to run, not only when it lists files: a bare
# `test -z "$$(gofmt -l .)"` passes when gofmt is missing.
GOFMT_CHECK = unformatted=$$(gofmt -l .) && { test -z "$$unformatted" || { echo "gofmt: not formatted: $$unformatted"; false; }; }

# multifrost.pc for the checkout itself (what `make install` writes, with the
# checkout's paths).
$(BUILD)/pkgconfig/multifrost.pc: packaging/multifrost.pc.in Cargo.toml
	@mkdir -p $(@D)
	sed -e 's|@PREFIX@|$(CURDIR)|' -e 's|@LIBDIR@|$(CURDIR)/$(OUT)|' \
	    -e 's|@INCLUDEDIR@|$(CURDIR)/include|' -e 's|@VERSION@|$(VERSION)|' \
	    -e 's|@STATIC_LIBS@|$(STATIC_LIBS)|' $< > $@

test-go: programs $(BUILD)/pkgconfig/multifrost.pc
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
test-sanitize: lib deps-system venv
	cmake -S . -B $(BUILD)-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DMF_TEST_VALGRIND=OFF \
	  -DCMAKE_C_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer" \
	  -DCMAKE_CXX_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer" \
	  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined"
	cmake --build $(BUILD)-asan
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  ctest --test-dir $(BUILD)-asan --output-on-failure --no-tests=error -j2 -L 'c|cpp'

# The fuzz target compiles on the stable toolchain (running it needs
# cargo-fuzz and nightly; this only keeps it from rotting).
test-fuzz-build:
	$(CARGO) check --manifest-path fuzz/Cargo.toml

# Benchmarks against the raw libzmq floor (not part of `make test`): prints a
# table, writes bench/results.json. Options: make bench BENCH_ARGS="--rounds 9".
bench: build venv bindings/node/node_modules/.package-lock.json $(BUILD)/pkgconfig/multifrost.pc
	$(CARGO) build --release --example bench_floor
	$(VPY) -m pip install --quiet --disable-pip-version-check ./bindings/python
	cd benches/go && $(GOENV) $(GO) build -o $(CURDIR)/$(BUILD)/benches/bench_go .
	$(PYTHON) benches/run.py --build-dir $(BUILD) $(BENCH_ARGS)

# Regenerates include/multifrost.h from src/ffi (commit the result).
header:
	MF_UPDATE_HEADER=1 $(CARGO) test --release --test header

# Installs into $(DESTDIR)$(PREFIX) (default /usr/local): the shared library
# ($(REALNAME), SONAME $(SONAME), and the libmultifrost.so link), the static
# library, both headers, multifrost.pc, the CMake package
# (find_package(multifrost)), the CLI, and the Go binding's source (the module
# a Go program points a `replace` at). Binaries are stripped: the build tree
# keeps its debug info for perf and debuggers. After installing into a system
# directory, run `ldconfig`.
CMAKEDIR := $(LIBDIR)/cmake/multifrost
GOSRCDIR := $(DATADIR)/multifrost/go
SUBST     = sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
              -e 's|@VERSION@|$(VERSION)|' -e 's|@SOVERSION@|$(SOVERSION)|' -e 's|@STATIC_LIBS@|$(STATIC_LIBS)|' \
              -e 's|@STATIC_CMAKE_LIBS@|$(subst $(space),;,$(patsubst -l%,%,$(filter-out -lc,$(STATIC_LIBS))))|'
GO_SOURCES = $(filter-out %_test.go,$(wildcard bindings/go/*.go)) bindings/go/shim.c bindings/go/shim.h \
             bindings/go/go.mod bindings/go/go.sum bindings/go/README.md

# NO_BUILD=1 installs what is built without running cargo (for `sudo make
# install` after a `make build` as yourself: root need not have cargo).
install: $(if $(NO_BUILD),,lib)
	@test -f $(OUT)/libmultifrost.so -a -f $(OUT)/libmultifrost.a -a -f $(OUT)/multifrost || \
	  { echo "nothing built in $(OUT): run make build first" >&2; exit 1; }
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(CMAKEDIR) \
	  $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(GOSRCDIR)
	install -m 755 $(OUT)/libmultifrost.so $(DESTDIR)$(LIBDIR)/$(REALNAME)
	$(STRIP) --strip-unneeded $(DESTDIR)$(LIBDIR)/$(REALNAME)
	ln -sfn $(REALNAME) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sfn $(SONAME) $(DESTDIR)$(LIBDIR)/libmultifrost.so
	install -m 644 $(OUT)/libmultifrost.a $(DESTDIR)$(LIBDIR)/libmultifrost.a
	$(STRIP) --strip-debug $(DESTDIR)$(LIBDIR)/libmultifrost.a
	install -m 755 $(OUT)/multifrost $(DESTDIR)$(BINDIR)/multifrost
	$(STRIP) $(DESTDIR)$(BINDIR)/multifrost
	install -m 644 include/multifrost.h include/multifrost.hpp $(DESTDIR)$(INCLUDEDIR)/
	$(SUBST) packaging/multifrost.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/multifrost.pc
	$(SUBST) packaging/multifrostConfig.cmake.in > $(DESTDIR)$(CMAKEDIR)/multifrostConfig.cmake
	$(SUBST) packaging/multifrostConfigVersion.cmake.in > $(DESTDIR)$(CMAKEDIR)/multifrostConfigVersion.cmake
	install -m 644 $(GO_SOURCES) $(DESTDIR)$(GOSRCDIR)/

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/$(REALNAME) $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libmultifrost.so \
	  $(DESTDIR)$(LIBDIR)/libmultifrost.a $(DESTDIR)$(BINDIR)/multifrost \
	  $(DESTDIR)$(INCLUDEDIR)/multifrost.h $(DESTDIR)$(INCLUDEDIR)/multifrost.hpp \
	  $(DESTDIR)$(LIBDIR)/pkgconfig/multifrost.pc
	rm -rf $(DESTDIR)$(CMAKEDIR) $(DESTDIR)$(DATADIR)/multifrost

# The Python wheel in $(BUILD)/dist: setup.py bundles a fresh stripped copy
# of the library (never one an earlier build/ left), and auditwheel's verdict
# on its symbol versions gives the manylinux tag (packaging/tag_wheel.py).
wheel: lib venv
	rm -rf $(BUILD)/dist/multifrost-*.whl
	$(VPY) -m pip install --quiet --disable-pip-version-check auditwheel wheel
	$(VPY) -m pip wheel --quiet --disable-pip-version-check --no-deps -w $(BUILD)/dist ./bindings/python
	$(VPY) packaging/tag_wheel.py $(BUILD)/dist/multifrost-$(VERSION)-py3-none-linux_*.whl

# The npm tarball with lib/libmultifrost.so inside (its prepack step strips a
# copy of target/release/libmultifrost.so into lib/), in $(BUILD)/dist.
node-pack: lib
	mkdir -p $(BUILD)/dist
	cd bindings/node && npm pack --silent --pack-destination $(CURDIR)/$(BUILD)/dist

# Installs into a temporary prefix and uses that from projects outside the
# checkout, one per language (tests/install/run.sh).
test-install: programs venv
	MAKE="$(MAKE)" BUILD_DIR=$(CURDIR)/$(BUILD) VPY=$(CURDIR)/$(VPY) tests/install/run.sh

clean:
	rm -rf $(BUILD) target
