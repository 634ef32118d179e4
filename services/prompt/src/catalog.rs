//! The catalog: its state, reading topics and functions, and building prompts (editing is
//! [`crate::editing`]).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sea_orm::DatabaseConnection;

use crate::{
    domain::{
        catalog::{Function, PromptAsk, Topic},
        class::FunctionClass,
        template::Template,
        values::{self, DEFAULT_LOCALE},
    },
    error::{PromptError, Result},
    store::{
        catalog::CatalogStore,
        entities::{function, template},
    },
};

/// The catalog.
#[derive(Clone)]
pub struct Catalog {
    pub(crate) store: CatalogStore,
    /// Function + current template by (function, locale), read on every BuildPrompt: kept
    /// for [`RECIPE_TTL`], cleared at once here on every catalog change (other replicas see a
    /// change within the TTL).
    recipes: Arc<Mutex<HashMap<(String, String), Recipe>>>,
}

/// How long a replica keeps a function and its current template in memory.
pub const RECIPE_TTL: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct Recipe {
    at: Instant,
    function: function::Model,
    template: template::Model,
}

/// A prompt, built.
#[derive(Debug, Clone)]
pub struct Built {
    pub system: String,
    pub user: String,
    pub max_tokens: u32,
    pub class: FunctionClass,
    pub version: u32,
    pub locale: String,
    pub estimated_input_tokens: u32,
}

pub(crate) fn ru(locale: &str) -> bool {
    locale == "ru"
}

pub(crate) fn declared_params(f: &function::Model) -> BTreeMap<String, String> {
    serde_json::from_str(&f.params).unwrap_or_default()
}

impl Catalog {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { store: CatalogStore::new(db), recipes: Default::default() }
    }

    pub(crate) fn forget_recipes(&self) {
        self.recipes.lock().expect("recipes").clear();
    }

    /// The function and the template BuildPrompt uses for `locale` (falling back to the
    /// default locale), from memory while fresh.
    async fn recipe(
        &self,
        function_id: &str,
        locale: &str,
    ) -> Result<(function::Model, template::Model)> {
        let key = (function_id.to_owned(), locale.to_owned());
        if let Some(r) = self.recipes.lock().expect("recipes").get(&key)
            && r.at.elapsed() < RECIPE_TTL
        {
            return Ok((r.function.clone(), r.template.clone()));
        }
        let f = self.function(function_id).await?;
        let t = match self.current_template(&f.id, locale).await? {
            Some(t) => t,
            None => self
                .current_template(&f.id, DEFAULT_LOCALE)
                .await?
                .ok_or_else(|| PromptError::NotFound(crate::texts::about("no-template", &f.id)))?,
        };
        let recipe = Recipe { at: Instant::now(), function: f.clone(), template: t.clone() };
        self.recipes.lock().expect("recipes").insert(key, recipe);
        Ok((f, t))
    }

    pub async fn topics(&self, locale: &str) -> Result<Vec<Topic>> {
        let locale = values::locale(locale)?;
        let mut out: Vec<Topic> = self
            .store
            .topics()
            .await?
            .into_iter()
            .map(|t| Topic {
                id: t.id,
                title: if ru(&locale) { t.title_ru } else { t.title_en },
                description: if ru(&locale) { t.description_ru } else { t.description_en },
            })
            .collect();
        out.sort_by(|a, b| a.title.cmp(&b.title));
        Ok(out)
    }

    async fn locales_by_function(&self) -> Result<HashMap<String, Vec<String>>> {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for t in self.store.current_templates().await? {
            map.entry(t.function_id).or_default().push(t.locale);
        }
        Ok(map)
    }

    fn function_view(f: function::Model, locale: &str, locales: Vec<String>) -> Function {
        let params = declared_params(&f);
        Function {
            title: if ru(locale) { f.title_ru } else { f.title_en },
            description: if ru(locale) { f.description_ru } else { f.description_en },
            id: f.id,
            class: f.class,
            default_max_tokens: f.default_max_tokens.max(0) as u32,
            min_tier: f.min_tier,
            params,
            locales,
        }
    }

    pub async fn functions(&self, locale: &str) -> Result<Vec<Function>> {
        let locale = values::locale(locale)?;
        let mut locales = self.locales_by_function().await?;
        let mut out: Vec<Function> = self
            .store
            .functions()
            .await?
            .into_iter()
            .map(|f| {
                let l = locales.remove(&f.id).unwrap_or_default();
                Self::function_view(f, &locale, l)
            })
            .collect();
        out.sort_by(|a, b| a.title.cmp(&b.title));
        Ok(out)
    }

    pub(crate) async fn function(&self, id: &str) -> Result<function::Model> {
        let id = values::slug("function_id", id)?;
        self.store
            .function(&id)
            .await?
            .ok_or_else(|| PromptError::NotFound(crate::texts::about("no-function", &id)))
    }

    pub async fn get_function(&self, id: &str, locale: &str) -> Result<Function> {
        let f = self.function(id).await?;
        let mut locales = self.locales_by_function().await?;
        let l = locales.remove(&f.id).unwrap_or_default();
        Ok(Self::function_view(f, &values::locale(locale)?, l))
    }

    async fn current_template(
        &self,
        function_id: &str,
        locale: &str,
    ) -> Result<Option<template::Model>> {
        Ok(self.store.current_template(function_id, locale).await?)
    }

    /// The messages for `topic` + `function_id`: user text is inserted as data, never parsed.
    pub async fn build(&self, r: &PromptAsk) -> Result<Built> {
        let topic = values::topic(&r.topic)?;
        let function_id = values::slug("function_id", &r.function_id)?;
        let locale = values::locale(&r.locale)?;
        let (f, t) = self.recipe(&function_id, &locale).await?;
        let params = values::params(&r.params, &declared_params(&f))?;
        let max_tokens = values::max_tokens(r.max_tokens, f.default_max_tokens as u32)?;
        let declared: Vec<String> = t.variables.split_whitespace().map(str::to_owned).collect();
        // Published templates were checked; a failure here means the row was edited by hand.
        let system = Template::parse(&t.system, &declared)
            .map_err(|e| PromptError::Unavailable(format!("template {}: {e}", t.id)))?;
        let user = Template::parse(&t.user, &declared)
            .map_err(|e| PromptError::Unavailable(format!("template {}: {e}", t.id)))?;
        // A parameter whose placeholders' defaults are all whole numbers is a number (how many
        // questions, minutes, …): its value must be one, and goes in as written. Every other
        // value a user gave is text, set in «» like the topic.
        let numeric: Vec<&str> = declared
            .iter()
            .map(String::as_str)
            .filter(|name| {
                let mut defaults = system
                    .defaults()
                    .chain(user.defaults())
                    .filter(|(n, _)| n == name)
                    .map(|(_, d)| d)
                    .peekable();
                defaults.peek().is_some()
                    && defaults.all(|d| d.is_some_and(|d| d.trim().parse::<u32>().is_ok()))
            })
            .collect();
        let mut vars = BTreeMap::new();
        for (name, value) in params {
            let value = if numeric.contains(&name.as_str()) {
                values::number(&name, &value)?
            } else {
                value
            };
            vars.insert(name, value);
        }
        vars.insert("topic".into(), topic);
        vars.insert("max_tokens".into(), max_tokens.to_string());
        let quote = |name: &str| name != "max_tokens" && !numeric.contains(&name);
        let (system, user) =
            (system.render_quoting(&vars, quote), user.render_quoting(&vars, quote));
        let chars = system.chars().count() + user.chars().count();
        Ok(Built {
            system,
            user,
            max_tokens,
            class: f.class,
            version: t.version as u32,
            locale: t.locale,
            estimated_input_tokens: chars.div_ceil(4) as u32,
        })
    }
}
