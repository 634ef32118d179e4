//! The catalog and prompt building, on the database.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, Set,
    TransactionTrait, sea_query::Expr,
};
use skillup_kit::db::timestamp as ts;
use skillup_proto::prompt::v1 as pb;

use crate::{
    domain::{
        class::FunctionClass,
        template::{Template, TemplateError, valid_name},
        values::{self, DEFAULT_LOCALE, MAX_TEMPLATE_CHARS},
    },
    error::{PromptError, Result},
    store::{
        entities::{function, template, topic},
        seed::BUILTINS,
    },
};

/// The catalog.
#[derive(Clone)]
pub struct Catalog {
    db: DatabaseConnection,
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

fn ru(locale: &str) -> bool {
    locale == "ru"
}

fn declared_params(f: &function::Model) -> BTreeMap<String, String> {
    serde_json::from_str(&f.params).unwrap_or_default()
}

/// A conflict another attempt can resolve: a lost race for a version number, or SQLite's
/// "database is locked" for a write lock held by another transaction.
fn retryable(e: &sea_orm::DbErr) -> bool {
    skillup_kit::db::is_unique_violation(e) || skillup_kit::db::is_busy(e)
}

fn template_error(field: &'static str, e: TemplateError) -> PromptError {
    PromptError::Invalid(field, format!("`{field}`: {e}"))
}

pub fn template_pb(t: &template::Model) -> pb::Template {
    pb::Template {
        function_id: t.function_id.clone(),
        locale: t.locale.clone(),
        version: t.version as u32,
        system: t.system.clone(),
        user: t.user.clone(),
        variables: t.variables.split_whitespace().map(str::to_owned).collect(),
        current: t.current,
        created_at: Some(ts(t.created_at)),
    }
}

impl Catalog {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db, recipes: Default::default() }
    }

    fn forget_recipes(&self) {
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
            None => self.current_template(&f.id, DEFAULT_LOCALE).await?.ok_or_else(|| {
                PromptError::NotFound(format!("function `{}` has no published template", f.id))
            })?,
        };
        let recipe = Recipe { at: Instant::now(), function: f.clone(), template: t.clone() };
        self.recipes.lock().expect("recipes").insert(key, recipe);
        Ok((f, t))
    }

    pub async fn topics(&self, locale: &str) -> Result<Vec<pb::Topic>> {
        let locale = values::locale(locale)?;
        let mut out: Vec<pb::Topic> = topic::Entity::find()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|t| pb::Topic {
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
        for t in template::Entity::find()
            .filter(template::Column::Current.eq(true))
            .order_by_asc(template::Column::Locale)
            .all(&self.db)
            .await?
        {
            map.entry(t.function_id).or_default().push(t.locale);
        }
        Ok(map)
    }

    fn function_pb(f: function::Model, locale: &str, locales: Vec<String>) -> pb::Function {
        let params = declared_params(&f).into_iter().collect();
        pb::Function {
            title: if ru(locale) { f.title_ru } else { f.title_en },
            description: if ru(locale) { f.description_ru } else { f.description_en },
            id: f.id,
            class: class_pb(f.class) as i32,
            default_max_tokens: f.default_max_tokens as u32,
            min_tier: f.min_tier,
            params,
            locales,
        }
    }

    pub async fn functions(&self, locale: &str) -> Result<Vec<pb::Function>> {
        let locale = values::locale(locale)?;
        let mut locales = self.locales_by_function().await?;
        let mut out: Vec<pb::Function> = function::Entity::find()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|f| {
                let l = locales.remove(&f.id).unwrap_or_default();
                Self::function_pb(f, &locale, l)
            })
            .collect();
        out.sort_by(|a, b| a.title.cmp(&b.title));
        Ok(out)
    }

    async fn function(&self, id: &str) -> Result<function::Model> {
        let id = values::slug("function_id", id)?;
        function::Entity::find_by_id(id.clone())
            .one(&self.db)
            .await?
            .ok_or_else(|| PromptError::NotFound(format!("no function `{id}`")))
    }

    pub async fn get_function(&self, id: &str, locale: &str) -> Result<pb::Function> {
        let f = self.function(id).await?;
        let mut locales = self.locales_by_function().await?;
        let l = locales.remove(&f.id).unwrap_or_default();
        Ok(Self::function_pb(f, &values::locale(locale)?, l))
    }

    async fn current_template(
        &self,
        function_id: &str,
        locale: &str,
    ) -> Result<Option<template::Model>> {
        Ok(template::Entity::find()
            .filter(template::Column::FunctionId.eq(function_id))
            .filter(template::Column::Locale.eq(locale))
            .filter(template::Column::Current.eq(true))
            .one(&self.db)
            .await?)
    }

    /// The messages for `topic` + `function_id`: user text is inserted as data, never parsed.
    pub async fn build(&self, r: &pb::BuildPromptRequest) -> Result<Built> {
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

    /// Checks a template against a function's parameters; returns the declared variables.
    fn check_template(
        t: &pb::Template,
        params: &BTreeMap<String, String>,
    ) -> Result<(String, Vec<String>)> {
        let locale = values::locale(&t.locale)?;
        let declared: Vec<String> =
            BUILTINS.iter().map(|s| s.to_string()).chain(params.keys().cloned()).collect();
        for (field, text) in [("template.system", &t.system), ("template.user", &t.user)] {
            if text.chars().count() > MAX_TEMPLATE_CHARS {
                return Err(PromptError::Invalid(
                    field,
                    format!("`{field}` is longer than {MAX_TEMPLATE_CHARS} characters"),
                ));
            }
            Template::parse(text, &declared).map_err(|e| template_error(field, e))?;
        }
        let user =
            Template::parse(&t.user, &declared).map_err(|e| template_error("template.user", e))?;
        if !user.variables().contains(&"topic") {
            return Err(PromptError::Invalid(
                "template.user",
                "`template.user` must use {{topic}}".into(),
            ));
        }
        Ok((locale, declared))
    }

    /// Adds a function with its first template.
    pub async fn create_function(
        &self,
        f: &pb::Function,
        t: &pb::Template,
    ) -> Result<pb::Function> {
        let id = values::slug("function.id", &f.id)?;
        let title = values::user_text("function.title", &f.title, 120, false)?;
        if title.is_empty() {
            return Err(PromptError::Invalid(
                "function.title",
                "`function.title` is required".into(),
            ));
        }
        let description = values::user_text("function.description", &f.description, 500, false)?;
        let class = match pb::FunctionClass::try_from(f.class) {
            Ok(pb::FunctionClass::Short) => FunctionClass::Short,
            Ok(pb::FunctionClass::Long) => FunctionClass::Long,
            _ => {
                return Err(PromptError::Invalid(
                    "function.class",
                    "`function.class` must be FUNCTION_CLASS_SHORT or FUNCTION_CLASS_LONG".into(),
                ));
            }
        };
        if !(1..=values::MAX_TOKENS).contains(&f.default_max_tokens) {
            return Err(PromptError::Invalid(
                "function.default_max_tokens",
                format!("`function.default_max_tokens` must be 1..={}", values::MAX_TOKENS),
            ));
        }
        let min_tier = values::slug("function.min_tier", &f.min_tier)?;
        if f.params.len() > values::MAX_PARAMS {
            return Err(PromptError::Invalid(
                "function.params",
                format!("at most {} parameters", values::MAX_PARAMS),
            ));
        }
        let mut params = BTreeMap::new();
        for (k, v) in &f.params {
            if !valid_name(k) || BUILTINS.contains(&k.as_str()) {
                return Err(PromptError::Invalid(
                    "function.params",
                    format!(
                        "`{}` is not a parameter name (1..=32 of a-z, 0-9, _; not topic or max_tokens)",
                        k.chars().take(32).collect::<String>()
                    ),
                ));
            }
            params.insert(k.clone(), values::user_text("function.params", v, 200, false)?);
        }
        let (locale, declared) = Self::check_template(t, &params)?;
        let now = chrono::Utc::now();
        let txn = self.db.begin().await?;
        let inserted = function::ActiveModel {
            id: Set(id.clone()),
            title_en: Set(title.clone()),
            title_ru: Set(title),
            description_en: Set(description.clone()),
            description_ru: Set(description),
            class: Set(class),
            default_max_tokens: Set(f.default_max_tokens as i32),
            min_tier: Set(min_tier),
            params: Set(serde_json::to_string(&params).unwrap_or_else(|_| "{}".into())),
            created_at: Set(now),
        }
        .insert(&txn)
        .await;
        match inserted {
            Err(e) if skillup_kit::db::is_unique_violation(&e) => {
                return Err(PromptError::Exists(format!("function `{id}` already exists")));
            }
            other => other?,
        };
        template::ActiveModel {
            id: Set(uuid::Uuid::now_v7()),
            function_id: Set(id.clone()),
            locale: Set(locale),
            version: Set(1),
            system: Set(t.system.clone()),
            user: Set(t.user.clone()),
            variables: Set(declared.join(" ")),
            current: Set(true),
            created_at: Set(now),
        }
        .insert(&txn)
        .await?;
        txn.commit().await?;
        self.forget_recipes();
        self.get_function(&id, "en").await
    }

    /// Publishes the next version for a function + locale and makes it current.
    pub async fn publish(&self, function_id: &str, t: &pb::Template) -> Result<pb::Template> {
        let f = self.function(function_id).await?;
        let (locale, declared) = Self::check_template(t, &declared_params(&f))?;
        // Two publishers may race for the same version: the unique index picks one, the other
        // takes the next number. SQLite answers a lock upgrade it cannot grant with "busy":
        // that publisher backs off and tries again.
        for attempt in 0..20u64 {
            match self.try_publish(&f.id, &locale, &declared, t).await {
                Ok(published) => return Ok(published),
                Err(e) if retryable(&e) => {
                    tokio::time::sleep(std::time::Duration::from_millis(5 + attempt * 7)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(PromptError::Unavailable("publishing kept racing with other publishers".into()))
    }

    async fn try_publish(
        &self,
        function_id: &str,
        locale: &str,
        declared: &[String],
        t: &pb::Template,
    ) -> std::result::Result<pb::Template, sea_orm::DbErr> {
        let txn = self.db.begin().await?;
        let last = template::Entity::find()
            .filter(template::Column::FunctionId.eq(function_id))
            .filter(template::Column::Locale.eq(locale))
            .order_by_desc(template::Column::Version)
            .one(&txn)
            .await?
            .map_or(0, |t| t.version);
        let inserted = template::ActiveModel {
            id: Set(uuid::Uuid::now_v7()),
            function_id: Set(function_id.to_owned()),
            locale: Set(locale.to_owned()),
            version: Set(last + 1),
            system: Set(t.system.clone()),
            user: Set(t.user.clone()),
            variables: Set(declared.join(" ")),
            current: Set(true),
            created_at: Set(chrono::Utc::now()),
        }
        .insert(&txn)
        .await?;
        template::Entity::update_many()
            .col_expr(template::Column::Current, Expr::value(false))
            .filter(template::Column::FunctionId.eq(function_id))
            .filter(template::Column::Locale.eq(locale))
            .filter(template::Column::Id.ne(inserted.id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        self.forget_recipes();
        Ok(template_pb(&inserted))
    }

    /// Makes an earlier version current again.
    pub async fn rollback(
        &self,
        function_id: &str,
        locale: &str,
        version: u32,
    ) -> Result<pb::Template> {
        let f = self.function(function_id).await?;
        let locale = values::locale(locale)?;
        let txn = self.db.begin().await?;
        let Some(target) = template::Entity::find()
            .filter(template::Column::FunctionId.eq(&f.id))
            .filter(template::Column::Locale.eq(&locale))
            .filter(template::Column::Version.eq(version as i32))
            .one(&txn)
            .await?
        else {
            return Err(PromptError::NotFound(format!(
                "`{}` has no version {version} in `{locale}`",
                f.id
            )));
        };
        template::Entity::update_many()
            .col_expr(template::Column::Current, Expr::value(false))
            .filter(template::Column::FunctionId.eq(&f.id))
            .filter(template::Column::Locale.eq(&locale))
            .exec(&txn)
            .await?;
        let mut active: template::ActiveModel = target.into();
        active.current = Set(true);
        let updated = active.update(&txn).await?;
        txn.commit().await?;
        self.forget_recipes();
        Ok(template_pb(&updated))
    }

    pub async fn templates(&self, function_id: &str, locale: &str) -> Result<Vec<pb::Template>> {
        let f = self.function(function_id).await?;
        let mut q = template::Entity::find().filter(template::Column::FunctionId.eq(&f.id));
        if !locale.is_empty() {
            q = q.filter(template::Column::Locale.eq(values::locale(locale)?));
        }
        Ok(q.order_by_asc(template::Column::Locale)
            .order_by_desc(template::Column::Version)
            .all(&self.db)
            .await?
            .iter()
            .map(template_pb)
            .collect())
    }
}

/// A stored class as the contract names it.
pub(crate) fn class_pb(c: FunctionClass) -> pb::FunctionClass {
    match c {
        FunctionClass::Short => pb::FunctionClass::Short,
        FunctionClass::Long => pb::FunctionClass::Long,
    }
}
