//! What the core needs from its host (Envoy), as a few small traits: the proxy-wasm layer
//! (`filter`) implements them over the ABI, the unit tests over fakes.
//!
//! - [`Clock`], [`SharedData`] and [`Calls`]: what every part that outlives a request shares (the
//!   credentials provider, discovery, the version guard, learned types);
//! - `credentials::provider::Host` and `discovery::Host` add their stats;
//! - `flow::Host` adds one request: its headers and bodies, local answers, filter state, stats.

use crate::credentials::call::Call;
use std::time::{Duration, SystemTime};

pub trait Clock {
    /// The wall clock; `None` when the host cannot tell.
    fn now(&self) -> Option<SystemTime>;
}

/// Envoy's shared data: one key-value store for every worker of the plugin, with
/// compare-and-swap.
pub trait SharedData {
    /// A value and its CAS token (`None` for an absent key).
    fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes a value only if it is still at `cas` (`None`: only if the key is still absent).
    /// False if another worker wrote first.
    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
    /// Writes a value whatever is there (only the holder of a lock writes such a key).
    fn overwrite_shared_data(&self, key: &str, value: &[u8]) -> bool;
}

/// HTTP calls through Envoy clusters, answered later to the root context with the token.
pub trait Calls {
    fn dispatch(&self, call: &Call, timeout: Duration) -> Result<u32, String>;
}
