//! yonggi: a Kubernetes container runtime serving CRI v1.
//! See ARCHITECTURE.md for the map of the modules.

#![deny(unsafe_code)]

pub mod config;
pub mod cri;
pub mod daemon;
pub mod image;
pub mod logging;
pub mod node;
pub mod state;
