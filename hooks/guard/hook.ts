// guard: a size and schema guard for hookbus, as a plain core module (the
// "Core-module ABI" of docs/HOOKS.md). It drops a message when
//   - its JSON is larger than `max_bytes`,
//   - it nests deeper than `body_max_depth` (the message object itself is depth 1),
//   - a field named in `require` is absent or null at the top level, or
//   - `types` is set and the message's `type` is not one of them.
//
// `init` parses the config once and prepares every constant verdict. `handle` then
// reads the message in a single pass without allocating: it walks the top-level
// object, compares each top-level key with the fields it cares about, and skips
// nested values while counting depth.

import { JsonValue, Kind, jsonError, parseJson, quote } from "./json";

@external("hookbus", "log")
declare function hostLog(level: i32, ptr: usize, len: usize): void;

const LOG_DEBUG = 1;
const LOG_ERROR = 4;

function log(level: i32, text: string): void {
  const bytes = String.UTF8.encode(text);
  hostLog(level, changetype<usize>(bytes), bytes.byteLength);
}

// ---------------------------------------------------------------------------
// Configuration, set by `init`.

let maxBytes: usize = 65536;
let maxDepth: i32 = 32;
/// Names of the required top-level fields, UTF-8.
let required: ArrayBuffer[] = [];
/// Allowed values of `type`, UTF-8; empty means any.
let allowedTypes: ArrayBuffer[] = [];

// Verdicts, as the JSON text the ABI returns. Constant ones are built once by `init`;
// `sizeVerdict` and `typeVerdict` keep a prepared prefix and are completed per message.
let missingVerdicts: ArrayBuffer[] = [];
let deepVerdict = new ArrayBuffer(0);
const malformedVerdict = dropVerdict("not a JSON object");
const missingTypeVerdict = dropVerdict('missing field "type"');
const typeNotStringVerdict = dropVerdict("type is not a string");
let sizeVerdict = new ArrayBuffer(0);
let sizePrefix = 0;
const TYPE_PREFIX = String.UTF8.encode('{"drop":"type \\"');
const TYPE_SUFFIX = String.UTF8.encode('\\" not allowed"}');
/// How much of a rejected `type` a drop reason quotes, in bytes of JSON text.
const TYPE_SHOWN: usize = 64;
const ELLIPSIS = String.UTF8.encode("...");
const typeVerdict = new ArrayBuffer(
  TYPE_PREFIX.byteLength + <i32>TYPE_SHOWN + ELLIPSIS.byteLength + TYPE_SUFFIX.byteLength,
);

function dropVerdict(reason: string): ArrayBuffer {
  return String.UTF8.encode('{"drop":' + quote(reason) + "}");
}

// ---------------------------------------------------------------------------
// The ABI.

/// The host's input buffer (config, then each message), reused and grown as needed.
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

export function init(ptr: usize, len: usize): i32 {
  const problem = configure(String.UTF8.decodeUnsafe(ptr, len));
  if (problem.length > 0) {
    log(LOG_ERROR, "guard: bad config: " + problem);
    return 1;
  }
  log(LOG_DEBUG, "guard: " + summary());
  return 0;
}

export function handle(ptr: usize, len: usize): i64 {
  if (len > maxBytes) return sizeDrop(len);
  const scanned = scan(ptr, ptr + len);
  if (scanned == Scan.TooDeep) return verdict(deepVerdict);
  if (scanned == Scan.Malformed) return verdict(malformedVerdict);
  for (let i = 0; i < required.length; i++) {
    if (!unchecked(present[i])) return verdict(unchecked(missingVerdicts[i]));
  }
  if (allowedTypes.length > 0) {
    if (typeValue == Value.Absent || typeValue == Value.Null) return verdict(missingTypeVerdict);
    if (typeValue != Value.String) return verdict(typeNotStringVerdict);
    for (let i = 0; i < allowedTypes.length; i++) {
      const want = unchecked(allowedTypes[i]);
      if (rawEquals(typeStart, typeEnd, typeEscaped, changetype<usize>(want), want.byteLength)) {
        return 0;
      }
    }
    return typeDrop();
  }
  return 0;
}

/// (ptr << 32) | len of a verdict's text.
function verdict(text: ArrayBuffer): i64 {
  return packed(changetype<usize>(text), text.byteLength);
}

function packed(ptr: usize, len: usize): i64 {
  return (<i64>ptr << 32) | <i64>len;
}

// ---------------------------------------------------------------------------
// Config.

const KEYS = ["max_bytes", "require", "types", "body_max_depth"];

/// Applies the config JSON; returns "" or what is wrong with it.
function configure(text: string): string {
  const root = parseJson(text);
  if (root === null) return "not valid JSON: " + jsonError;
  if (root.kind != Kind.Object) return "the config must be an object, got " + root.describe();

  maxBytes = 65536;
  maxDepth = 32;
  let requireNames: string[] = [];
  let typeNames: string[] = [];
  for (let i = 0; i < root.keys.length; i++) {
    const key = root.keys[i];
    const value = root.items[i];
    if (!KEYS.includes(key)) {
      return "unknown key " + quote(key) + " (expected " + KEYS.join(", ") + ")";
    }
    // A key given as null (`types:` left empty in YAML) keeps its default.
    if (value.kind == Kind.Null) continue;
    if (key == "max_bytes") {
      const n = integer(value);
      if (n < 1) return "max_bytes must be an integer from 1 to 2147483647, got " + value.describe();
      maxBytes = <usize>n;
    } else if (key == "body_max_depth") {
      const n = integer(value);
      if (n < 1) {
        return "body_max_depth must be an integer from 1 to 2147483647, got " + value.describe();
      }
      maxDepth = n;
    } else if (key == "require") {
      const names = stringList(key, value);
      if (names === null) return listProblem;
      requireNames = names;
    } else {
      const names = stringList(key, value);
      if (names === null) return listProblem;
      if (names.length == 0) return "types must not be empty (leave it out to allow any type)";
      typeNames = names;
    }
  }

  required = [];
  missingVerdicts = [];
  for (let i = 0; i < requireNames.length; i++) {
    required.push(String.UTF8.encode(requireNames[i]));
    missingVerdicts.push(dropVerdict("missing field " + quote(requireNames[i])));
  }
  present = new StaticArray<bool>(requireNames.length);
  allowedTypes = [];
  for (let i = 0; i < typeNames.length; i++) allowedTypes.push(String.UTF8.encode(typeNames[i]));
  deepVerdict = dropVerdict("nested deeper than " + maxDepth.toString());
  const prefix = String.UTF8.encode('{"drop":"larger than ' + maxBytes.toString() + " bytes (");
  sizePrefix = prefix.byteLength;
  sizeVerdict = new ArrayBuffer(sizePrefix + 13); // up to 10 digits, then `)"}`
  memory.copy(changetype<usize>(sizeVerdict), changetype<usize>(prefix), sizePrefix);
  return "";
}

/// A whole number in 1..2^31-1, or -1.
function integer(value: JsonValue): i32 {
  if (value.kind != Kind.Number) return -1;
  const n = value.num;
  if (n != Math.floor(n) || n < 1 || n > <f64>i32.MAX_VALUE) return -1;
  return <i32>n;
}

let listProblem = "";

function stringList(key: string, value: JsonValue): string[] | null {
  if (value.kind != Kind.Array) {
    listProblem = key + " must be a list of strings, got " + value.describe();
    return null;
  }
  const out: string[] = [];
  for (let i = 0; i < value.items.length; i++) {
    const item = value.items[i];
    if (item.kind != Kind.String) {
      listProblem = key + "[" + i.toString() + "] must be a string, got " + item.describe();
      return null;
    }
    out.push(item.str);
  }
  return out;
}

function summary(): string {
  let text = "max_bytes=" + maxBytes.toString() + " body_max_depth=" + maxDepth.toString();
  text += " require=" + names(required);
  return text + " types=" + (allowedTypes.length > 0 ? names(allowedTypes) : "any");
}

function names(list: ArrayBuffer[]): string {
  const quoted: string[] = [];
  for (let i = 0; i < list.length; i++) quoted.push(quote(String.UTF8.decode(list[i])));
  return "[" + quoted.join(",") + "]";
}

// ---------------------------------------------------------------------------
// The message scan.

const enum Scan {
  Ok,
  TooDeep,
  Malformed,
}

const enum Value {
  Absent,
  Null,
  String,
  Other,
}

const QUOTE: u8 = 0x22;
const BACKSLASH: u8 = 0x5c;

/// Per required field: present and not null (the last occurrence counts, as in
/// serde_json and most readers).
let present = new StaticArray<bool>(0);
/// The top-level `type`: what it is, and for a string its raw contents.
let typeValue = Value.Absent;
let typeStart: usize = 0;
let typeEnd: usize = 0;
let typeEscaped = false;
/// Set by `stringEnd` when the string holds a backslash escape.
let sawEscape = false;

/// Reads the top-level object in `p..end`, filling `present` and `type*`.
/// The host hands hooks valid JSON; this checks only as much structure as it needs
/// to never read out of bounds and to reject what is not an object.
function scan(p: usize, end: usize): Scan {
  memory.fill(changetype<usize>(present), 0, present.length);
  typeValue = Value.Absent;

  p = skipSpace(p, end);
  if (p >= end || load<u8>(p) != 0x7b) return Scan.Malformed; // {
  p = skipSpace(p + 1, end);
  if (p < end && load<u8>(p) == 0x7d) return skipSpace(p + 1, end) == end ? Scan.Ok : Scan.Malformed;

  while (p < end) {
    // "key"
    if (load<u8>(p) != QUOTE) return Scan.Malformed;
    const keyStart = p + 1;
    sawEscape = false;
    const keyEnd = stringEnd(keyStart, end);
    if (keyEnd >= end) return Scan.Malformed;
    const keyEscaped = sawEscape;

    // :
    p = skipSpace(keyEnd + 1, end);
    if (p >= end || load<u8>(p) != 0x3a) return Scan.Malformed;
    p = skipSpace(p + 1, end);
    if (p >= end) return Scan.Malformed;

    // value
    const c = load<u8>(p);
    let kind = Value.Other;
    let valueStart: usize = 0;
    let valueEnd: usize = 0;
    let valueEscaped = false;
    if (c == QUOTE) {
      kind = Value.String;
      valueStart = p + 1;
      sawEscape = false;
      valueEnd = stringEnd(valueStart, end);
      if (valueEnd >= end) return Scan.Malformed;
      valueEscaped = sawEscape;
      p = valueEnd + 1;
    } else if (c == 0x7b || c == 0x5b) {
      // { or [: the first nested level is depth 2.
      if (maxDepth < 2) return Scan.TooDeep;
      const after = skipNested(p + 1, end);
      if (after == TOO_DEEP) return Scan.TooDeep;
      if (after == UNTERMINATED) return Scan.Malformed;
      p = <usize>after;
    } else {
      // A number or a literal: up to the next delimiter.
      const start = p;
      while (p < end) {
        const d = load<u8>(p);
        if (d == 0x2c || d == 0x7d || d <= 0x20) break; // , } or whitespace
        p++;
      }
      if (p == start) return Scan.Malformed;
      if (p - start == 4 && load<u32>(start) == 0x6c6c756e) kind = Value.Null; // "null"
    }
    note(keyStart, keyEnd, keyEscaped, kind, valueStart, valueEnd, valueEscaped);

    // , or }
    p = skipSpace(p, end);
    if (p >= end) return Scan.Malformed;
    const d = load<u8>(p);
    if (d == 0x7d) return skipSpace(p + 1, end) == end ? Scan.Ok : Scan.Malformed;
    if (d != 0x2c) return Scan.Malformed;
    p = skipSpace(p + 1, end);
  }
  return Scan.Malformed; // ran out after a ","
}

/// Records a top-level member if its key is `type` or a required field.
function note(
  keyStart: usize,
  keyEnd: usize,
  keyEscaped: bool,
  kind: Value,
  valueStart: usize,
  valueEnd: usize,
  valueEscaped: bool,
): void {
  if (rawEquals(keyStart, keyEnd, keyEscaped, changetype<usize>(TYPE), 4)) {
    typeValue = kind;
    typeStart = valueStart;
    typeEnd = valueEnd;
    typeEscaped = valueEscaped;
  }
  for (let i = 0; i < required.length; i++) {
    const want = unchecked(required[i]);
    if (rawEquals(keyStart, keyEnd, keyEscaped, changetype<usize>(want), want.byteLength)) {
      unchecked((present[i] = kind != Value.Null));
    }
  }
}

const TYPE = String.UTF8.encode("type");

// What `skipNested` returns instead of a position.
const TOO_DEEP: i64 = -1;
const UNTERMINATED: i64 = -2;

/// Skips a nested object or array whose opener is just before `p` (depth 2), and
/// returns the position after its closer, TOO_DEEP past `maxDepth`, or UNTERMINATED.
function skipNested(p: usize, end: usize): i64 {
  let depth = 2;
  while (p < end) {
    const c = load<u8>(p);
    if (c == QUOTE) {
      p = stringEnd(p + 1, end);
      if (p >= end) return UNTERMINATED;
    } else if (c == 0x7b || c == 0x5b) {
      if (++depth > maxDepth) return TOO_DEEP;
    } else if (c == 0x7d || c == 0x5d) {
      if (--depth == 1) return <i64>(p + 1);
    }
    p++;
  }
  return UNTERMINATED;
}

/// The position of the quote that closes the string starting at `p` (just after
/// its opening quote), or `end` when unterminated. Sets `sawEscape` on a backslash.
@inline
function stringEnd(p: usize, end: usize): usize {
  while (p < end) {
    const c = load<u8>(p);
    if (c == QUOTE) return p;
    if (c == BACKSLASH) {
      sawEscape = true;
      p += 2;
    } else {
      p++;
    }
  }
  return end;
}

@inline
function skipSpace(p: usize, end: usize): usize {
  while (p < end) {
    const c = load<u8>(p);
    if (c != 0x20 && c != 0x0a && c != 0x0d && c != 0x09) break;
    p++;
  }
  return p;
}

/// Whether the raw JSON string contents `p..end` decode to the UTF-8 bytes
/// `want..want+wantLen`. Without escapes this is a plain byte comparison; with
/// them, each escape is decoded to UTF-8 on the fly, so `"ty\u0070e"` is `type`.
function rawEquals(p: usize, end: usize, escaped: bool, want: usize, wantLen: usize): bool {
  if (!escaped) return end - p == wantLen && memory.compare(p, want, wantLen) == 0;
  let w = want;
  const wantEnd = want + wantLen;
  while (p < end) {
    let c = <u32>load<u8>(p);
    if (c != BACKSLASH) {
      if (w >= wantEnd || load<u8>(w) != c) return false;
      w++;
      p++;
      continue;
    }
    const e = load<u8>(p + 1);
    p += 2;
    if (e == 0x75) {
      // \uXXXX, possibly a surrogate pair \uD8xx\uDCxx
      c = hex4(p, end);
      if (c == BAD_HEX) return false;
      p += 4;
      if (c >= 0xd800 && c < 0xdc00 && end - p >= 6 && load<u16>(p) == 0x755c) {
        const low = hex4(p + 2, end);
        if (low >= 0xdc00 && low < 0xe000) {
          c = 0x10000 + ((c - 0xd800) << 10) + (low - 0xdc00);
          p += 6;
        }
      }
      // Compare the code point's UTF-8 (WTF-8 for a lone surrogate, like the
      // config strings' encoding).
      if (c < 0x80) {
        if (w >= wantEnd || load<u8>(w) != c) return false;
        w++;
      } else {
        const n: u32 = c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
        if (wantEnd - w < n) return false;
        let lead: u32;
        if (n == 2) lead = 0xc0 | (c >> 6);
        else if (n == 3) lead = 0xe0 | (c >> 12);
        else lead = 0xf0 | (c >> 18);
        if (load<u8>(w) != lead) return false;
        for (let k: u32 = 1; k < n; k++) {
          if (load<u8>(w + k) != (0x80 | ((c >> (6 * (n - 1 - k))) & 0x3f))) return false;
        }
        w += n;
      }
      continue;
    }
    if (e == 0x62) c = 0x08; // \b
    else if (e == 0x66) c = 0x0c; // \f
    else if (e == 0x6e) c = 0x0a; // \n
    else if (e == 0x72) c = 0x0d; // \r
    else if (e == 0x74) c = 0x09; // \t
    else c = e; // \" \\ \/
    if (w >= wantEnd || load<u8>(w) != c) return false;
    w++;
  }
  return w == wantEnd;
}

const BAD_HEX: u32 = 0xffffffff;

function hex4(p: usize, end: usize): u32 {
  if (end - p < 4) return BAD_HEX;
  let v: u32 = 0;
  for (let i: usize = 0; i < 4; i++) {
    const c = <u32>load<u8>(p + i);
    let d: u32;
    if (c - 0x30 < 10) d = c - 0x30;
    else if ((c | 0x20) - 0x61 < 6) d = (c | 0x20) - 0x61 + 10;
    else return BAD_HEX;
    v = (v << 4) | d;
  }
  return v;
}

// ---------------------------------------------------------------------------
// Verdicts completed per message.

/// `larger than N bytes (len)`.
function sizeDrop(len: usize): i64 {
  const base = changetype<usize>(sizeVerdict);
  let p = base + sizePrefix;
  // Decimal digits of len, most significant first.
  let digits: usize = 1;
  for (let v = len; v >= 10; v /= 10) digits++;
  for (let i = digits, v = len; i > 0; i--, v /= 10) store<u8>(p + i - 1, 0x30 + <u8>(v % 10));
  p += digits;
  store<u8>(p, 0x29); // )
  store<u8>(p + 1, QUOTE);
  store<u8>(p + 2, 0x7d); // }
  return packed(base, p + 3 - base);
}

/// `type "x" not allowed`. The type's raw JSON contents are already valid inside a
/// JSON string, so they are copied as they are; a long one is cut, at a character
/// or escape boundary, after TYPE_SHOWN bytes.
function typeDrop(): i64 {
  const base = changetype<usize>(typeVerdict);
  let p = base;
  memory.copy(p, changetype<usize>(TYPE_PREFIX), TYPE_PREFIX.byteLength);
  p += TYPE_PREFIX.byteLength;
  const shown = typeEnd - typeStart <= TYPE_SHOWN ? typeEnd : cutPoint(typeStart, typeEnd);
  memory.copy(p, typeStart, shown - typeStart);
  p += shown - typeStart;
  if (shown < typeEnd) {
    memory.copy(p, changetype<usize>(ELLIPSIS), ELLIPSIS.byteLength);
    p += ELLIPSIS.byteLength;
  }
  memory.copy(p, changetype<usize>(TYPE_SUFFIX), TYPE_SUFFIX.byteLength);
  p += TYPE_SUFFIX.byteLength;
  return packed(base, p - base);
}

/// The last boundary at most TYPE_SHOWN bytes into `p..end` that splits neither an
/// escape nor a UTF-8 sequence.
function cutPoint(p: usize, end: usize): usize {
  const limit = p + TYPE_SHOWN;
  while (p < end) {
    let next = p + 1;
    const c = load<u8>(p);
    if (c == BACKSLASH) next = p + (load<u8>(p + 1) == 0x75 ? 6 : 2);
    else if (c >= 0xf0) next = p + 4;
    else if (c >= 0xe0) next = p + 3;
    else if (c >= 0xc0) next = p + 2;
    if (next > limit) break;
    p = next;
  }
  return p;
}
