//! `wis-epp`: the plugin's scheduling core as a Gateway API Inference Extension Endpoint Picker.
//!
//! A native gRPC service that speaks the Endpoint Picker Protocol over Envoy's `ext_proc`
//! ([`service`]), deciding with the same core the in-proxy filter runs ([`core`], the only file that
//! calls it). The pool comes from an InferencePool or a static list ([`discovery`]); the pods'
//! metrics from the scraper crate running in this process. Its own metrics ([`stats`]) and the
//! health endpoints are served by [`serve`].

pub mod config;
pub mod core;
pub mod discovery;
pub mod serve;
pub mod service;
pub mod stats;
