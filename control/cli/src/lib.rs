//! The `lattice` command line: one binary to operate a lattice (`ctl`), sign and push
//! components, and run control planes or a whole local lattice (`up`). It does not link the
//! host (and so no wasmtime): `lattice host` and `lattice up` start the `lattice-host` program,
//! found beside this one or on `PATH` ([`serve::host_program`]).
//!
//! Layout: [`args`] (clap definitions; the NATS flags are `lattice_connect`'s, shared with
//! `lattice-host`), one module per command ([`ctl`], [`keys`], [`nats`], [`sign`], [`push`] with
//! `pull`, [`compile`] (precompiled code, made by `lattice-host precompile`), [`serve`], [`up`], [`ui`] the web dashboard), [`oci`] (OCI registries), [`images`] (deploy's OCI and `file://`
//! images), [`output`] (tables, JSON and YAML, dates) and [`progress`] (spinners and bars, on a
//! terminal only). Logging is `lattice_telemetry`'s, the one setup
//! of every Lattice process. The binary only parses arguments and calls into these modules.
#![deny(missing_docs)]

pub mod args;
pub mod compile;
pub mod ctl;
pub mod images;
pub mod keys;
pub mod nats;
pub mod oci;
pub mod output;
pub mod progress;
pub mod push;
pub mod serve;
pub mod sign;
pub mod ui;
pub mod up;
