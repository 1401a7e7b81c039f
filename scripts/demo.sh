#!/usr/bin/env bash
# The main job on a fresh clone, with nothing downloaded: install what is
# missing, build, make a tiny DeepSeek-V3-shaped model, convert it, inspect the
# container, verify it and generate text from it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh build
mp=build/moepack
mkdir -p out
echo "== moepack synth --like tiny"
$mp synth --like tiny --seed 1 --force -q -o out/tiny
echo "== moepack convert"
$mp convert out/tiny -o out/tiny.moepack
echo "== moepack inspect"
$mp inspect out/tiny.moepack
echo "== moepack verify"
$mp verify out/tiny.moepack
echo "== moepack run"
$mp run out/tiny.moepack -p "The quick brown fox" -n 32 --temp 0.8 --seed 1
