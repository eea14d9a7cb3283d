#!/usr/bin/env bash
# Builds the reference llama.cpp: the source vendored by the PyPI sdist llama-cpp-python==0.3.36
# (vendor/llama.cpp), pinned by the sdist's SHA-256. Idempotent: the download, the unpacked
# source and the build directory are reused; cmake/ninja only rebuild what is missing.
#
#   scripts/llama_cpp/build.sh            # builds, then prints the bin directory (last line)
#
# Environment: LLAMA_CPP_CACHE (default ~/.cache/llama-cpp-0.3.36), PYTHON (a Python with pip;
# default /opt/refvenv/bin/python if present, else python3), JOBS (default 2).
# Targets: llama-simple, llama-completion (takes --lora), llama-perplexity, llama-quantize.
# The build is outside the repository and takes a while on a small machine: run it with nice.
set -euo pipefail

VERSION=0.3.36
SDIST=llama_cpp_python-${VERSION}.tar.gz
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
CACHE=${LLAMA_CPP_CACHE:-$HOME/.cache/llama-cpp-${VERSION}}
if [ -z "${PYTHON:-}" ]; then
    if [ -x /opt/refvenv/bin/python ]; then PYTHON=/opt/refvenv/bin/python; else PYTHON=python3; fi
fi
JOBS=${JOBS:-2}
TARGETS=(llama-simple llama-completion llama-perplexity llama-quantize)

mkdir -p "$CACHE"
cd "$CACHE"

if [ ! -f "$SDIST" ]; then
    echo "downloading $SDIST from PyPI" >&2
    # --no-build-isolation: pip only reads the sdist's metadata (scikit-build-core), it does not
    # build cmake from source in an isolated environment.
    "$PYTHON" -m pip install -q scikit-build-core >&2
    "$PYTHON" -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
        "llama-cpp-python==${VERSION}" -d "$CACHE/download" >&2
    mv "$CACHE/download/$SDIST" "$SDIST"
fi
echo "$SDIST_SHA256  $SDIST" | sha256sum -c --quiet - || {
    echo "error: $CACHE/$SDIST does not have the pinned SHA-256 $SDIST_SHA256" >&2
    exit 1
}

SRC=$CACHE/llama_cpp_python-${VERSION}/vendor/llama.cpp
if [ ! -f "$SRC/CMakeLists.txt" ]; then
    tar xzf "$SDIST"
fi

# cmake and ninja from PyPI (binary wheels) when the machine has none.
if ! command -v cmake >/dev/null || ! command -v ninja >/dev/null; then
    "$PYTHON" -m pip install -q cmake ninja >&2
    PATH=$(dirname "$("$PYTHON" -c 'import sys; print(sys.executable)')"):$PATH
fi

BUILD=$CACHE/build
if [ ! -f "$BUILD/build.ninja" ]; then
    cmake -S "$SRC" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF \
        -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF >&2
fi
cmake --build "$BUILD" -j "$JOBS" --target "${TARGETS[@]}" >&2

for t in "${TARGETS[@]}"; do
    [ -x "$BUILD/bin/$t" ] || { echo "error: $BUILD/bin/$t was not built" >&2; exit 1; }
done
echo "llama.cpp (llama-cpp-python $VERSION) source: $SRC" >&2
echo "$BUILD/bin"
