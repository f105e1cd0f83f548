// The bindings in wit/bindings/c were generated with --no-object-file: the component
// type is embedded by `wasm-tools component embed` instead (see build.sh). This is the
// symbol the bindings reference to make sure that object is linked.
void __component_type_object_force_link_hook(void) {}
