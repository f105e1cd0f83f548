// Tests the built guard module directly in Node, including inputs `hookbus hooks test`
// cannot send (malformed JSON, bad configs' log lines), a randomized comparison with
// a JSON.parse-based reference, and a check that repeated calls do not grow memory.
//
// Usage: node test.mjs [guard.wasm]   (default: ../../target/guests/guard.wasm)
import { readFileSync } from "node:fs";
import assert from "node:assert/strict";

const wasmPath = process.argv[2] ?? new URL("../../target/guests/guard.wasm", import.meta.url);
const module = new WebAssembly.Module(readFileSync(wasmPath));
const enc = new TextEncoder();
const dec = new TextDecoder();

/** A fresh instance; returns { init, handle, logs, memory }. */
function instance() {
  const logs = [];
  let exports;
  const imports = {
    hookbus: {
      log: (level, ptr, len) => logs.push([level, text(ptr, len)]),
    },
  };
  const text = (ptr, len) => dec.decode(new Uint8Array(exports.memory.buffer, ptr, len));
  exports = new WebAssembly.Instance(module, imports).exports;
  const call = (fn, s) => {
    const bytes = enc.encode(s);
    const ptr = exports.alloc(bytes.length);
    new Uint8Array(exports.memory.buffer, ptr, bytes.length).set(bytes);
    return fn(ptr, bytes.length);
  };
  return {
    logs,
    memory: () => exports.memory.buffer.byteLength,
    init: (config) => call(exports.init, JSON.stringify(config)),
    initText: (configText) => call(exports.init, configText),
    /** "pass" or the drop reason. */
    handle: (message) => {
      const packed = BigInt.asUintN(64, call(exports.handle, message));
      if (packed === 0n) return "pass";
      const verdict = JSON.parse(text(Number(packed >> 32n), Number(packed & 0xffffffffn)));
      return verdict.drop;
    },
  };
}

const CONFIG = { max_bytes: 300, require: ["from", "body"], types: ["message", "café", "😀"], body_max_depth: 4 };

function guard(config = CONFIG) {
  const g = instance();
  assert.equal(g.init(config), 0, JSON.stringify(g.logs));
  return g;
}

let checks = 0;
function expect(g, message, want) {
  assert.equal(g.handle(message), want, message.slice(0, 300));
  checks++;
}

// --- Messages -------------------------------------------------------------------
{
  const g = guard();
  expect(g, '{"type":"message","from":"a","body":{}}', "pass");
  expect(g, '  {"type":"message","from":"a","body":{}}\n', "pass");
  // Keys of nested objects are not top-level keys.
  expect(g, '{"type":"message","body":{"from":"a"}}', 'missing field "from"');
  expect(g, '{"type":"message","body":[{"from":"a"}],"x":{"body":1}}', 'missing field "from"');
  // Escaped quotes and brackets inside strings, at both levels.
  expect(g, '{"type":"message","from":"a\\"}{","body":{"k":"\\"from\\":[["}}', "pass");
  expect(g, '{"type":"message","body":{"k":"\\\\"},"from":"a"}', "pass");
  expect(g, '{"type":"message","body":"\\\\\\"","from":"a"}', "pass");
  // A key spelled with escapes is the same key.
  expect(g, '{"ty\\u0070e":"m\\u0065ssage","\\u0066rom":"a","body":0}', "pass");
  expect(g, '{"type":"caf\\u00e9","from":"a","body":0}', "pass");
  expect(g, '{"type":"café","from":"a","body":0}', "pass");
  expect(g, '{"type":"\\ud83d\\ude00","from":"a","body":0}', "pass");
  expect(g, '{"type":"\\ud83d","from":"a","body":0}', 'type "\ud83d" not allowed'); // a lone surrogate
  expect(g, '{"type":"messag","from":"a","body":0}', 'type "messag" not allowed');
  expect(g, '{"type":"messagee","from":"a","body":0}', 'type "messagee" not allowed');
  expect(g, '{"type":"a\\"b","from":"a","body":0}', 'type "a"b" not allowed');
  // Null counts as missing; the last duplicate wins.
  expect(g, '{"type":"message","from":null,"body":0}', 'missing field "from"');
  expect(g, '{"type":"message","from":null,"from":"a","body":0}', "pass");
  expect(g, '{"type":"message","from":"a","from":null,"body":0}', 'missing field "from"');
  expect(g, '{"type":"message","from":"a","body":nullx}', "pass"); // not `null`
  expect(g, '{"from":"a","body":0}', 'missing field "type"');
  expect(g, '{"type":null,"from":"a","body":0}', 'missing field "type"');
  expect(g, '{"type":["message"],"from":"a","body":0}', "type is not a string");
  // Depth: the message is 1, so body_max_depth 4 allows three nested levels.
  expect(g, '{"type":"message","from":"a","body":[[[]]]}', "pass");
  expect(g, '{"type":"message","from":"a","body":[[[{}]]]}', "nested deeper than 4");
  expect(g, '{"type":"message","from":"a","body":{"a":{"b":{"c":{}}}}}', "nested deeper than 4");
  expect(g, '{"type":"message","from":"a","body":[[["[[[[{{{{"]]]}', "pass");
  // Size: the limit is inclusive.
  const padded = (n) => `{"type":"message","from":"a","body":"${"x".repeat(n)}"}`;
  const room = 300 - padded(0).length;
  expect(g, padded(room), "pass");
  expect(g, padded(room + 1), "larger than 300 bytes (301)");
  // Malformed input (the host never sends it, but it must not misbehave).
  for (const bad of ["", " ", "[]", '"x"', "{", '{"type"', '{"type":', '{"type":"message"',
    '{"type":"message",}', '{"type":"message"} x', '{"a":"\\', '{"a":[1,2', '{"a":{"b":"}', "{,}"]) {
    expect(g, bad, "not a JSON object");
  }
  // Long types are cut at a character boundary, never inside an escape.
  const long = g.handle(`{"type":"${"\\u00e9".repeat(20)}","from":"a","body":0}`);
  assert.equal(long, `type "${"é".repeat(10)}..." not allowed`);
  const long2 = g.handle(`{"type":"${"€".repeat(40)}","from":"a","body":0}`);
  assert.equal(long2, `type "${"€".repeat(21)}..." not allowed`);
  checks += 2;
}

// --- Defaults and config --------------------------------------------------------
{
  const g = guard({});
  expect(g, '{"anything":1}', "pass");
  expect(g, `{"a":${"[".repeat(31)}${"]".repeat(31)}}`, "pass");
  expect(g, `{"a":${"[".repeat(32)}${"]".repeat(32)}}`, "nested deeper than 32");
  expect(g, `{"a":"${"x".repeat(65528)}"}`, "pass");
  expect(g, `{"a":"${"x".repeat(65529)}"}`, "larger than 65536 bytes (65537)");
  // Config strings may use escapes too; a null value keeps the default.
  const h = instance();
  assert.equal(h.initText('{"require":["\\u0066r\\u006Fm"],"types":null,"max_bytes":1e3}'), 0);
  expect(h, '{"from":"a"}', "pass");
  expect(h, '{"frm":"a"}', 'missing field "from"');
}
for (const [config, problem] of [
  ["[]", "the config must be an object, got an array"],
  ["{", "not valid JSON: expected a string key at character 1"],
  ['{"max_bytes":0}', "max_bytes must be an integer from 1 to 2147483647, got 0"],
  ['{"max_bytes":1.5}', "max_bytes must be an integer from 1 to 2147483647, got 1.5"],
  ['{"body_max_depth":"3"}', 'body_max_depth must be an integer from 1 to 2147483647, got "3"'],
  ['{"require":"from"}', 'require must be a list of strings, got "from"'],
  ['{"require":["from",{}]}', "require[1] must be a string, got an object"],
  ['{"types":[]}', "types must not be empty (leave it out to allow any type)"],
  ['{"typo":1}', 'unknown key "typo" (expected max_bytes, require, types, body_max_depth)'],
  ['{"max_bytes":01}', "not valid JSON: expected \",\" or \"}\" at character 14"],
]) {
  const g = instance();
  assert.equal(g.initText(config), 1, config);
  assert.deepEqual(g.logs, [[4, "guard: bad config: " + problem]]);
  checks++;
}

// --- Randomized comparison with a reference ------------------------------------
let seed = 42;
/** mulberry32: a small, well-mixed PRNG, so runs are reproducible. */
const rand = (n) => {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) % n;
};
const pick = (list) => list[rand(list.length)];
const space = () => pick(["", "", "", " ", "\n ", "\t"]);
/** A JSON string literal with random escapes. */
function literal(s) {
  let out = '"';
  for (const ch of s) {
    const code = ch.codePointAt(0);
    if (ch === '"' || ch === "\\") out += "\\" + ch;
    else if (code < 0x20 || rand(4) === 0) out += escapeUnits(ch);
    else out += ch;
  }
  return out + '"';
}
/** `\\uXXXX` for each UTF-16 unit of `ch` (two for a surrogate pair). */
const escapeUnits = (ch) =>
  Array.from({ length: ch.length }, (_, i) => "\\u" + ch.charCodeAt(i).toString(16).padStart(4, "0")).join("");
const WORDS = ["type", "from", "body", "message", "café", "😀", "x", 'q"', "a\\b", "{[", "\n"];
function value(depth) {
  const r = rand(depth > 5 ? 4 : 7);
  if (r === 0) return pick(["null", "true", "false", "0", "-1.5e3"]);
  if (r <= 3) return literal(pick(WORDS));
  if (r === 4 || r === 5) {
    const n = rand(4);
    const members = [];
    for (let i = 0; i < n; i++) members.push(space() + literal(pick(WORDS)) + space() + ":" + space() + value(depth + 1));
    return "{" + members.join(",") + space() + "}";
  }
  const items = [];
  for (let i = rand(4); i > 0; i--) items.push(space() + value(depth + 1));
  return "[" + items.join(",") + space() + "]";
}
/** Nesting depth of JSON text (of the text: duplicate keys that JSON.parse drops count). */
function depthOf(text) {
  let depth = 0;
  let deepest = 0;
  for (const c of text.replace(/"(?:[^"\\]|\\.)*"/g, "")) {
    if (c === "{" || c === "[") deepest = Math.max(deepest, ++depth);
    else if (c === "}" || c === "]") depth--;
  }
  return deepest;
}
function reference(text, config) {
  const size = enc.encode(text).length;
  if (size > config.max_bytes) return `larger than ${config.max_bytes} bytes (${size})`;
  const m = JSON.parse(text);
  if (depthOf(text) > config.body_max_depth) return `nested deeper than ${config.body_max_depth}`;
  for (const f of config.require) if (m[f] === undefined || m[f] === null) return `missing field "${f}"`;
  if (m.type === undefined || m.type === null) return 'missing field "type"';
  if (typeof m.type !== "string") return "type is not a string";
  return config.types.includes(m.type) ? "pass" : `type "${m.type}" not allowed`;
}
{
  const g = guard();
  for (let i = 0; i < 20000; i++) {
    const members = [];
    for (let n = rand(6); n > 0; n--) {
      const key = rand(3) ? pick(["type", "from", "body"]) : pick(WORDS);
      members.push(space() + literal(key) + space() + ":" + space() + value(2));
    }
    const text = space() + "{" + members.join(",") + space() + "}" + space();
    const want = reference(text, CONFIG);
    const got = g.handle(text);
    // Long rejected types are shortened; compare the kept part.
    if (want.startsWith('type "') && got.endsWith('..." not allowed')) {
      assert.ok(want.startsWith(got.slice(0, -16)), text);
    } else assert.equal(got, want, text);
    checks++;
  }
}

// --- No growth under repeated calls ----------------------------------------------
{
  const g = guard({ require: ["from"], types: ["message"] });
  const messages = [
    '{"type":"message","from":"a","body":{}}',
    `{"type":"other","from":"a","body":"${"x".repeat(50000)}"}`,
    '{"type":"message","body":[[[]]]}',
  ];
  for (const m of messages) g.handle(m);
  const before = g.memory();
  for (let i = 0; i < 100000; i++) g.handle(messages[i % 3]);
  assert.equal(g.memory(), before, "memory grew");
  checks++;
}

console.log(`guard: ${checks} checks passed`);
