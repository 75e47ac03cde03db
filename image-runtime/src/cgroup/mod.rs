//! Cgroups: the generic part (`hierarchy`: hierarchies found from
//! `/proc/self/mountinfo`, the container cgroups placed under our own) and,
//! beneath it, the native backend's manager (`manager`: making, limiting,
//! joining and removing a container's cgroups).

mod hierarchy;
pub(crate) mod manager;

pub use self::hierarchy::*;
pub use self::manager::{check_limits, delegated, swap_limit_supported};
