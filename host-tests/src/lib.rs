//! A proxy-wasm host on wasmtime for testing the built plugin.
