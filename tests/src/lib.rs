//! Privileged tests live in `tests/` of this crate; they need root and create (and always
//! remove) their own network namespaces. `cargo xtask test` runs them as root.
