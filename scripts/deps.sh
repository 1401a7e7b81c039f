#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages moepack builds against, when missing.
# Idempotent: does nothing when everything is there.
# scripts/deps.sh --test also installs the tools only the tests use.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libnuma-dev libzstd-dev libxxhash-dev libjansson-dev libpcre2-dev
      libmicrohttpd-dev
      # scripts/fuzz.sh: clang with its libFuzzer and sanitizer runtimes (libclang-rt-dev on Debian 12,
      # part of clang's own packages elsewhere) and clang's OpenMP
      clang libomp-dev)
if apt-cache show libclang-rt-dev >/dev/null 2>&1; then
    pkgs+=(libclang-rt-dev)
fi
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "moepack: installing ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ "${1:-}" = "--test" ] || exit 0

# Optional, for the serve tests (each skips when its tool is missing): curl and python3 drive the
# server, headless Chromium loads the chat page, the `openai` package is the reference client.
opt_pkgs=(curl python3 chromium)
opt_missing=()
for p in "${opt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || opt_missing+=("$p")
done
if [ ${#opt_missing[@]} -gt 0 ]; then
    echo "moepack: installing ${opt_missing[*]} (optional, for the serve tests)"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${opt_missing[@]}" >/dev/null; } ||
        echo "moepack: could not install ${opt_missing[*]}; the tests that need them will be skipped"
fi
if command -v python3 >/dev/null && ! python3 -c 'import openai' 2>/dev/null; then
    echo "moepack: pip install openai (optional, for tests/cli/serve_openai.sh)"
    python3 -m pip install -q openai >/dev/null 2>&1 ||
        python3 -m pip install -q --break-system-packages openai >/dev/null 2>&1 ||
        echo "moepack: could not install the openai package; tests/cli/serve_openai.sh will be skipped"
fi
