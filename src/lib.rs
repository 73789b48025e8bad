//! yonggi: a Kubernetes container runtime serving CRI v1.
//! See ARCHITECTURE.md for the map of the modules.

#![deny(unsafe_code)]

pub mod config;
pub mod cri;
pub mod daemon;
pub mod image;
pub mod logging;
pub mod monitor;
pub mod net;
pub mod node;
pub mod pod;
pub mod runtime;
pub mod security;
pub mod snapshot;
pub mod state;
pub mod stream;
/// Test and operations tooling (test images, pushing them); not used by the
/// runtime itself.
#[doc(hidden)]
pub mod testimages;
