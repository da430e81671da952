//! One worker's VM: its store and instance, started as Envoy starts it, and every call into it
//! (a trap marks the VM crashed, as in Envoy).

use super::{HostError, HostResult};
use crate::abi::LogLevel;
use crate::host::{HostState, Phase, Stream};
use wasmtime::{Extern, Instance, Store, WasmParams, WasmResults};

/// Envoy's first context id in a VM is the root context's.
pub(crate) const ROOT_CONTEXT_ID: u32 = 1;

pub(crate) struct Vm {
    pub store: Store<HostState>,
    instance: Instance,
    pub next_context: u32,
    crashed: Option<String>,
}

impl Vm {
    pub(super) fn new(store: Store<HostState>, instance: Instance) -> Self {
        Self { store, instance, next_context: ROOT_CONTEXT_ID + 1, crashed: None }
    }

    fn index(&self) -> usize {
        self.store.data().vm
    }

    /// `_initialize` (and `main`, if exported) or `_start`, then the root context,
    /// `proxy_on_vm_start` and `proxy_on_configure`; a `false` from either is a refusal.
    pub(super) fn start(&mut self, vm_config_len: usize, plugin_config_len: usize) -> HostResult<()> {
        let has = |vm: &mut Vm, name: &str| vm.instance.get_export(&mut vm.store, name).is_some();
        if has(self, "_initialize") {
            self.call::<(), ()>("_initialize", Phase::Idle, ROOT_CONTEXT_ID, ())?;
            if has(self, "main") {
                self.call::<(i32, i32), i32>("main", Phase::Idle, ROOT_CONTEXT_ID, (0, 0))?;
            }
        } else {
            self.call::<(), ()>("_start", Phase::Idle, ROOT_CONTEXT_ID, ())?;
        }
        let root = ROOT_CONTEXT_ID as i32;
        self.call::<(i32, i32), ()>("proxy_on_context_create", Phase::Idle, ROOT_CONTEXT_ID, (root, 0))?;
        let started = self.call::<(i32, i32), i32>(
            "proxy_on_vm_start",
            Phase::VmStart,
            ROOT_CONTEXT_ID,
            (root, vm_config_len as i32),
        )?;
        if started == Some(0) {
            return Err(self.refusal("proxy_on_vm_start returned false"));
        }
        let configured = self.call::<(i32, i32), i32>(
            "proxy_on_configure",
            Phase::Configure,
            ROOT_CONTEXT_ID,
            (root, plugin_config_len as i32),
        )?;
        if configured == Some(0) {
            return Err(self.refusal("proxy_on_configure returned false: the plugin rejected its configuration"));
        }
        Ok(())
    }

    fn refusal(&self, what: &str) -> HostError {
        let vm = self.index();
        let logs: Vec<String> = self
            .store
            .data()
            .shared
            .borrow()
            .logs
            .iter()
            .filter(|l| l.vm == vm)
            .map(|l| format!("  [{:?}] {}", l.level, l.message))
            .collect();
        HostError(format!("vm{vm}: {what}; the plugin logged:\n{}", logs.join("\n")))
    }

    /// Calls an export with `context` as the effective context. `Ok(None)` when the module does not
    /// export it (every callback is optional). A trap marks the VM crashed, as Envoy does.
    pub fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        name: &str,
        phase: Phase,
        context: u32,
        params: P,
    ) -> HostResult<Option<R>> {
        let vm = self.index();
        if let Some(why) = &self.crashed {
            return Err(HostError(format!("vm{vm}: {name} not called: the VM crashed earlier: {why}")));
        }
        let Some(func) = self.instance.get_export(&mut self.store, name).and_then(Extern::into_func) else {
            return Ok(None);
        };
        let func = func
            .typed::<P, R>(&self.store)
            .map_err(|e| HostError(format!("vm{vm}: export {name} has an unexpected signature: {e:#}")))?;
        let logs_before = self.store.data().shared.borrow().logs.len();
        {
            let state = self.store.data_mut();
            state.phase = phase;
            state.effective = context;
        }
        let result = func.call(&mut self.store, params);
        let state = self.store.data_mut();
        state.phase = Phase::Idle;
        state.effective = state.root_id;
        state.flush_output(true);
        result.map(Some).map_err(|e| {
            let message = self.trap_message(name, context, logs_before, &e);
            self.crashed = Some(message.clone());
            HostError(message)
        })
    }

    /// A trap, with the error lines the plugin logged during the call (its stderr, its panic message).
    fn trap_message(&self, name: &str, context: u32, logs_before: usize, error: &wasmtime::Error) -> String {
        let vm = self.index();
        let stderr: Vec<String> = self.store.data().shared.borrow().logs[logs_before..]
            .iter()
            .filter(|l| l.vm == vm && l.level >= LogLevel::Error)
            .map(|l| l.message.clone())
            .collect();
        let chain: Vec<String> = error.chain().map(|c| c.to_string()).collect();
        let stderr = if stderr.is_empty() {
            String::new()
        } else {
            format!("\nplugin stderr/errors:\n  {}", stderr.join("\n  "))
        };
        format!("vm{vm}: {name}(context {context}) trapped: {}{stderr}", chain.join(": "))
    }

    pub(super) fn stream(&mut self, id: u32) -> HostResult<&mut Stream> {
        let vm = self.index();
        self.store.data_mut().streams.get_mut(&id).ok_or_else(|| HostError(format!("vm{vm}: no stream {id}")))
    }
}
