// go-filter: a filter hook in Go, built as a WASI preview 1 *reactor* core module
// (`GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared`), speaking the core-module
// ABI of docs/HOOKS.md through `//go:wasmexport`. It drops a message whose JSON text
// contains "forbidden" and passes the others.
//
// Every export below needs the Go runtime, which the module's `_initialize` export
// starts: the host calls it once after instantiation. Without it the first call traps
// ("wasmexport function called before runtime initialization"). `init` also reads the
// clock (time.Now), and Go's runtime aborts when WASI clocks read zero, so this hook
// needs the default real clocks (no `grants.clock: false`).
package main

import (
	"bytes"
	"fmt"
	"time"
	"unsafe"
)

//go:wasmimport hookbus log
func hostLog(level int32, ptr unsafe.Pointer, len int32)

const logInfo = 2

func log(text string) {
	if len(text) == 0 {
		return
	}
	hostLog(logInfo, unsafe.Pointer(unsafe.StringData(text)), int32(len(text)))
}

var (
	// input is the one buffer the host writes into: the config for init, then each
	// message. The host reads nothing from it after a call returns, and never calls
	// two exports at once, so one buffer serves every call; it only grows.
	// A package variable, so the GC keeps it alive (Go's GC does not move objects).
	input = make([]byte, 4096)
	// config is the hook's config JSON as init got it.
	config string
	// loadedAt is when init ran.
	loadedAt time.Time

	blocked = []byte("forbidden")
	// The drop verdict. The host copies it as soon as handle returns, so one
	// constant buffer is returned for every dropped message.
	dropVerdict = []byte(`{"drop":"contains \"forbidden\""}`)
)

//go:wasmexport alloc
func alloc(size int32) int32 {
	if int(size) > len(input) {
		input = make([]byte, max(int(size), 2*len(input)))
	}
	return int32(uintptr(unsafe.Pointer(&input[0])))
}

//go:wasmexport init
func initHook(ptr, size int32) int32 {
	config = string(input[:size]) // the host wrote it where alloc pointed
	loadedAt = time.Now()
	log(fmt.Sprintf("go-filter: loaded at %s with config %s",
		loadedAt.UTC().Format(time.RFC3339), config))
	return 0
}

//go:wasmexport handle
func handle(ptr, size int32) int64 {
	if bytes.Contains(input[:size], blocked) {
		return packed(dropVerdict)
	}
	return 0 // pass
}

// packed is a verdict's (ptr << 32 | len), as handle returns it.
func packed(verdict []byte) int64 {
	return int64(uintptr(unsafe.Pointer(&verdict[0])))<<32 | int64(len(verdict))
}

// main is not called in a reactor (c-shared) build, but package main needs it.
func main() {}
