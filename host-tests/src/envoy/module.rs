//! One wasmtime engine for the process, and modules compiled once: in memory for every test of a
//! binary, and on disk beside the `.wasm` for every later run and every other test binary.

use super::{HostError, HostResult};
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use wasmtime::{Engine, Module};

pub(super) fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = wasmtime::Config::new();
        // Like Envoy's runtimes: optimised code, so the benchmark measures what production runs.
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        Engine::new(&config).expect("wasmtime engine with the default configuration")
    })
}

/// Compiles a module once per process and hands out clones. A module read from a file is also
/// cached on disk beside it (`<file>.<hash>.cwasm`): a debug build of Cranelift takes ~15 s for
/// a plugin of a few hundred KiB, and every test binary would pay it again.
pub(super) fn compile(bytes: &[u8], file: Option<&Path>) -> HostResult<Module> {
    static MODULES: OnceLock<Mutex<HashMap<u64, Module>>> = OnceLock::new();
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    let key = hasher.finish();
    // Held while compiling: tests starting together wait for one compile instead of each doing it.
    let mut modules = MODULES.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(module) = modules.get(&key) {
        return Ok(module.clone());
    }
    let cache = file.map(|f| f.with_extension(format!("{key:016x}.cwasm")));
    let module = match cache.as_deref().and_then(load_cached) {
        Some(module) => module,
        None => {
            let module =
                Module::new(engine(), bytes).map_err(|e| HostError(format!("the module does not compile: {e:#}")))?;
            if let Some(cache) = &cache {
                store_cached(&module, cache);
            }
            module
        }
    };
    modules.insert(key, module.clone());
    Ok(module)
}

fn load_cached(cache: &Path) -> Option<Module> {
    if !cache.is_file() {
        return None;
    }
    // SAFETY: the file is one this harness serialized from the same bytes with the same engine
    // configuration (the name carries their hash); wasmtime still checks the engine's version
    // and settings and refuses a mismatch, in which case we compile afresh.
    unsafe { Module::deserialize_file(engine(), cache) }.ok()
}

/// Write then rename, so a concurrent test binary never reads half a file.
fn store_cached(module: &Module, cache: &Path) {
    let Ok(serialized) = module.serialize() else { return };
    let partial = cache.with_extension(format!("partial.{}", std::process::id()));
    if std::fs::write(&partial, serialized).is_ok() && std::fs::rename(&partial, cache).is_ok() {
        remove_stale_caches(cache);
    }
}

/// Removes caches of earlier builds of the same file (`<stem>.<other hash>.cwasm`).
fn remove_stale_caches(current: &Path) {
    let (Some(dir), Some(name)) = (current.parent(), current.file_name().and_then(|n| n.to_str())) else { return };
    let Some(stem) = name.split('.').next() else { return };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let other = entry.file_name();
        let Some(other) = other.to_str() else { continue };
        if other != name && other.starts_with(&format!("{stem}.")) && other.ends_with(".cwasm") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
