//! Where pgmux's configuration comes from, in one place for serving, `pgmux check` and
//! `pgmux health`, so that `check` validates exactly what would run.
//!
//! Precedence, lowest first: built-in defaults; the file (`--config`, or `PGMUX_CONFIG`, or
//! `./proxy.yaml` when it exists); then `PGMUX_*` variables (see `env`). Without a file the
//! environment alone must give every required key.

use std::path::{Path, PathBuf};

use super::env::Vars;
use super::{Config, ConfigErrors};

/// The file pgmux reads when none is named, if it exists.
const DEFAULT_FILE: &str = "proxy.yaml";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A YAML file, with `PGMUX_*` variables laid over it.
    File(PathBuf),
    /// `PGMUX_*` variables only.
    Environment,
}

impl Source {
    /// The file named (`--config` / `PGMUX_CONFIG`; it must exist), else `./proxy.yaml` if it
    /// exists, else the environment alone. An empty name means the environment alone.
    pub fn choose(named: Option<PathBuf>) -> Source {
        match named {
            Some(path) if path.as_os_str().is_empty() => Source::Environment,
            Some(path) => Source::File(path),
            None if Path::new(DEFAULT_FILE).is_file() => Source::File(DEFAULT_FILE.into()),
            None => Source::Environment,
        }
    }

    /// Loads and validates the whole configuration.
    pub fn load(&self, vars: &Vars) -> Result<Config, ConfigErrors> {
        match self {
            Source::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|err| {
                    let message = format!("cannot read config file {}: {err}", path.display());
                    ConfigErrors::single("", None, message)
                })?;
                Config::from_sources(Some(&text), vars)
            }
            Source::Environment => Config::from_sources(None, vars),
        }
    }

    /// The file, if any (what SIGHUP re-reads).
    pub fn file(&self) -> Option<&Path> {
        match self {
            Source::File(path) => Some(path),
            Source::Environment => None,
        }
    }

    /// For messages: `proxy.yaml + PGMUX_* environment`.
    pub fn describe(&self) -> String {
        match self {
            Source::File(path) => format!("{} + PGMUX_* environment", path.display()),
            Source::Environment => "PGMUX_* environment (no config file)".to_owned(),
        }
    }
}

/// The process environment (variables that are not UTF-8 are left out).
pub fn process_vars() -> Vars {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
}
