//! vllm-sim: a fleet of simulated vLLM servers and a load generator.
//!
//! The simulator models vLLM independently of the plugin (its own tokenizer, block hashing and
//! scheduler), so routing decisions have the consequences they would have on real pods.
//! See sim/README.md for the flags, the physics and where its numbers come from.

pub mod api;
pub mod engine;
pub mod fleet;
pub mod kv;
pub mod load;
pub mod metrics;
pub mod pod;
pub mod profile;
pub mod reply;
pub mod tokenizer;
