#!/usr/bin/env bash
# Builds the dedupe hook (app.js) into a component with jco's QuickJS backend.
# Usage: ./build.sh OUT.wasm   (scripts/build-guests.sh runs it with the tools on PATH)
#
# Why the extra steps: every componentize-qjs component (0.4.5, under jco 1.35.0) also
# exports the runtime's own `init` function, which clashes with the hook world's `init`
# ("duplicate items detected" at link time). So the component is built against a copy
# of the world whose export is named `hook-init`, with a one-line entry module mapping
# app.js's `init` onto it; then, in the component's text form, the runtime's export is
# renamed `componentize-qjs-init` and `hook-init` becomes `init`.
set -euo pipefail

out=${1:?usage: ./build.sh OUT.wasm}
for tool in node jco; do
    command -v "$tool" >/dev/null || {
        echo "build.sh: \`$tool\` not found on PATH; run scripts/build-guests.sh dedupe," \
            "which installs jco (scripts/guest-tools.sh)" >&2
        exit 1
    }
done

rm -rf build
mkdir -p build
cp -r ../../wit build/wit
sed -i 's/^\( *export\) init:/\1 hook-init:/' build/wit/hook.wit
echo 'export { init as hookInit, handle } from "../app.js";' >build/entry.js

# --cwd .: jco resolves the entry path again after moving to the entry's folder.
# --backend-qjs-disable-async: the default runtime uses the component-model async ABI,
# which the host does not enable. --backend-qjs-stub-wasi: no WASI imports (traps).
jco componentize build/entry.js --cwd . --wit build/wit -n hook --backend qjs \
    --backend-qjs-disable-async --backend-qjs-stub-wasi -o build/raw.wasm >/dev/null

# Top-level exports are the only lines indented by exactly two spaces.
jco print build/raw.wasm |
    sed -e 's/^  (export \((;[0-9]*;)\) "init" /  (export \1 "componentize-qjs-init" /' \
        -e 's/^  (export \((;[0-9]*;)\) "hook-init" /  (export \1 "init" /' >build/hook.wat
if [ "$(grep -c '^  (export (;[0-9]*;) "init" ' build/hook.wat)" != 1 ]; then
    echo "build.sh: renaming the component's exports failed (see build/hook.wat)" >&2
    exit 1
fi
jco parse build/hook.wat -o "$out" >/dev/null
