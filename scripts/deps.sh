#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages moepack builds against, when missing.
# Idempotent: does nothing when everything is there.
# scripts/deps.sh --test also installs the tools only the tests use.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libnuma-dev libzstd-dev libxxhash-dev libjansson-dev libpcre2-dev
      libmicrohttpd-dev)
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_updated=0

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
apt_update_once() {
    [ "$apt_updated" -eq 1 ] || { $sudo apt-get update -qq && apt_updated=1; }
}
# apt_install WHY PKG...: installs the PKGs that are not installed yet; WHY goes into the message.
apt_install() {
    local why=$1 missing=() p
    shift
    for p in "$@"; do installed "$p" || missing+=("$p"); done
    [ ${#missing[@]} -gt 0 ] || return 0
    echo "moepack: installing ${missing[*]}${why:+ ($why)}"
    apt_update_once || return 1
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}
# known PKG: the package lists have PKG (updating them first if they might be stale).
known() { apt-cache show "$1" >/dev/null 2>&1 || { apt_update_once && apt-cache show "$1" >/dev/null 2>&1; }; }

apt_install "" "${pkgs[@]}"

[ "${1:-}" = "--test" ] || exit 0

# Optional, for the serve tests (each skips when its tool is missing): curl and python3 drive the
# server, headless Chromium loads the chat page, the `openai` package is the reference client.
apt_install "optional, for the serve tests" curl python3 chromium ||
    echo "moepack: could not install curl python3 chromium; the tests that need them will be skipped"
# pip_optional MODULE WHAT: pip-installs the Python package MODULE when python3 lacks it; WHAT
# (a test script) is skipped if that fails.
pip_optional() {
    command -v python3 >/dev/null || return 0
    python3 -c "import $1" 2>/dev/null && return 0
    echo "moepack: pip install $1 (optional, for $2)"
    python3 -m pip install -q "$1" >/dev/null 2>&1 ||
        python3 -m pip install -q --break-system-packages "$1" >/dev/null 2>&1 ||
        echo "moepack: could not install the $1 package; $2 will be skipped"
}
pip_optional openai tests/cli/serve_openai.sh
# numpy runs the float64 reference forward pass of the DeepSeek-V2 variants (that test also needs
# the fixtures)
pip_optional numpy tests/cli/v2_numpy.sh

# Optional, for scripts/fuzz.sh (scripts/test.sh skips fuzzing without them, docs/FUZZING.md):
# clang, and for clang's own version N its libFuzzer + sanitizer runtimes and its OpenMP. Since
# Debian 12 / Ubuntu 23.04 the runtimes are in libclang-rt-N-dev, which clang does not pull in;
# older releases have them in libclang-common-N-dev, a dependency of clang-N. What is installed is
# judged by linking a probe, as fuzz.sh does, so that a working clang from elsewhere is left alone.
# clang_links SOURCE FLAGS...: clang compiles and links the C program SOURCE with FLAGS.
clang_links() {
    local src=$1 d rc=0
    shift
    d=$(mktemp -d)
    printf '%s\n' "$src" >"$d/p.c"
    clang "$@" "$d/p.c" -o "$d/p" >/dev/null 2>&1 || rc=1
    rm -rf "$d"
    return $rc
}
fuzz_probe=$'#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)\n{ (void)d; (void)n; return 0; }'
omp_probe=$'#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }'
fuzz_note="moepack: could not install the fuzzing toolchain; scripts/test.sh will skip fuzzing"
if apt_install "optional, for scripts/fuzz.sh" clang; then
    n=$(clang -dumpversion 2>/dev/null | cut -d. -f1)
    fuzz_pkgs=()
    if ! clang_links "$fuzz_probe" -fsanitize=fuzzer,address,undefined && known "libclang-rt-$n-dev"; then
        fuzz_pkgs+=("libclang-rt-$n-dev")
    fi
    if ! clang_links "$omp_probe" -fopenmp; then
        if known "libomp-$n-dev"; then fuzz_pkgs+=("libomp-$n-dev"); else fuzz_pkgs+=(libomp-dev); fi
    fi
    apt_install "optional, clang $n's libFuzzer runtime and OpenMP" "${fuzz_pkgs[@]}" || echo "$fuzz_note"
else
    echo "$fuzz_note"
fi
