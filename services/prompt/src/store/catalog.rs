//! Every statement on the catalog's tables: `prompt_topics`, `prompt_functions` and
//! `prompt_templates` (versions per function and locale, one of them current).

use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    Set, TransactionTrait, sea_query::Expr,
};

use super::entities::{function, template, topic};

/// A template version to store.
pub struct NewTemplate<'a> {
    pub function_id: &'a str,
    pub locale: &'a str,
    pub system: &'a str,
    pub user: &'a str,
    /// The variables it may use, in order.
    pub variables: &'a [String],
}

#[derive(Clone)]
pub struct CatalogStore {
    db: DatabaseConnection,
}

impl CatalogStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub async fn topics(&self) -> Result<Vec<topic::Model>, DbErr> {
        topic::Entity::find().all(&self.db).await
    }

    pub async fn functions(&self) -> Result<Vec<function::Model>, DbErr> {
        function::Entity::find().all(&self.db).await
    }

    pub async fn function(&self, id: &str) -> Result<Option<function::Model>, DbErr> {
        function::Entity::find_by_id(id.to_owned()).one(&self.db).await
    }

    /// Every current template, by locale.
    pub async fn current_templates(&self) -> Result<Vec<template::Model>, DbErr> {
        template::Entity::find()
            .filter(template::Column::Current.eq(true))
            .order_by_asc(template::Column::Locale)
            .all(&self.db)
            .await
    }

    pub async fn current_template(
        &self,
        function_id: &str,
        locale: &str,
    ) -> Result<Option<template::Model>, DbErr> {
        template::Entity::find()
            .filter(template::Column::FunctionId.eq(function_id))
            .filter(template::Column::Locale.eq(locale))
            .filter(template::Column::Current.eq(true))
            .one(&self.db)
            .await
    }

    /// A function's versions (one locale's, or all), by locale, newest first.
    pub async fn templates(
        &self,
        function_id: &str,
        locale: Option<&str>,
    ) -> Result<Vec<template::Model>, DbErr> {
        let mut q = template::Entity::find().filter(template::Column::FunctionId.eq(function_id));
        if let Some(locale) = locale {
            q = q.filter(template::Column::Locale.eq(locale));
        }
        q.order_by_asc(template::Column::Locale)
            .order_by_desc(template::Column::Version)
            .all(&self.db)
            .await
    }

    /// A new function with its first template (version 1, current), together. A unique
    /// violation: the function exists.
    pub async fn create(&self, f: function::Model, t: NewTemplate<'_>) -> Result<(), DbErr> {
        let now = f.created_at;
        let txn = self.db.begin().await?;
        function::ActiveModel::from(f).insert(&txn).await?;
        Self::template(t, 1, now).insert(&txn).await?;
        txn.commit().await
    }

    fn template(
        t: NewTemplate<'_>,
        version: i32,
        now: chrono::DateTime<chrono::Utc>,
    ) -> template::ActiveModel {
        template::ActiveModel {
            id: Set(uuid::Uuid::now_v7()),
            function_id: Set(t.function_id.to_owned()),
            locale: Set(t.locale.to_owned()),
            version: Set(version),
            system: Set(t.system.to_owned()),
            user: Set(t.user.to_owned()),
            variables: Set(t.variables.join(" ")),
            current: Set(true),
            created_at: Set(now),
        }
    }

    /// The next version of a function's template in a locale, made current. Two publishers
    /// racing for a number: one gets a unique violation (and tries again).
    pub async fn publish(&self, t: NewTemplate<'_>) -> Result<template::Model, DbErr> {
        let (function_id, locale) = (t.function_id.to_owned(), t.locale.to_owned());
        let txn = self.db.begin().await?;
        let last = template::Entity::find()
            .filter(template::Column::FunctionId.eq(&function_id))
            .filter(template::Column::Locale.eq(&locale))
            .order_by_desc(template::Column::Version)
            .one(&txn)
            .await?
            .map_or(0, |t| t.version);
        let inserted = Self::template(t, last + 1, chrono::Utc::now()).insert(&txn).await?;
        template::Entity::update_many()
            .col_expr(template::Column::Current, Expr::value(false))
            .filter(template::Column::FunctionId.eq(&function_id))
            .filter(template::Column::Locale.eq(&locale))
            .filter(template::Column::Id.ne(inserted.id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(inserted)
    }

    /// Makes `version` current again (`None`: there is no such version).
    pub async fn make_current(
        &self,
        function_id: &str,
        locale: &str,
        version: i32,
    ) -> Result<Option<template::Model>, DbErr> {
        let txn = self.db.begin().await?;
        let Some(target) = template::Entity::find()
            .filter(template::Column::FunctionId.eq(function_id))
            .filter(template::Column::Locale.eq(locale))
            .filter(template::Column::Version.eq(version))
            .one(&txn)
            .await?
        else {
            return Ok(None);
        };
        template::Entity::update_many()
            .col_expr(template::Column::Current, Expr::value(false))
            .filter(template::Column::FunctionId.eq(function_id))
            .filter(template::Column::Locale.eq(locale))
            .exec(&txn)
            .await?;
        let mut active: template::ActiveModel = target.into();
        active.current = Set(true);
        let updated = active.update(&txn).await?;
        txn.commit().await?;
        Ok(Some(updated))
    }
}
