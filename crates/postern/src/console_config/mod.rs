//! The settings the console edits. Changes made there are kept in `console.toml` in the data
//! directory and read over the configuration file at every start (the CLI's too): they survive
//! restarts, and the file the administrator wrote is never rewritten.
//!
//! Only the fields listed in the field table ([`fields`]) may appear in `console.toml`;
//! anything else there is an error naming the key. [`layering`] reads the file and
//! `console.toml` over it; [`editor`] shows and saves the form.

mod editor;
mod fields;
mod layering;

pub use editor::Editor;
pub use layering::{FILE, load, load_reporting};
