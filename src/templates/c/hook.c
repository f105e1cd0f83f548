// {{name}}: a hookbus filter hook in C. It drops every message whose JSON contains the
// text configured as `block` (default "forbidden") and passes the rest.
// Edit exports_hook_handle to make it yours; wit/hook.wit documents the contract and
// bindings/hook.h shows the C types.

#include "hook.h"

#include <stdlib.h>
#include <string.h>

static char block[256] = "forbidden";

// Finds needle in [text, text+len).
static int contains(const uint8_t *text, size_t len, const char *needle) {
    size_t n = strlen(needle);
    for (size_t i = 0; n <= len && i <= len - n; i++)
        if (memcmp(text + i, needle, n) == 0) return 1;
    return 0;
}

// `config` is the hook's `config:` from hooks.yaml as JSON text. This reads
// {"block": "..."} by hand to stay dependency-free; a real hook may bundle a JSON
// library. Strings passed in are owned by the hook and must be freed.
bool exports_hook_init(hook_string_t *config, hook_string_t *err) {
    bool ok = true;
    const char *text = (const char *)config->ptr, *end = text + config->len;
    const char *key = text;
    while (key && key < end && !(end - key >= 7 && memcmp(key, "\"block\"", 7) == 0))
        key = memchr(key + 1, '"', (size_t)(end - key - 1));
    if (key && key < end) {
        const char *p = key + 7;
        while (p < end && (*p == ' ' || *p == ':')) p++;
        const char *close = p < end && *p == '"' ? memchr(p + 1, '"', (size_t)(end - p - 1)) : NULL;
        size_t n = close ? (size_t)(close - p - 1) : 0;
        if (!close || n == 0 || n >= sizeof block) {
            hook_string_dup(err, "config: block: expected a non-empty string");
            ok = false;
        } else {
            memcpy(block, p + 1, n);
            block[n] = 0;
        }
    }
    hook_string_free(config);
    return ok;
}

void exports_hook_handle(hook_message_t *msg, hook_verdict_t *ret) {
    if (contains(msg->json.ptr, msg->json.len, block)) {
        // The reason is freed by the bindings after the call, so it is malloc'd.
        size_t n = strlen(block) + 12;
        char *reason = malloc(n);
        strcpy(reason, "contains \"");
        strcat(reason, block);
        strcat(reason, "\"");
        ret->tag = HOOKBUS_HOOK_TYPES_VERDICT_DROP;
        ret->val.drop.ptr = (uint8_t *)reason;
        ret->val.drop.len = strlen(reason);
    } else {
        ret->tag = HOOKBUS_HOOK_TYPES_VERDICT_PASS;
    }
    hook_message_free(msg);
}
