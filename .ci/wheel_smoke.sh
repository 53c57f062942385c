#!/usr/bin/env bash
# Build the wheel, install it in a fresh virtual environment, and run the demo from a folder outside
# the repository, offline, with an empty model cache: the shipped models must come inside the wheel.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mktemp -d "${TMPDIR:-/tmp}/wheel-smoke.XXXXXX")
python3 -m pip wheel --quiet --no-deps -w "$dir/dist" "$src"
wheel=$(ls "$dir"/dist/unifashion-*.whl)
echo "wheel: $(basename "$wheel"), $(du -h "$wheel" | cut -f1)"
python3 -m venv "$dir/venv"
"$dir/venv/bin/python" -m pip install --quiet --upgrade pip
"$dir/venv/bin/python" -m pip install --quiet torch==2.13.0
"$dir/venv/bin/python" -m pip install --quiet "$wheel"
mkdir -p "$dir/elsewhere" "$dir/home"
cd "$dir/elsewhere"
SECONDS=0
HOME="$dir/home" UNIFASHION_HOME="$dir/home/cache" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  "$dir/venv/bin/unifashion" demo --output "$dir/elsewhere/demo" --no-serve
echo "wheel smoke test: the demo ran from the installed wheel in ${SECONDS}s"
[ ! -d "$dir/home/cache/runs" ] || { echo "FAIL: the installed wheel trained a model"; exit 1; }
test -s "$dir/elsewhere/demo/eval/results.json"
rm -rf "$dir"
