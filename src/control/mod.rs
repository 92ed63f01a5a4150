//! Control plane: the config file, offline replay, and the text and JSON
//! renderings the CLI prints.

pub mod config;
pub mod daemon;
pub mod format;
pub mod health;
pub mod replay;
pub mod socket;
