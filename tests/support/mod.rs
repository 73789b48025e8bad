//! Fixtures shared by the integration tests. Each test binary includes this
//! module with `mod support;`, so not every item is used by every binary.
#![allow(dead_code)]

pub mod daemon;
pub mod proxy;

pub use daemon::{Daemon, DaemonOptions};
