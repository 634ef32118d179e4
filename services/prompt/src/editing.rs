//! Editing the catalog (admin): new functions with their first template, publishing template
//! versions, rolling back to an earlier one, and listing versions.

use std::collections::BTreeMap;

use crate::{
    catalog::{Catalog, declared_params},
    domain::{
        catalog::{Function, FunctionDraft, TemplateDraft, TemplateVersion},
        class::FunctionClass,
        template::{Template, TemplateError, valid_name},
        values::{self, MAX_TEMPLATE_CHARS},
    },
    error::{PromptError, Result},
    store::{
        catalog::NewTemplate,
        entities::{function, template},
        seed::BUILTINS,
    },
};

/// A conflict another attempt can resolve: a lost race for a version number, or SQLite's
/// "database is locked" for a write lock held by another transaction.
fn retryable(e: &sea_orm::DbErr) -> bool {
    skillup_kit::db::is_unique_violation(e) || skillup_kit::db::is_busy(e)
}

fn template_error(field: &'static str, e: TemplateError) -> PromptError {
    let words = match &e {
        TemplateError::Unclosed(at) => {
            crate::texts::said("template-unclosed", field, &at.to_string())
        }
        TemplateError::BadName(name) => crate::texts::said("template-bad-name", field, name),
        TemplateError::Undeclared(name) => crate::texts::said("template-undeclared", field, name),
    };
    PromptError::Invalid(field, words)
}

/// A stored template version as editors see it.
pub fn template_version(t: &template::Model) -> TemplateVersion {
    TemplateVersion {
        function_id: t.function_id.clone(),
        locale: t.locale.clone(),
        version: t.version.max(0) as u32,
        system: t.system.clone(),
        user: t.user.clone(),
        variables: t.variables.split_whitespace().map(str::to_owned).collect(),
        current: t.current,
        created_at: t.created_at,
    }
}

impl Catalog {
    /// Checks a template against a function's parameters; returns the declared variables.
    fn check_template(
        t: &TemplateDraft,
        params: &BTreeMap<String, String>,
    ) -> Result<(String, Vec<String>)> {
        let locale = values::locale(&t.locale)?;
        let declared: Vec<String> =
            BUILTINS.iter().map(|s| s.to_string()).chain(params.keys().cloned()).collect();
        for (field, text) in [("template.system", &t.system), ("template.user", &t.user)] {
            if text.chars().count() > MAX_TEMPLATE_CHARS {
                return Err(PromptError::Invalid(
                    field,
                    skillup_kit::invalid::at_most_chars(field, MAX_TEMPLATE_CHARS),
                ));
            }
            Template::parse(text, &declared).map_err(|e| template_error(field, e))?;
        }
        let user =
            Template::parse(&t.user, &declared).map_err(|e| template_error("template.user", e))?;
        if !user.variables().contains(&"topic") {
            return Err(PromptError::Invalid(
                "template.user",
                crate::texts::said("template-needs-topic", "template.user", ""),
            ));
        }
        Ok((locale, declared))
    }

    /// Adds a function with its first template.
    pub async fn create_function(&self, f: &FunctionDraft, t: &TemplateDraft) -> Result<Function> {
        let id = values::slug("function.id", &f.id)?;
        let title = values::user_text("function.title", &f.title, 120, false)?;
        if title.is_empty() {
            return Err(PromptError::Invalid(
                "function.title",
                skillup_kit::invalid::required("function.title"),
            ));
        }
        let description = values::user_text("function.description", &f.description, 500, false)?;
        let class: FunctionClass = match f.class {
            Some(c) => c,
            None => {
                return Err(PromptError::Invalid(
                    "function.class",
                    skillup_kit::invalid::one_of(
                        "function.class",
                        &["FUNCTION_CLASS_SHORT", "FUNCTION_CLASS_LONG"],
                    ),
                ));
            }
        };
        if !(1..=values::MAX_TOKENS).contains(&f.default_max_tokens) {
            return Err(PromptError::Invalid(
                "function.default_max_tokens",
                skillup_kit::invalid::between(
                    "function.default_max_tokens",
                    1,
                    i64::from(values::MAX_TOKENS),
                ),
            ));
        }
        let min_tier = values::slug("function.min_tier", &f.min_tier)?;
        if f.params.len() > values::MAX_PARAMS {
            return Err(PromptError::Invalid(
                "function.params",
                skillup_kit::invalid::at_most_items("function.params", values::MAX_PARAMS),
            ));
        }
        let mut params = BTreeMap::new();
        for (k, v) in &f.params {
            if !valid_name(k) || BUILTINS.contains(&k.as_str()) {
                return Err(PromptError::Invalid(
                    "function.params",
                    crate::texts::said(
                        "param-bad-name",
                        "function.params",
                        &k.chars().take(32).collect::<String>(),
                    ),
                ));
            }
            params.insert(k.clone(), values::user_text("function.params", v, 200, false)?);
        }
        let (locale, declared) = Self::check_template(t, &params)?;
        let now = chrono::Utc::now();
        let row = function::Model {
            id: id.clone(),
            title_en: title.clone(),
            title_ru: title,
            description_en: description.clone(),
            description_ru: description,
            class,
            default_max_tokens: f.default_max_tokens as i32,
            min_tier,
            params: serde_json::to_string(&params).unwrap_or_else(|_| "{}".into()),
            created_at: now,
        };
        let first = NewTemplate {
            function_id: &id,
            locale: &locale,
            system: &t.system,
            user: &t.user,
            variables: &declared,
        };
        match self.store.create(row, first).await {
            Err(e) if skillup_kit::db::is_unique_violation(&e) => {
                return Err(PromptError::Exists(format!("function `{id}` already exists")));
            }
            other => other?,
        };
        self.forget_recipes();
        self.get_function(&id, "en").await
    }

    /// Publishes the next version for a function + locale and makes it current.
    pub async fn publish(&self, function_id: &str, t: &TemplateDraft) -> Result<TemplateVersion> {
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
        t: &TemplateDraft,
    ) -> std::result::Result<TemplateVersion, sea_orm::DbErr> {
        let t = NewTemplate {
            function_id,
            locale,
            system: &t.system,
            user: &t.user,
            variables: declared,
        };
        let inserted = self.store.publish(t).await?;
        self.forget_recipes();
        Ok(template_version(&inserted))
    }

    /// Makes an earlier version current again.
    pub async fn rollback(
        &self,
        function_id: &str,
        locale: &str,
        version: u32,
    ) -> Result<TemplateVersion> {
        let f = self.function(function_id).await?;
        let locale = values::locale(locale)?;
        let Some(updated) = self.store.make_current(&f.id, &locale, version as i32).await? else {
            return Err(PromptError::NotFound(format!(
                "`{}` has no version {version} in `{locale}`",
                f.id
            )));
        };
        self.forget_recipes();
        Ok(template_version(&updated))
    }

    pub async fn templates(&self, function_id: &str, locale: &str) -> Result<Vec<TemplateVersion>> {
        let f = self.function(function_id).await?;
        let locale = match locale {
            "" => None,
            l => Some(values::locale(l)?),
        };
        Ok(self
            .store
            .templates(&f.id, locale.as_deref())
            .await?
            .iter()
            .map(template_version)
            .collect())
    }
}
