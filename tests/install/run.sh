#!/usr/bin/env bash
# make test-install: install into a temporary prefix, then use it from
# projects in temporary directories outside the checkout, one per language,
# each following the README's "Use it from your own project" steps and each
# calling a worker written in another language: add(1, 2) == 3.
#
# Environment (set by the Makefile): MAKE, BUILD_DIR (the CMake build, with
# math_worker), VPY (the test venv's python, for building the wheel).
set -u -o pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
MAKE=${MAKE:-make}
BUILD_DIR=${BUILD_DIR:-$REPO/build}
VPY=${VPY:-$REPO/build/venv/bin/python}
C_WORKER=${C_WORKER:-$BUILD_DIR/math_worker}
MAX_SO_BYTES=$((3 * 1024 * 1024))
MAX_WHEEL_BYTES=$((5 * 1024 * 1024))

WORK=$(mktemp -d /tmp/mf-install-test.XXXXXX)
PREFIX=$WORK/prefix
trap 'rm -rf "$WORK"' EXIT
# No environment variable may help the installed copies find the library.
unset MULTIFROST_LIB LD_LIBRARY_PATH PKG_CONFIG_PATH CGO_CFLAGS CGO_LDFLAGS PYTHONPATH
# (HOME stays: every worker here is spawned, so the registry is never used.)
cd "$WORK" # every program runs outside the checkout

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; [ -f "$WORK/log" ] && tail -n 30 "$WORK/log" | sed 's/^/     /'; }
# (No `grep -q` after a pipe: with pipefail, the writer's SIGPIPE would count.)
# step NAME CMD...: runs CMD with its output in $WORK/log; reports ok/FAIL.
step() {
  local name=$1
  shift
  if "$@" >"$WORK/log" 2>&1; then ok "$name"; else fail "$name"; return 1; fi
}
# expect NAME WANT CMD...: CMD's last output line must be WANT.
expect() {
  local name=$1 want=$2
  shift 2
  if "$@" >"$WORK/log" 2>&1 && [ "$(tail -n 1 "$WORK/log")" = "$want" ]; then
    ok "$name"
  else
    fail "$name (wanted '$want')"
  fi
}

need_tools() {
  local missing=()
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  command -v readelf >/dev/null || missing+=(binutils)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}
need_tools

# --- make install into a temporary prefix --------------------------------
step "make install PREFIX=$PREFIX" "$MAKE" -C "$REPO" --no-print-directory install PREFIX="$PREFIX" || {
  echo "install: $passed passed, $((failed + 1)) failed (nothing else can run)"
  exit 1
}
LIBDIR=$PREFIX/lib
SO=$(readlink -f "$LIBDIR/libmultifrost.so")

soname_is_versioned() {
  readelf -d "$SO" | grep 'SONAME.*\[libmultifrost\.so\.0\]' >/dev/null &&
    [ "$(readlink "$LIBDIR/libmultifrost.so")" = libmultifrost.so.0 ] &&
    [ "$(basename "$SO")" = "$(basename "$(readlink -f "$LIBDIR/libmultifrost.so.0")")" ] &&
    [[ $(basename "$SO") =~ ^libmultifrost\.so\.0\.[0-9]+\.[0-9]+$ ]]
}
step "SONAME libmultifrost.so.0, file $(basename "$SO"), links .so -> .so.0 -> it" soname_is_versioned
so_bytes=$(stat -c %s "$SO")
small_and_stripped() { [ "$so_bytes" -le "$MAX_SO_BYTES" ] && ! readelf -S "$SO" | grep '\.debug_' >/dev/null; }
step "installed .so is $so_bytes bytes (<= $MAX_SO_BYTES), no debug sections" small_and_stripped
installed_files() {
  for f in include/multifrost.h include/multifrost.hpp lib/libmultifrost.a lib/pkgconfig/multifrost.pc \
    lib/cmake/multifrost/multifrostConfig.cmake lib/cmake/multifrost/multifrostConfigVersion.cmake \
    bin/multifrost share/multifrost/go/go.mod; do
    [ -e "$PREFIX/$f" ] || { echo "missing $f"; return 1; }
  done
}
step "headers, archive, pkg-config, CMake package, CLI, Go source installed" installed_files
expect "installed CLI: multifrost --version" "multifrost $(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -n1)" \
  "$PREFIX/bin/multifrost" --version

destdir_round_trip() {
  local d=$WORK/destdir
  "$MAKE" -C "$REPO" --no-print-directory install DESTDIR="$d" PREFIX=/opt/mf LIBDIR=/opt/mf/lib64 &&
    [ -f "$d/opt/mf/lib64/libmultifrost.a" ] &&
    grep -q '^libdir=/opt/mf/lib64$' "$d/opt/mf/lib64/pkgconfig/multifrost.pc" &&
    "$MAKE" -C "$REPO" --no-print-directory uninstall DESTDIR="$d" PREFIX=/opt/mf LIBDIR=/opt/mf/lib64 &&
    [ -z "$(find "$d" -type f -o -type l)" ]
}
step "DESTDIR + LIBDIR install, then uninstall leaves no file" destdir_round_trip

# --- the Python wheel: a worker for the other languages, and a parent -----
WHEEL=
build_wheel() {
  "$MAKE" -C "$REPO" --no-print-directory wheel && WHEEL=$(ls "$BUILD_DIR"/dist/multifrost-*.whl | head -n1)
}
step "make wheel" build_wheel
VENV=$WORK/venv
PYW=$WORK/py-worker
mkdir -p "$PYW"
cat >"$PYW/worker.py" <<'EOF'
from multifrost import ChildWorker

class Math(ChildWorker):
    def add(self, a, b):
        return a + b

if __name__ == "__main__":
    Math().run()
EOF
if [ -n "$WHEEL" ]; then
  wheel_bytes=$(stat -c %s "$WHEEL")
  wheel_tag=$(basename "$WHEEL" .whl | cut -d- -f3-)
  # The tag must cover the newest GLIBC_2.NN symbol version the library uses,
  # and be the one auditwheel derives from all its symbol versions.
  glibc_minor=$(readelf -V --wide "$SO" | grep -o 'GLIBC_2\.[0-9]*' | sed 's/GLIBC_2\.//' | sort -n | tail -n1)
  wheel_tag_ok() {
    [[ $wheel_tag =~ ^py3-none-manylinux_2_([0-9]+)_$(uname -m)$ ]] && [ "${BASH_REMATCH[1]}" -ge "$glibc_minor" ] &&
      [ "$wheel_bytes" -le "$MAX_WHEEL_BYTES" ] &&
      "$VPY" -m auditwheel show "$WHEEL" | tr '\n' ' ' | tr -s ' ' | grep "consistent with the following platform tag: \"${wheel_tag#py3-none-}\"" >/dev/null
  }
  step "wheel tag $wheel_tag (auditwheel agrees; GLIBC_2.$glibc_minor is the newest glibc symbol), $wheel_bytes bytes (<= $MAX_WHEEL_BYTES)" wheel_tag_ok
  step "fresh venv installs the wheel" \
    bash -c "python3 -m venv '$VENV' && '$VENV/bin/pip' install --quiet --disable-pip-version-check '$WHEEL'"
  wheel_lib_stripped() {
    local lib
    lib=$("$VENV/bin/python" -c 'import multifrost; print(multifrost.library_path())') &&
      [[ $lib == "$VENV"/* ]] && ! readelf -S "$lib" | grep '\.debug_' >/dev/null
  }
  step "the wheel's library is its own copy, stripped" wheel_lib_stripped
  cat >"$PYW/parent.py" <<EOF
from multifrost import ParentWorker

w = ParentWorker.spawn("$C_WORKER")
w.sync.start()
try:
    print(w.sync.call.add(1, 2))
finally:
    w.sync.close()
EOF
  expect "Python (wheel) parent -> C worker: add(1, 2)" 3 "$VENV/bin/python" "$PYW/parent.py"
fi
PY_WORKER_OK=0
[ -x "$VENV/bin/python" ] && PY_WORKER_OK=1

# A source install without a built library stops with directions, and a
# library lying in the source tree or an old build/ is never packaged.
no_library_fails() {
  local src=$WORK/py-src out
  cp -r "$REPO/bindings/python" "$src" && rm -rf "$src/build" "$src"/*.egg-info &&
    mkdir -p "$src/multifrost/lib" "$src/build/lib/multifrost/lib" &&
    echo stale >"$src/multifrost/lib/libmultifrost.so" && echo stale >"$src/build/lib/multifrost/lib/libmultifrost.so" &&
    python3 -m venv "$WORK/venv-src" || return 1
  if out=$("$WORK/venv-src/bin/pip" install --disable-pip-version-check "$src" 2>&1); then
    echo "installed without a library:"; echo "$out"; return 1
  fi
  echo "$out"
  grep -F 'no libmultifrost.so to bundle' <<<"$out" >/dev/null && grep -F 'cargo build --release' <<<"$out" >/dev/null
}
step "pip install of the source without a built library fails, saying how to build it" no_library_fails

# --- C with pkg-config ----------------------------------------------------
export PKG_CONFIG_PATH=$LIBDIR/pkgconfig # the README's step for a prefix outside pkg-config's path
CDIR=$WORK/c-pkgconfig
mkdir -p "$CDIR"
cat >"$CDIR/main.c" <<'EOF'
#include <multifrost.h>
#include <stdio.h>

int main(int argc, char **argv) {
    mf_parent *p;
    /* argv[1]: the worker program, argv[2...]: its arguments */
    if (mf_spawn(argv[1], (const char *const *)(argv + 2), NULL, &p) != MF_OK) {
        fprintf(stderr, "spawn: %s\n", mf_last_error());
        return 1;
    }
    char *sum;
    if (mf_call_json(p, "add", "[1, 2]", 0, &sum) != MF_OK) {
        fprintf(stderr, "call: %s\n", mf_last_error());
        return 1;
    }
    printf("%s\n", sum);
    mf_string_free(sum);
    mf_parent_close(p);
    (void)argc;
    return 0;
}
EOF
c_build() (cd "$CDIR" && cc -Wall -Wextra -Werror -o app main.c $(pkg-config --cflags --libs multifrost))
step "C: cc main.c \$(pkg-config --cflags --libs multifrost)" c_build
c_links_installed() { ldd "$CDIR/app" | grep "libmultifrost.so.0 => $LIBDIR/" >/dev/null; }
step "C: the program loads the installed libmultifrost.so.0" c_links_installed
if [ "$PY_WORKER_OK" = 1 ]; then
  expect "C (pkg-config) parent -> Python worker: add(1, 2)" 3 "$CDIR/app" "$VENV/bin/python" "$PYW/worker.py" --worker
fi

# --- CMake: find_package(multifrost) --------------------------------------
KDIR=$WORK/cmake-project
mkdir -p "$KDIR"
cp "$CDIR/main.c" "$KDIR/main.c"
cat >"$KDIR/main.cpp" <<'EOF'
#include <multifrost.hpp>
#include <iostream>

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 2, argv + argc);
    mf::Parent p = mf::Parent::spawn(argv[1], args);
    std::cout << p.call<int64_t>("add", 1, 2) << "\n";
}
EOF
cat >"$KDIR/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.16)
project(mf_user C CXX)
find_package(multifrost 0.1 REQUIRED COMPONENTS cpp)
add_executable(c_shared main.c)
target_link_libraries(c_shared PRIVATE multifrost::multifrost)
add_executable(c_static main.c)
target_link_libraries(c_static PRIVATE multifrost::static)
add_executable(cpp_app main.cpp)
target_link_libraries(cpp_app PRIVATE multifrost::cpp)
EOF
cmake_build() {
  cmake -S "$KDIR" -B "$KDIR/build" -G Ninja -DCMAKE_PREFIX_PATH="$PREFIX" -DCMAKE_BUILD_TYPE=Release &&
    cmake --build "$KDIR/build"
}
if step "CMake: find_package(multifrost 0.1 COMPONENTS cpp), three targets build" cmake_build; then
  static_has_no_lib() { ! ldd "$KDIR/build/c_static" | grep libmultifrost >/dev/null; }
  step "CMake: multifrost::static links the archive (no libmultifrost.so needed)" static_has_no_lib
  if [ "$PY_WORKER_OK" = 1 ]; then
    expect "CMake multifrost::multifrost (C) -> Python worker: add(1, 2)" 3 \
      "$KDIR/build/c_shared" "$VENV/bin/python" "$PYW/worker.py" --worker
    expect "CMake multifrost::static (C) -> Python worker: add(1, 2)" 3 \
      "$KDIR/build/c_static" "$VENV/bin/python" "$PYW/worker.py" --worker
  fi
  expect "CMake multifrost::cpp (C++) -> C worker: add(1, 2)" 3 "$KDIR/build/cpp_app" "$C_WORKER"
fi

# --- Go: a module outside the checkout ------------------------------------
GDIR=$WORK/go-project
mkdir -p "$GDIR"
cat >"$GDIR/go.mod" <<EOF
module example.com/mfuser

go 1.23

require github.com/multifrost/libmultifrost/bindings/go v0.1.0

replace github.com/multifrost/libmultifrost/bindings/go => $PREFIX/share/multifrost/go
EOF
cat >"$GDIR/main.go" <<'EOF'
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	multifrost "github.com/multifrost/libmultifrost/bindings/go"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := multifrost.Spawn(ctx, os.Args[1], os.Args[2:], nil)
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	var sum int
	if err := p.Call(ctx, "add", &sum, 1, 2); err != nil {
		log.Fatal(err)
	}
	fmt.Println(sum)
}
EOF
go_build() (cd "$GDIR" && CGO_ENABLED=1 GOFLAGS=-mod=mod go mod tidy && CGO_ENABLED=1 go build -o app .)
if command -v go >/dev/null && step "Go: go build with the installed module source (cgo pkg-config)" go_build; then
  expect "Go parent -> C worker: add(1, 2)" 3 "$GDIR/app" "$C_WORKER"
fi
unset PKG_CONFIG_PATH

# --- Node: npm install of the packed tarball ------------------------------
NDIR=$WORK/node-project
mkdir -p "$NDIR"
TGZ=
node_pack() { "$MAKE" -C "$REPO" --no-print-directory node-pack && TGZ=$(ls "$BUILD_DIR"/dist/multifrost-*.tgz | head -n1); }
tarball_has_lib() { local list; list=$(tar -tzf "$TGZ") && grep -qx 'package/lib/libmultifrost.so' <<<"$list"; }
node_install() (
  cd "$NDIR" && echo '{"name":"mf-user","version":"1.0.0","private":true}' >package.json &&
    npm install --no-audit --no-fund --loglevel=error "$TGZ"
)
if step "make node-pack (npm pack)" node_pack && step "the tarball carries lib/libmultifrost.so" tarball_has_lib &&
  step "npm install ./multifrost-*.tgz into an empty project" node_install; then
  cat >"$NDIR/main.js" <<'EOF'
const { ParentWorker, libraryPath } = require('multifrost');

(async () => {
  if (!libraryPath().startsWith(__dirname)) throw new Error(`library from ${libraryPath()}`);
  const w = ParentWorker.spawn(process.argv[3], process.argv[2]);
  const h = w.handle();
  await h.start();
  try {
    console.log(await h.call.add(1, 2));
  } finally {
    await h.stop();
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
EOF
  if [ "$PY_WORKER_OK" = 1 ]; then
    expect "Node (npm tarball) parent -> Python worker: add(1, 2)" 3 node "$NDIR/main.js" "$VENV/bin/python" "$PYW/worker.py"
  fi
fi

echo "install: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
