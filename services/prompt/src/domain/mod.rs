//! Values of the catalog, valid by construction, and the template language.

pub mod catalog;
pub mod class;
pub mod template;
pub mod values;
