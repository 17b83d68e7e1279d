//! `healthlake-relay-config`: checks a plugin configuration exactly as the filter does when it
//! starts (`Config::from_json`: the same code, the same error text), so that `scripts/relayctl.py`
//! and any other renderer refuse what the plugin would refuse, before Envoy starts.
//!
//! Reads the JSON from the file named by the only argument, or from standard input. Valid: exit
//! status 0 and nothing printed. Invalid: exit status 1 and the plugin's one line on standard
//! error, e.g. `invalid plugin configuration: field "region": expected an AWS region name ...`.

use healthlake_relay::config::Config;
use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut bytes = Vec::new();
    let read = match std::env::args_os().nth(1) {
        Some(path) => std::fs::read(&path)
            .map(|b| bytes = b)
            .map_err(|e| format!("cannot read {}: {e}", path.to_string_lossy())),
        None => std::io::stdin()
            .read_to_end(&mut bytes)
            .map(|_| ())
            .map_err(|e| format!("cannot read standard input: {e}")),
    };
    if let Err(e) = read {
        eprintln!("healthlake-relay-config: {e}");
        return ExitCode::from(2);
    }
    match Config::from_json(&bytes) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
