//! The catalog's tables: topics, functions, and versioned templates per function and locale.

pub mod catalog;
pub mod entities;
pub mod migration;
pub mod seed;
