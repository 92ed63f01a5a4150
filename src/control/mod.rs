//! Control plane: the config file, offline replay, and the text and JSON
//! renderings the CLI prints.

pub mod config;
pub mod format;
pub mod replay;
