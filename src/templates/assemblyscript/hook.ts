// {{name}}: a hookbus filter hook in AssemblyScript, a plain core module (the
// "Core-module ABI" of hookbus's docs/HOOKS.md). As generated, it drops messages
// whose JSON contains the configured `block` text.
//
// The ABI: the host calls `alloc(len)` for room, writes the input there, then calls
// `init(ptr, len)` once with the config JSON and `handle(ptr, len)` for each message.
// `handle` returns 0 to pass, or `(ptr << 32) | len` of a UTF-8 verdict:
// {"drop":"reason"}, {"replace":{…message…}} or {"pass":true}.

import { Kind, jsonError, parseJson, quote } from "./json";

// Host functions (module `hookbus`). Ones never called are left out of the module.
/** Writes a line to the daemon's log: level 0 trace, 1 debug, 2 info, 3 warn, 4 error. */
@external("hookbus", "log")
declare function hostLog(level: i32, ptr: usize, len: usize): void;
/** Sends a new message (JSON object text); returns 0 when accepted. */
@external("hookbus", "emit")
declare function hostEmit(ptr: usize, len: usize): i32;
/** Wall-clock time in milliseconds since the Unix epoch. */
@external("hookbus", "now_ms")
declare function nowMs(): i64;

function log(level: i32, text: string): void {
  const bytes = String.UTF8.encode(text);
  hostLog(level, changetype<usize>(bytes), bytes.byteLength);
}

let block = "forbidden";
/** The drop verdict, built once by `init`. */
let dropVerdict = new ArrayBuffer(0);

/// The host's input buffer, reused for every call and grown when needed. It comes
/// from `heap.alloc`, which the garbage collector leaves alone.
let input: usize = 0;
let inputCap: usize = 0;

export function alloc(len: usize): usize {
  if (len > inputCap) {
    if (input != 0) heap.free(input);
    inputCap = max(len, inputCap << 1);
    input = heap.alloc(inputCap);
  }
  return input;
}

/// Reads the config (`{}` when hooks.yaml has none); non-zero fails the load.
export function init(ptr: usize, len: usize): i32 {
  const config = parseJson(String.UTF8.decodeUnsafe(ptr, len));
  if (config === null) return configError("not valid JSON: " + jsonError);
  if (config.kind != Kind.Object) return configError("the config must be an object");
  for (let i = 0; i < config.keys.length; i++) {
    if (config.keys[i] != "block") continue;
    const value = config.items[i];
    if (value.kind != Kind.String || value.str.length == 0) {
      return configError("block must be a non-empty string, got " + value.describe());
    }
    block = value.str;
  }
  dropVerdict = String.UTF8.encode('{"drop":' + quote("contains " + quote(block)) + "}");
  return 0;
}

function configError(problem: string): i32 {
  log(4, "{{name}}: bad config: " + problem);
  return 1;
}

export function handle(ptr: usize, len: usize): i64 {
  const json = String.UTF8.decodeUnsafe(ptr, len);
  if (json.includes(block)) return verdict(dropVerdict);
  return 0; // pass
}

/// (ptr << 32) | len of a verdict. It must stay alive until the host has read it:
/// keep it in a global, as `dropVerdict` is.
function verdict(text: ArrayBuffer): i64 {
  return (<i64>changetype<usize>(text) << 32) | <i64>text.byteLength;
}
