//! Shared data as this filter lays it out: a fixed, bounded key space per plugin instance.
//!
//! Keys, for the plugin named `N` (Envoy's `plugin_name`, so two filter instances never collide):
//! - `wis.v2/N/snapshot`: the latest valid pool snapshot JSON, as the scraper served it.
//! - `wis.v2/N/snapshot.version`: `[scraper sequence u64][generated_at_ms u64]`, small, so every VM
//!   checks it on its tick and re-reads (and re-parses) the snapshot only when it changed.
//! - `wis.v2/N/lease`: `[expires_at_ms u64][holder u32]`: the VM holding an unexpired lease is the
//!   one that fetches the snapshot this interval; taken with compare-and-swap.
//! - `wis.v2/N/log/head` and `wis.v2/N/log/0..slots`: the routing log (see `shared_log`).
//!
//! Nothing is keyed by endpoint, request or prefix, so the footprint is fixed by configuration and
//! cannot grow with traffic (the ABI has no delete).

use super::abi;
use crate::shared_log::{SharedStore, StoreError};

/// Proxy-wasm shared data behind the core's [`SharedStore`] trait.
pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        abi::get_shared_data(key).map_err(|e| StoreError::Host(e.to_string()))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        abi::set_shared_data(key, value, cas)
            .map_err(|e| if e.is_cas_mismatch() { StoreError::CasMismatch } else { StoreError::Host(e.to_string()) })
    }
}

/// The key names of one plugin instance.
#[derive(Debug, Clone)]
pub struct Keys {
    pub snapshot: String,
    pub snapshot_version: String,
    pub lease: String,
    pub log: String,
}

impl Keys {
    pub fn new(plugin_name: &str) -> Self {
        let base = format!("wis.v2/{plugin_name}");
        Self {
            snapshot: format!("{base}/snapshot"),
            snapshot_version: format!("{base}/snapshot.version"),
            lease: format!("{base}/lease"),
            log: format!("{base}/log"),
        }
    }
}

/// `(sequence, generated_at_ms)` of a snapshot: what identifies a version.
pub type SnapshotVersion = (u64, u64);

pub fn encode_version(version: SnapshotVersion) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&version.0.to_le_bytes());
    out[8..].copy_from_slice(&version.1.to_le_bytes());
    out
}

pub fn decode_version(bytes: &[u8]) -> Option<SnapshotVersion> {
    let seq = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let generated = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((seq, generated))
}

/// Tries to take the fetch lease until `now_ms + period_ms`. True when this VM won it.
pub fn try_take_lease(store: &dyn SharedStore, key: &str, holder: u32, now_ms: u64, period_ms: u64) -> bool {
    let current = match store.get(key) {
        Ok(current) => current,
        Err(_) => return false,
    };
    let cas = match &current {
        Some((bytes, cas)) => {
            let expires = bytes.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0);
            if expires > now_ms {
                return false;
            }
            Some(*cas)
        }
        // Never written: two VMs may both win this once; a duplicate fetch is harmless.
        None => None,
    };
    let mut value = [0u8; 12];
    value[..8].copy_from_slice(&(now_ms + period_ms).to_le_bytes());
    value[8..].copy_from_slice(&holder.to_le_bytes());
    store.set(key, &value, cas).is_ok()
}
