//! The container lifecycle, a file per verb as youki's libcontainer lays
//! it out: `builder` (create), `from_image`, `start`, `wait`, `kill`,
//! `exec`, `delete`, `detach` (`run -d`) (`volumes`: with `rm -v`) and `commit`, all on the handles of `handle`
//! ([`Container`], [`RunningContainer`]).

pub(crate) mod builder;
pub(crate) mod commit;
pub(crate) mod delete;
pub(crate) mod detach;
pub(crate) mod exec;
pub(crate) mod from_image;
pub(crate) mod handle;
pub(crate) mod kill;
pub(crate) mod monitor;
pub(crate) mod start;
pub(crate) mod volumes;
pub(crate) mod wait;

pub use self::builder::ContainerBuilder;
pub use self::commit::{CommitError, CommitOptions, Committed};
pub use self::exec::ExecOptions;
pub use self::handle::{Container, RunningContainer};
