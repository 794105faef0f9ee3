//! Node configuration: one TOML file, documented defaults, validation.
