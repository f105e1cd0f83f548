//! zig-filter: a filter hook in Zig, a core module speaking the ABI of docs/HOOKS.md.
//! Built for wasm32-freestanding with -fno-entry -rdynamic, it imports nothing but
//! `hookbus.log`: no WASI, no runtime to start. It drops a message whose JSON text
//! contains "forbidden" and passes the others.

const std = @import("std");

extern "hookbus" fn log(level: i32, ptr: [*]const u8, len: usize) void;

const log_info = 2;

const gpa = std.heap.wasm_allocator;

/// The one buffer the host writes into (the config for `init`, then each message).
/// The host never calls two exports at once and reads nothing from it after a call
/// returns, so every `alloc` may return it; it only grows.
var input: []u8 = &.{};
/// The hook's config JSON, as `init` got it.
var config: []u8 = &.{};

const blocked = "forbidden";
/// The drop verdict. The host copies it as soon as `handle` returns, so one constant
/// buffer serves every dropped message.
const drop_verdict = "{\"drop\":\"contains \\\"forbidden\\\"\"}";

export fn alloc(len: usize) [*]u8 {
    if (len > input.len) {
        if (input.len > 0) gpa.free(input);
        // Out of memory (the hook's memory_mb cap) traps: the host then counts an
        // error and applies on_error.
        input = gpa.alloc(u8, @max(len, 2 * input.len, 4096)) catch @trap();
    }
    return input.ptr;
}

export fn init(ptr: [*]const u8, len: usize) i32 {
    config = gpa.dupe(u8, ptr[0..len]) catch return 1;
    var line: [256]u8 = undefined;
    const text = std.fmt.bufPrint(&line, "zig-filter: loaded with config {s}", .{config}) catch
        "zig-filter: loaded (config too long to show)";
    log(log_info, text.ptr, text.len);
    return 0;
}

export fn handle(ptr: [*]const u8, len: usize) i64 {
    if (std.mem.indexOf(u8, ptr[0..len], blocked) != null) {
        return packed_verdict(drop_verdict);
    }
    return 0; // pass
}

/// A verdict's (ptr << 32 | len), as `handle` returns it.
fn packed_verdict(verdict: []const u8) i64 {
    const ptr: i64 = @intCast(@intFromPtr(verdict.ptr));
    const len: i64 = @intCast(verdict.len);
    return (ptr << 32) | len;
}
