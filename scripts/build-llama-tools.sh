#!/usr/bin/env bash
# Build llama.cpp's own llama-server and llama-batched-bench, the benchmark's peers, from the
# llama.cpp that llama-cpp-python vendors (same version, same CMAKE_ARGS as `make install`).
#   scripts/build-llama-tools.sh [OUT_DIR]     (default .llama-tools; about 10 minutes)
# `make bench` then finds OUT_DIR/bin/llama-server and OUT_DIR/bin/llama-batched-bench.
set -euo pipefail
VERSION=${LLAMA_CPP_VERSION:-0.3.36}
OUT=${1:-.llama-tools}
PY=${PY:-.venv/bin/python}
command -v cmake >/dev/null || { echo "cmake is needed (apt-get install cmake)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$work"
tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
src=$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)
# CMAKE_ARGS holds several -D flags: split it into words on purpose.
# shellcheck disable=SC2086
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-} \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DBUILD_SHARED_LIBS=OFF >"$work/cmake.log"
cmake --build "$work/build" -j"$(nproc)" --target llama-server llama-batched-bench \
  >"$work/build.log" || { tail -30 "$work/build.log" >&2; exit 1; }
mkdir -p "$OUT/bin"
cp "$work/build/bin/llama-server" "$work/build/bin/llama-batched-bench" "$OUT/bin/"
echo "built $OUT/bin/llama-server and $OUT/bin/llama-batched-bench"
