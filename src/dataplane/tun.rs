//! TUN backend (fallback where AF_XDP is not available). Not written yet.

use super::{DataplaneError, Running};
use crate::control::config::Config;
use crate::engine::Engine;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// TUN devices and policy routes natgw installed; removed on drop.
pub struct TunGuard;

pub fn start(
    _cfg: &Config,
    _engine: Arc<Engine>,
    _stop: Arc<AtomicBool>,
) -> Result<Running, DataplaneError> {
    Err(DataplaneError(
        "backend = \"tun\" is not implemented yet".into(),
    ))
}
