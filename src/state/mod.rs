//! Durable metadata of pods, containers and images, and node settings.

mod store;

pub use store::{Bucket, IdMatch, SCHEMA_VERSION, Store, StoreError, Writer};
