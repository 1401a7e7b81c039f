#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages moepack builds against, when missing.
# Idempotent: does nothing when everything is there.
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
