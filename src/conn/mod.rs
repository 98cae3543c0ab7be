//! What one client connection carries through every stage: its state and clocks, what all
//! connections share, the send clock, the drain that ends them, and how its task is polled.

pub(crate) mod self_wake;
pub(crate) mod send_timeout;
pub(crate) mod shared;
pub mod shutdown;
pub(crate) mod state;
