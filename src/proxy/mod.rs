//! Forwarding a judged request to the app and its answer back: through hyper's client, over
//! h2c, from an HTTP/2 stream to an HTTP/1.1 app, and the tunnel after an upgrade.

pub(crate) mod failure;
pub(crate) mod h2_to_h1;
pub(crate) mod h2c;
pub(crate) mod hyper_client;
pub(crate) mod tunnel;
