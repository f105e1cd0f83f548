#!/usr/bin/env bash
# Installs the toolchains that build guest hooks, each only when missing, and puts
# them on PATH. Source it (`. scripts/guest-tools.sh`) or run it to install.
#
#   Rust        rustup target wasm32-wasip2 (wasm-component-ld ships with rustup)
#   C           clang, lld and wasi-libc from Debian's packages (apt-get)
#   Python      componentize-py and wasm-tools, pinned in scripts/guest-tools/requirements.txt,
#               in a venv under target/guest-tools/py
#   JS / AS     jco (QuickJS backend) and AssemblyScript, pinned by
#               scripts/guest-tools/package-lock.json, under target/guest-tools/node
#
# Installs are cached: a stamp holds the hash of the pinned versions, so a second run
# only checks. Set GUEST_TOOLS_ONLY to a space-separated subset (rust c python node) to
# install less.

_gt_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_gt_dir="$_gt_root/target/guest-tools"
_gt_pins="$_gt_root/scripts/guest-tools"

_gt_wanted() { [ -z "${GUEST_TOOLS_ONLY:-}" ] || [[ " $GUEST_TOOLS_ONLY " == *" $1 "* ]]; }

_gt_stamp_ok() { # dir, pinned files...
    local dir=$1; shift
    [ -f "$dir/.stamp" ] && [ "$(cat "$@" | sha256sum)" = "$(cat "$dir/.stamp")" ]
}

_gt_stamp() {
    local dir=$1; shift
    cat "$@" | sha256sum >"$dir/.stamp"
}

guest_tools_rust() {
    if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
        echo "guest-tools: installing the wasm32-wasip2 Rust target" >&2
        rustup target add wasm32-wasip2 >&2
    fi
}

guest_tools_c() {
    if command -v clang >/dev/null && command -v wasm-ld >/dev/null &&
        [ -f /usr/lib/wasm32-wasi/libc.a ] &&
        compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a" >/dev/null; then
        return
    fi
    echo "guest-tools: installing clang, lld and wasi-libc (apt-get)" >&2
    local sudo=
    [ "$(id -u)" = 0 ] || sudo=sudo
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q clang lld wasi-libc libclang-rt-dev-wasm32 >&2 ||
        { $sudo apt-get update -q >&2 && $sudo apt-get install -y -q clang lld wasi-libc libclang-rt-dev-wasm32 >&2; }
}

guest_tools_python() {
    local dir="$_gt_dir/py"
    if ! _gt_stamp_ok "$dir" "$_gt_pins/requirements.txt"; then
        echo "guest-tools: installing componentize-py and wasm-tools (pip)" >&2
        rm -rf "$dir"
        python3 -m venv "$dir" >&2
        "$dir/bin/pip" install -q --disable-pip-version-check \
            -r "$_gt_pins/requirements.txt" >&2
        _gt_stamp "$dir" "$_gt_pins/requirements.txt"
    fi
    export PATH="$dir/bin:$PATH"
}

guest_tools_node() {
    local dir="$_gt_dir/node"
    if ! _gt_stamp_ok "$dir" "$_gt_pins/package-lock.json"; then
        echo "guest-tools: installing jco and AssemblyScript (npm install)" >&2
        rm -rf "$dir"
        mkdir -p "$dir"
        cp "$_gt_pins/package.json" "$_gt_pins/package-lock.json" "$dir/"
        (cd "$dir" && npm install --no-audit --no-fund --loglevel=error >&2)
        _gt_stamp "$dir" "$_gt_pins/package-lock.json"
    fi
    export PATH="$dir/node_modules/.bin:$PATH"
}

guest_tools() {
    mkdir -p "$_gt_dir"
    if _gt_wanted rust; then guest_tools_rust; fi
    if _gt_wanted c; then guest_tools_c; fi
    # wasm-tools (from the Python set) also packages C components.
    if _gt_wanted python || _gt_wanted c; then guest_tools_python; fi
    if _gt_wanted node; then guest_tools_node; fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    guest_tools
    echo "guest-tools: ready (PATH additions under $_gt_dir)"
fi
