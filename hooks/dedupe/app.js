// dedupe: a hookbus filter that drops repeats of the same message within a time window.
//
// A message's key is the canonical JSON (object keys sorted) of the values at the
// configured field paths. Keys longer than RAW_KEY_MAX characters are replaced by their
// FNV-1a 64 hash, so memory stays bounded whatever the message size; shorter ones are
// kept as they are, which is exact and faster than hashing them in JS.
//
// The first sighting of a key opens a window of `window_ms`; every repeat inside that
// window is dropped, and repeats do not extend it. Keys live in a Map, whose insertion
// order is the order of first sightings, so expired keys are evicted from its front and
// the oldest key goes first when `max_keys` is reached.
//
// Module-level code runs once at build time (the engine state is snapshotted), so
// host functions are only called from `init` and `handle`.

import { nowMs } from "hookbus:hook/host@0.1.2";

const DEFAULTS = { key: ["from", "to", "body"], window_ms: 5000, max_keys: 10000 };
const RAW_KEY_MAX = 256;

let keyPaths; // array of arrays of field names, e.g. [["from"], ["body", "user"]]
let windowMs;
let maxKeys;
let seen; // key -> { at: ms of first sighting, id: that message's id or null }

export function init(configJson) {
    const given = JSON.parse(configJson);
    if (given === null || typeof given !== "object" || Array.isArray(given)) {
        throw new Error(`config must be a mapping of key, window_ms, max_keys, got ${configJson}`);
    }
    for (const name of Object.keys(given)) {
        if (!Object.hasOwn(DEFAULTS, name)) {
            throw new Error(`unknown config key \`${name}\` (known: key, window_ms, max_keys)`);
        }
    }
    const config = { ...DEFAULTS, ...given };
    keyPaths = parseKeyPaths(config.key);
    windowMs = positiveInteger("window_ms", config.window_ms);
    maxKeys = positiveInteger("max_keys", config.max_keys);
    seen = new Map();
}

export function handle(msg) {
    const now = nowMs();
    evictExpired(now);

    const text = canonicalJson(keyOf(JSON.parse(msg.json)));
    // A hash (hex digits) never equals a raw key (JSON text of an array, "[…]").
    const key = text.length <= RAW_KEY_MAX ? text : fnv1a64(text);
    const first = seen.get(key);
    if (first !== undefined) {
        const age = now - first.at;
        if (age >= 0 && age < windowMs) {
            const of = first.id ? first.id : `key ${fnv1a64(text)}`;
            return { tag: "drop", val: `duplicate of ${of} seen ${age} ms ago` };
        }
        // Out of its window but not yet evicted (possible after the clock went back):
        // a new first sighting, at the back of the Map.
        seen.delete(key);
    }
    seen.set(key, { at: now, id: msg.envelope.id });
    if (seen.size > maxKeys) {
        seen.delete(seen.keys().next().value);
    }
    return { tag: "pass" };
}

// Drops keys from the front of the Map (the oldest first sightings) while they are out
// of their window. A first sighting in the future means the clock went back; it is
// dropped too rather than kept for the length of the jump.
function evictExpired(now) {
    for (const [key, first] of seen) {
        const age = now - first.at;
        if (age >= 0 && age < windowMs) break;
        seen.delete(key);
    }
}

// The values at the key paths, in order; a missing field counts as null.
function keyOf(message) {
    return keyPaths.map((path) => {
        let value = message;
        for (const field of path) {
            if (value === null || typeof value !== "object" || !Object.hasOwn(value, field)) {
                return null;
            }
            value = value[field];
        }
        return value;
    });
}

// JSON text in which every object's keys are sorted, so {"a":1,"b":2} and
// {"b":2,"a":1} give one key. (JS puts integer-like keys first whatever the insertion
// order, which is still canonical: the order depends only on the set of keys.)
function canonicalJson(value) {
    return JSON.stringify(sortedCopy(value));
}

function sortedCopy(value) {
    if (value === null || typeof value !== "object") {
        return value;
    }
    if (Array.isArray(value)) {
        return value.map(sortedCopy);
    }
    // No prototype, so a "__proto__" field is copied as a plain field.
    const sorted = Object.create(null);
    for (const field of Object.keys(value).sort()) {
        sorted[field] = sortedCopy(value[field]);
    }
    return sorted;
}

// FNV-1a 64 over the text's UTF-16 code units, as 16 hex digits. The 64-bit state is
// kept in two 32-bit halves (QuickJS's BigInt is far slower), and the multiplication by
// the FNV prime 2^40 + 0x1b3 is done as h * 0x1b3 + (h << 40) with exact double
// arithmetic (every product is below 2^53), avoiding Math calls in the loop.
function fnv1a64(text) {
    let hi = 0xcbf29ce4;
    let lo = 0x84222325;
    for (let i = 0; i < text.length; i++) {
        lo = (lo ^ text.charCodeAt(i)) >>> 0;
        const low = lo * 0x1b3;
        hi = (hi * 0x1b3 + (lo << 8) + ((low / 0x100000000) >>> 0)) >>> 0;
        lo = low >>> 0;
    }
    return hi.toString(16).padStart(8, "0") + lo.toString(16).padStart(8, "0");
}

function parseKeyPaths(key) {
    if (!Array.isArray(key) || key.length === 0) {
        throw new Error(
            `config key \`key\` must be a non-empty list of field paths like [from, body.user], got ${JSON.stringify(key)}`,
        );
    }
    return key.map((path) => {
        const fields = typeof path === "string" ? path.split(".") : [];
        if (fields.length === 0 || fields.includes("")) {
            throw new Error(
                `config key \`key\`: ${JSON.stringify(path)} is not a dotted field path like "body.user"`,
            );
        }
        return fields;
    });
}

function positiveInteger(name, value) {
    if (!Number.isSafeInteger(value) || value < 1) {
        throw new Error(`config key \`${name}\` must be a positive integer, got ${JSON.stringify(value)}`);
    }
    return value;
}
