//! The plugin's pure parts: what `status` shows and what `check` finds. The commands
//! themselves are tested against the real API server (tests/real_cluster/plugin.rs).

mod change;
mod check;
mod cluster;
mod fixtures;
mod status;
