// The bindings were generated with --no-object-file: build.sh embeds the component
// type with `wasm-tools component embed`. This is the symbol the bindings reference.
void __component_type_object_force_link_hook(void) {}
