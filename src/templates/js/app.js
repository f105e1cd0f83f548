// {{name}}: a hookbus hook in JavaScript, built into a WebAssembly component by jco's
// QuickJS backend (./build.sh). The contract is wit/hook.wit:
//   init(configJson)  once, with the hook's `config` from hooks.yaml as JSON text;
//                     throw an Error to refuse the config (the hook set then fails to load);
//   handle(msg)       per message: msg.json is the whole message as JSON text and
//                     msg.envelope = { kind, to, from, id } (null when absent). Return
//                     { tag: "pass" }, { tag: "drop", val: reason } or
//                     { tag: "replace", val: jsonObjectText }.
// Host functions come from "hookbus:hook/host@0.1.2": log, emit, hookName, nowMs, busHost.
//
// Module-level code runs once at build time (the engine state is snapshotted into the
// component), so call host functions only from init and handle.

import { log } from "hookbus:hook/host@0.1.2";

let block;

export function init(configJson) {
    const config = JSON.parse(configJson);
    block = config.block ?? "forbidden";
    if (typeof block !== "string" || block === "") {
        throw new Error(`config key \`block\` must be a non-empty string, got ${JSON.stringify(block)}`);
    }
    log("debug", `dropping messages that contain "${block}"`);
}

export function handle(msg) {
    if (msg.json.includes(block)) {
        return { tag: "drop", val: `contains "${block}"` };
    }
    return { tag: "pass" };
}
