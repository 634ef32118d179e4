//! The catalog as its readers and editors see it: topics, functions, templates, and what
//! `BuildPrompt` is asked. `grpc.rs` converts these into the contract's messages and back.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use super::class::FunctionClass;

/// A suggested topic, in the reader's language.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topic {
    pub id: String,
    pub title: String,
    pub description: String,
}

/// A function, in the reader's language.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub id: String,
    pub title: String,
    pub description: String,
    pub class: FunctionClass,
    pub default_max_tokens: u32,
    pub min_tier: String,
    /// Parameter name → its description.
    pub params: BTreeMap<String, String>,
    /// Locales with a published template.
    pub locales: Vec<String>,
}

/// A new function as an editor sends it, checked by the catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunctionDraft {
    pub id: String,
    pub title: String,
    pub description: String,
    /// `None`: not given, or not a class.
    pub class: Option<FunctionClass>,
    pub default_max_tokens: u32,
    pub min_tier: String,
    pub params: HashMap<String, String>,
}

/// A template as an editor sends it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateDraft {
    pub locale: String,
    pub system: String,
    pub user: String,
}

/// A published template version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateVersion {
    pub function_id: String,
    pub locale: String,
    pub version: u32,
    pub system: String,
    pub user: String,
    pub variables: Vec<String>,
    pub current: bool,
    pub created_at: DateTime<Utc>,
}

/// What `BuildPrompt` is asked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PromptAsk {
    pub topic: String,
    pub function_id: String,
    pub locale: String,
    pub params: HashMap<String, String>,
    /// 0: the function's default.
    pub max_tokens: u32,
}
