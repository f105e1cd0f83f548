#!/usr/bin/env bash
# Builds {{name}}.wasm (a WebAssembly component) from app.js with jco's QuickJS backend.
#
#   ./build.sh            writes {{name}}.wasm in this folder
#   ./build.sh OUT.wasm   writes OUT.wasm
#
# Uses jco from PATH; when there is none, installs the versions pinned in package.json
# into node_modules/ in this folder (needs node and npm, and network access once).
# Intermediate files go to build/.
#
# Why the extra steps: every componentize-qjs component (0.4.5) also exports the
# runtime's own `init` function, which clashes with the hook's `init` ("duplicate items
# detected" at link time). So the component is built against a copy of the world whose
# export is named `hook-init`, with a one-line entry module mapping app.js's `init` onto
# it; then, in the component's text form, the runtime's export is renamed
# `componentize-qjs-init` and `hook-init` becomes `init`.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/{{name}}.wasm}
case $out in /*) ;; *) out=$PWD/$out ;; esac
cd "$here"

command -v node >/dev/null || { echo "build.sh: node is needed (Node.js 18 or later)" >&2; exit 1; }
if command -v jco >/dev/null; then
    jco=jco
else
    jco=$here/node_modules/.bin/jco
    if [ ! -x "$jco" ]; then
        command -v npm >/dev/null || { echo "build.sh: npm is needed to install jco" >&2; exit 1; }
        echo "build.sh: installing jco into node_modules/ (npm install)" >&2
        npm install --no-audit --no-fund --loglevel=error >&2
    fi
fi

rm -rf build
mkdir -p build
cp -r wit build/wit
sed -i 's/^\( *export\) init:/\1 hook-init:/' build/wit/hook.wit
echo 'export { init as hookInit, handle } from "../app.js";' >build/entry.js

# --cwd .: jco resolves the entry path again after moving to the entry's folder.
# --backend-qjs-disable-async: the default runtime uses the component-model async ABI,
# which hookbus does not enable. --backend-qjs-stub-wasi: no WASI imports (they trap).
"$jco" componentize build/entry.js --cwd . --wit build/wit -n hook --backend qjs \
    --backend-qjs-disable-async --backend-qjs-stub-wasi -o build/raw.wasm >/dev/null

# Top-level exports are the only lines indented by exactly two spaces.
"$jco" print build/raw.wasm |
    sed -e 's/^  (export \((;[0-9]*;)\) "init" /  (export \1 "componentize-qjs-init" /' \
        -e 's/^  (export \((;[0-9]*;)\) "hook-init" /  (export \1 "init" /' >build/hook.wat
if [ "$(grep -c '^  (export (;[0-9]*;) "init" ' build/hook.wat)" != 1 ]; then
    echo "build.sh: renaming the component's exports failed (see build/hook.wat)" >&2
    exit 1
fi
mkdir -p "$(dirname "$out")"
"$jco" parse build/hook.wat -o "$out" >/dev/null
echo "build.sh: wrote $out" >&2
