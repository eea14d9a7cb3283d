#!/usr/bin/env bash
# Prebuilds the GPU half of the test suite and `xtask` for a GPU machine that has no Rust
# toolchain (the device machines have the driver, PyTorch and transformers, but no cargo).
#
#   scripts/gpu/bundle.sh cuda      # or: wgpu (checks the bundle itself on lavapipe)
#
# writes target/gpu-bundle-FEATURE/: bin/ (the test executables of quant `cube`, llama-model
# `parity` and trainer `gpu`, and a release `xtask`) and run.sh. Copy that directory into a
# checkout of the same commit on the GPU machine (the tests read their fixtures from it) and run
#
#   target/gpu-bundle-cuda/run.sh [bench-train arguments ...]
#
# which runs every GPU test (failing, never skipping, when the device is missing) and then
# `xtask bench-train --device FEATURE` with the given arguments (default: the issue's tiny shape,
# QLoRA, 4 steps).
set -euo pipefail
feature=${1:-}
case "$feature" in
cuda | wgpu) ;;
*)
    echo "usage: scripts/gpu/bundle.sh cuda|wgpu" >&2
    exit 2
    ;;
esac
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
out=$root/target/gpu-bundle-$feature
rm -rf "$out"
mkdir -p "$out/bin"

# The test executables: cargo prints each one's path in its JSON messages.
for spec in "quant cube" "llama-model parity" "trainer gpu"; do
    set -- $spec
    exe=$(cargo test --locked -p "$1" --test "$2" --features "$feature" --no-run --message-format=json |
        grep -o '"executable":"[^"]*"' | cut -d'"' -f4 | tail -n 1)
    [ -x "$exe" ] || {
        echo "bundle.sh: no test executable for $1 --test $2" >&2
        exit 1
    }
    cp "$exe" "$out/bin/test--$1--$2"
done
cargo build --locked --release -p xtask --features "$feature"
cp "$target/release/xtask" "$out/bin/xtask"

# The tests find their fixtures through the absolute crate paths of this build
# (CARGO_MANIFEST_DIR): run.sh links this path to the checkout it runs in when they differ.
sed -e "s|@BUILD_ROOT@|$root|" -e "s|@FEATURE@|$feature|" >"$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs the prebuilt GPU tests and bench-train (made by scripts/gpu/bundle.sh).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
checkout=$(cd "$here/../.." && pwd)
build_root=@BUILD_ROOT@
feature=@FEATURE@
if [ "$checkout" != "$build_root" ]; then
    if [ ! -e "$build_root" ]; then
        mkdir -p "$(dirname "$build_root")" && ln -s "$checkout" "$build_root" || {
            echo "run.sh: the tests read fixtures under $build_root (where they were built); link it to this checkout: ln -s $checkout $build_root" >&2
            exit 1
        }
    fi
fi
mkdir -p "$build_root/target/tmp"
export LLAMA_REQUIRE_GPU=1
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
# CUDA tests are #[ignore]d (a build without a GPU must not count them as passed): run exactly
# those. The wgpu tests run as in CI.
if [ "$feature" = cuda ]; then select=(--ignored); else select=(); fi
status=0
for t in "$here"/bin/test--*; do
    name=$(basename "$t")
    crate=${name#test--}
    crate=${crate%%--*}
    echo "== $name"
    (cd "$build_root/crates/$crate" && "$t" "${select[@]}" --test-threads 1) || status=1
done
if [ "$#" -eq 0 ]; then set -- --method qlora --steps 4; fi
echo "== xtask bench-train --device $feature $*"
"$here/bin/xtask" bench-train --device "$feature" "$@" || status=1
exit $status
RUN
chmod +x "$out/run.sh"
echo "bundle: $out ($(du -sh "$out" | cut -f1)); run it from a checkout of $(git rev-parse --short HEAD): target/gpu-bundle-$feature/run.sh"
