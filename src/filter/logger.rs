//! The `log` crate's backend: Envoy's log (component `wasm`), through [`abi::log`], which cannot
//! panic (the SDK's logger unwraps the host's status).

use super::abi::{self, Level};

struct HostLogger;

static LOGGER: HostLogger = HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Trace => Level::Trace,
            log::Level::Debug => Level::Debug,
            log::Level::Info => Level::Info,
            log::Level::Warn => Level::Warn,
            log::Level::Error => Level::Error,
        };
        // If even logging fails there is nothing left to tell.
        let _ = abi::log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}

/// Installs the logger (once per VM, at info until the VM starts: no host call is allowed while
/// the module initialises) and a panic hook that says what happened before the VM traps (a panic
/// is a bug: the filter is written not to panic, and clippy denies the usual ways).
pub fn install() {
    if log::set_logger(&LOGGER).is_ok() {
        std::panic::set_hook(Box::new(|info| {
            let _ = abi::log(Level::Critical, &format!("healthlake-relay: {info}"));
        }));
    }
    log::set_max_level(log::LevelFilter::Info);
}

/// Follows Envoy's level for the `wasm` component, so that disabled levels cost no host call.
pub fn follow_host_level() {
    let level = match abi::log_level() {
        Ok(Level::Trace) => log::LevelFilter::Trace,
        Ok(Level::Debug) => log::LevelFilter::Debug,
        Ok(Level::Info) | Err(_) => log::LevelFilter::Info,
        Ok(Level::Warn) => log::LevelFilter::Warn,
        Ok(Level::Error) => log::LevelFilter::Error,
        Ok(Level::Critical) => log::LevelFilter::Off,
    };
    log::set_max_level(level);
}
