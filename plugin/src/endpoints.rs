//! Endpoints as small integers.
//!
//! Addresses (`ip:port` strings) appear only at the edges: the snapshot the scraper sends, the
//! routing events replicated between workers, the destination header, stats and debug output.
//! Inside, the routing memory, the prefix index and the scheduler work on [`EndpointId`]s: dense
//! indexes into per-endpoint arrays, so a decision over 1,000 endpoints does no string hashing.
//!
//! Ids are local to one [`RoutingMemory`](crate::memory::RoutingMemory) (one VM): two workers may
//! give the same address different ids. What they replicate are addresses; each maps them to its own
//! ids when it applies an event. An id is freed when its endpoint leaves the pool and may be reused.

use crate::pool::{Endpoint, PoolSnapshot};
use hashbrown::HashMap;

/// An endpoint known to one routing memory: an index into its per-endpoint arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(pub(crate) u32);

impl EndpointId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Most endpoints one table holds: the snapshot's own bound, twice over, so events naming pods that
/// just left (or just joined, before this worker's snapshot shows them) still find a slot.
pub const MAX_TABLE_ENDPOINTS: usize = 2 * crate::pool::MAX_ENDPOINTS;

/// Address ↔ id, with ids reused after removal so the dense arrays stay as small as the pool.
#[derive(Debug, Clone, Default)]
pub struct EndpointTable {
    addresses: Vec<Option<Box<str>>>,
    by_address: HashMap<Box<str>, EndpointId>,
    free: Vec<u32>,
}

impl EndpointTable {
    /// The id of `address`, creating one if needed; `None` when the table is full.
    pub fn intern(&mut self, address: &str) -> Option<EndpointId> {
        if let Some(&id) = self.by_address.get(address) {
            return Some(id);
        }
        let index = match self.free.pop() {
            Some(index) => index,
            None if self.addresses.len() < MAX_TABLE_ENDPOINTS => {
                self.addresses.push(None);
                (self.addresses.len() - 1) as u32
            }
            None => return None,
        };
        let name: Box<str> = address.into();
        self.addresses[index as usize] = Some(name.clone());
        self.by_address.insert(name, EndpointId(index));
        Some(EndpointId(index))
    }

    /// The id of `address` if it has one.
    pub fn get(&self, address: &str) -> Option<EndpointId> {
        self.by_address.get(address).copied()
    }

    /// The address of a live id ("" for a freed one).
    pub fn address(&self, id: EndpointId) -> &str {
        self.addresses.get(id.index()).and_then(|a| a.as_deref()).unwrap_or("")
    }

    /// Frees an id; its slot may be given to another address.
    pub fn remove(&mut self, id: EndpointId) {
        if let Some(slot) = self.addresses.get_mut(id.index())
            && let Some(name) = slot.take()
        {
            self.by_address.remove(&name);
            self.free.push(id.0);
        }
    }

    /// One past the largest id ever handed out: the length per-endpoint arrays need.
    pub fn capacity(&self) -> usize {
        self.addresses.len()
    }

    /// Live ids, in id order.
    pub fn ids(&self) -> impl Iterator<Item = EndpointId> + '_ {
        self.addresses.iter().enumerate().filter(|(_, a)| a.is_some()).map(|(i, _)| EndpointId(i as u32))
    }

    pub fn len(&self) -> usize {
        self.by_address.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_address.is_empty()
    }
}

/// The pool a decision is made on: the scraper's snapshot (or the static endpoints) with each
/// endpoint's id in the routing memory that installed it (`ids[i]` is `snapshot.endpoints[i]`'s).
#[derive(Debug, Clone)]
pub struct Pool {
    pub snapshot: PoolSnapshot,
    ids: Vec<EndpointId>,
    /// Pool position by id, for the few lookups by id (served endpoint, session token).
    position: HashMap<EndpointId, u32>,
    /// FNV-1a of each address, for rendezvous placement without hashing strings per request.
    address_hashes: Vec<u64>,
}

impl Pool {
    pub(crate) fn new(snapshot: PoolSnapshot, ids: Vec<EndpointId>) -> Self {
        let position = ids.iter().enumerate().map(|(i, id)| (*id, i as u32)).collect();
        let address_hashes = snapshot.endpoints.iter().map(|e| crate::scheduler::fnv1a(&e.address)).collect();
        Self { snapshot, ids, position, address_hashes }
    }

    /// The rendezvous hash of the address at `position`.
    pub fn address_hash(&self, position: u32) -> u64 {
        self.address_hashes[position as usize]
    }

    /// A pool nobody installed: no ids, so nothing can be scheduled on it. Hosts start with it.
    pub fn empty() -> Self {
        Self::new(PoolSnapshot::empty(), Vec::new())
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.snapshot.endpoints
    }

    pub fn ids(&self) -> &[EndpointId] {
        &self.ids
    }

    pub fn endpoint(&self, position: u32) -> &Endpoint {
        &self.snapshot.endpoints[position as usize]
    }

    pub fn address(&self, position: u32) -> &str {
        &self.snapshot.endpoints[position as usize].address
    }

    /// The pool position of the endpoint with this address, if it is a member.
    pub fn position_of(&self, address: &str) -> Option<u32> {
        self.snapshot.endpoints.iter().position(|e| e.address == address).map(|p| p as u32)
    }

    /// The pool position of an id, if it is a member.
    pub fn position_of_id(&self, id: EndpointId) -> Option<u32> {
        self.position.get(&id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_dense_stable_and_reused() {
        let mut t = EndpointTable::default();
        let a = t.intern("10.0.0.1:8000").unwrap();
        let b = t.intern("10.0.0.2:8000").unwrap();
        assert_eq!(t.intern("10.0.0.1:8000"), Some(a), "the same address keeps its id");
        assert_eq!((a.index(), b.index()), (0, 1));
        t.remove(a);
        assert_eq!(t.get("10.0.0.1:8000"), None);
        assert_eq!(t.address(a), "");
        let c = t.intern("10.0.0.3:8000").unwrap();
        assert_eq!(c, a, "a freed id is reused, so arrays stay as small as the pool");
        assert_eq!(t.capacity(), 2);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t = EndpointTable::default();
        for i in 0..MAX_TABLE_ENDPOINTS {
            assert!(t.intern(&format!("10.{}.{}.{}:80", i / 65536, (i / 256) % 256, i % 256)).is_some());
        }
        assert_eq!(t.intern("192.168.0.1:80"), None);
    }
}
