//! Fixtures shared by the integration tests. Each test binary includes this
//! module with `mod support;`, so not every item is used by every binary.
#![allow(dead_code, unused_imports)]

pub mod daemon;
pub mod net;
pub mod proxy;
pub mod registry;

pub use daemon::{Daemon, DaemonOptions};
pub use registry::Registry;
pub mod engine;
pub mod rootfs;
