// A small, strict JSON reader for hook configs (RFC 8259: objects, arrays, strings
// with every escape, numbers, true/false/null). It builds a tree of `JsonValue`s and
// is meant for `init`, where allocating is fine; it is not used per message.
//
// AssemblyScript has no exceptions, so `parseJson` returns null on bad input and
// leaves the reason in `jsonError`.

export const enum Kind {
  Null,
  Bool,
  Number,
  String,
  Array,
  Object,
}

export class JsonValue {
  bool: bool = false;
  num: f64 = 0;
  /// The string's value, or a number's source text.
  str: string = "";
  /// Array elements, or object values (parallel to `keys`, in source order).
  items: JsonValue[] = [];
  keys: string[] = [];

  constructor(public kind: Kind) {}

  /// Short description for error messages: `5`, `"abc"`, `an array`, …
  describe(): string {
    switch (this.kind) {
      case Kind.Null:
        return "null";
      case Kind.Bool:
        return this.bool ? "true" : "false";
      case Kind.Number:
        return this.str;
      case Kind.String:
        return quote(this.str);
      case Kind.Array:
        return "an array";
      default:
        return "an object";
    }
  }
}

/// Why the last `parseJson` failed.
export let jsonError = "";

/// Parses one JSON document (surrounding whitespace allowed), or returns null.
export function parseJson(text: string): JsonValue | null {
  jsonError = "";
  const reader = new Reader(text);
  const value = reader.value(0);
  if (value === null) return null;
  reader.skipSpace();
  if (reader.pos < text.length) return reader.fail("unexpected text after the value");
  return value;
}

/// `s` as a JSON string literal, quotes included.
export function quote(s: string): string {
  let out = '"';
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c != 0x22 && c != 0x5c && c >= 0x20) continue;
    out += s.substring(start, i);
    if (c == 0x22) out += '\\"';
    else if (c == 0x5c) out += "\\\\";
    else if (c == 0x0a) out += "\\n";
    else if (c == 0x0d) out += "\\r";
    else if (c == 0x09) out += "\\t";
    else out += "\\u00" + (c < 0x10 ? "0" : "1") + HEX.charAt(c & 0xf);
    start = i + 1;
  }
  return out + s.substring(start) + '"';
}

const HEX = "0123456789abcdef";
/// Deeper documents are refused rather than risk the wasm stack.
const MAX_DEPTH = 128;

class Reader {
  pos: i32 = 0;

  constructor(private text: string) {}

  fail(what: string): JsonValue | null {
    if (jsonError.length == 0) jsonError = what + " at character " + this.pos.toString();
    return null;
  }

  skipSpace(): void {
    const text = this.text;
    while (this.pos < text.length) {
      const c = text.charCodeAt(this.pos);
      if (c != 0x20 && c != 0x0a && c != 0x0d && c != 0x09) break;
      this.pos++;
    }
  }

  value(depth: i32): JsonValue | null {
    this.skipSpace();
    if (this.pos >= this.text.length) return this.fail("unexpected end");
    const c = this.text.charCodeAt(this.pos);
    if (c == 0x7b) return this.object(depth + 1); // {
    if (c == 0x5b) return this.array(depth + 1); // [
    if (c == 0x22) return this.string();
    if (c == 0x2d || (c >= 0x30 && c <= 0x39)) return this.number();
    if (this.literal("true")) {
      const v = new JsonValue(Kind.Bool);
      v.bool = true;
      return v;
    }
    if (this.literal("false")) return new JsonValue(Kind.Bool);
    if (this.literal("null")) return new JsonValue(Kind.Null);
    return this.fail("unexpected " + quote(this.text.charAt(this.pos)));
  }

  literal(word: string): bool {
    if (this.text.substr(this.pos, word.length) != word) return false;
    this.pos += word.length;
    return true;
  }

  object(depth: i32): JsonValue | null {
    if (depth > MAX_DEPTH) return this.fail("nested too deeply");
    const v = new JsonValue(Kind.Object);
    this.pos++; // {
    this.skipSpace();
    if (this.eat(0x7d)) return v; // }
    while (true) {
      this.skipSpace();
      if (this.pos >= this.text.length || this.text.charCodeAt(this.pos) != 0x22) {
        return this.fail("expected a string key");
      }
      const key = this.string();
      if (key === null) return null;
      this.skipSpace();
      if (!this.eat(0x3a)) return this.fail('expected ":"');
      const item = this.value(depth);
      if (item === null) return null;
      v.keys.push(key.str);
      v.items.push(item);
      this.skipSpace();
      if (this.eat(0x2c)) continue; // ,
      if (this.eat(0x7d)) return v; // }
      return this.fail('expected "," or "}"');
    }
  }

  array(depth: i32): JsonValue | null {
    if (depth > MAX_DEPTH) return this.fail("nested too deeply");
    const v = new JsonValue(Kind.Array);
    this.pos++; // [
    this.skipSpace();
    if (this.eat(0x5d)) return v; // ]
    while (true) {
      const item = this.value(depth);
      if (item === null) return null;
      v.items.push(item);
      this.skipSpace();
      if (this.eat(0x2c)) continue; // ,
      if (this.eat(0x5d)) return v; // ]
      return this.fail('expected "," or "]"');
    }
  }

  eat(c: i32): bool {
    if (this.pos < this.text.length && this.text.charCodeAt(this.pos) == c) {
      this.pos++;
      return true;
    }
    return false;
  }

  /// A string literal at `pos` (on its opening quote), decoded.
  string(): JsonValue | null {
    const text = this.text;
    this.pos++; // opening quote
    let out = "";
    let start = this.pos;
    while (this.pos < text.length) {
      const c = text.charCodeAt(this.pos);
      if (c == 0x22) {
        const v = new JsonValue(Kind.String);
        v.str = out + text.substring(start, this.pos);
        this.pos++;
        return v;
      }
      if (c < 0x20) return this.fail("control character in a string");
      if (c != 0x5c) {
        this.pos++;
        continue;
      }
      out += text.substring(start, this.pos);
      const e = this.pos + 1 < text.length ? text.charCodeAt(this.pos + 1) : -1;
      this.pos += 2;
      if (e == 0x22 || e == 0x5c || e == 0x2f) out += String.fromCharCode(e);
      else if (e == 0x62) out += "\b";
      else if (e == 0x66) out += "\f";
      else if (e == 0x6e) out += "\n";
      else if (e == 0x72) out += "\r";
      else if (e == 0x74) out += "\t";
      else if (e == 0x75) {
        // \uXXXX: one UTF-16 code unit; surrogate pairs arrive as two escapes and
        // join up by themselves, since AssemblyScript strings are UTF-16.
        const unit = this.hex4();
        if (unit < 0) return this.fail("bad \\u escape");
        out += String.fromCharCode(unit);
      } else {
        this.pos -= 2;
        return this.fail("bad escape");
      }
      start = this.pos;
    }
    return this.fail("unterminated string");
  }

  hex4(): i32 {
    if (this.pos + 4 > this.text.length) return -1;
    let unit = 0;
    for (let i = 0; i < 4; i++) {
      const c = this.text.charCodeAt(this.pos + i);
      let d: i32;
      if (c >= 0x30 && c <= 0x39) d = c - 0x30;
      else if (c >= 0x61 && c <= 0x66) d = c - 0x61 + 10;
      else if (c >= 0x41 && c <= 0x46) d = c - 0x41 + 10;
      else return -1;
      unit = (unit << 4) | d;
    }
    this.pos += 4;
    return unit;
  }

  /// -? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)?
  number(): JsonValue | null {
    const start = this.pos;
    this.eat(0x2d);
    // A leading zero stands alone ("01" is not a number).
    if (!this.eat(0x30) && this.digits() == 0) return this.fail("bad number");
    if (this.eat(0x2e) && this.digits() == 0) return this.fail("bad number");
    if (this.eat(0x65) || this.eat(0x45)) {
      if (!this.eat(0x2b)) this.eat(0x2d);
      if (this.digits() == 0) return this.fail("bad number");
    }
    const v = new JsonValue(Kind.Number);
    v.str = this.text.substring(start, this.pos);
    v.num = parseFloat(v.str);
    return v;
  }

  digits(): i32 {
    const start = this.pos;
    while (this.pos < this.text.length) {
      const c = this.text.charCodeAt(this.pos);
      if (c < 0x30 || c > 0x39) break;
      this.pos++;
    }
    return this.pos - start;
  }
}
