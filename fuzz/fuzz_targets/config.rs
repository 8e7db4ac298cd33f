//! The config loader (YAML parse, `${VAR}` expansion, typed build and validation) on arbitrary
//! text: a problem list or a config, never a panic.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use pgmux::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let env = |name: &str| (name == "SET").then(|| "value".to_string());
    if let Ok(config) = Config::from_yaml_with_env(text, &env) {
        // What SHOW CONFIG prints must be producible from any config that loads.
        let _ = config.effective();
    }
});
