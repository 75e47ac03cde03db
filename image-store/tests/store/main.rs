//! The integration tests of image-store, one module per area.

mod common;
mod concurrency;
mod conformance;
mod crash;
mod durability;
mod faults;
mod interop;
mod leases;
mod referrers;
mod tags_gc;
mod writeback;
