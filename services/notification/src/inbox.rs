//! The user's notifications: the list, marking read, and preferences.

use chrono::Utc;
use sea_orm::{
    ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    sea_query::Expr,
};
use uuid::Uuid;

use crate::{
    domain::Preferences,
    error::{NotificationError, Result},
    store::{item, prefs},
};

use crate::notifier::*;

impl Notifier {
    /// The user's notifications, newest first, with the unread count.
    pub async fn list(
        &self,
        user: Uuid,
        page_size: u32,
        page_token: &str,
        unread_only: bool,
    ) -> Result<(Vec<Notification>, String, u32)> {
        let size = match page_size {
            0 => 20,
            n => n.min(100),
        } as u64;
        let mut q = item::Entity::find().filter(item::Column::UserId.eq(user));
        if unread_only {
            q = q.filter(item::Column::ReadAt.is_null());
        }
        if !page_token.is_empty() {
            let before = Uuid::parse_str(page_token).map_err(|_| {
                NotificationError::Invalid(
                    "page.page_token",
                    "`page_token` is not one this API gave".into(),
                )
            })?;
            let before = item::Entity::find_by_id(before)
                .one(&self.db)
                .await?
                .filter(|n| n.user_id == user)
                .map(|n| n.seq)
                .unwrap_or(0);
            q = q.filter(item::Column::Seq.lt(before));
        }
        let mut rows = q.order_by_desc(item::Column::Seq).limit(size + 1).all(&self.db).await?;
        let next = if rows.len() as u64 > size {
            rows.truncate(size as usize);
            rows.last().map(|n| n.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        let unread = item::Entity::find()
            .filter(item::Column::UserId.eq(user))
            .filter(item::Column::ReadAt.is_null())
            .count(&self.db)
            .await?;
        Ok((rows.iter().map(Notification::from).collect(), next, unread as u32))
    }

    /// Marks the given notifications (or all) read; how many changed.
    pub async fn mark_read(&self, user: Uuid, ids: &[String], all: bool) -> Result<u32> {
        if !all && ids.len() > 100 {
            return Err(NotificationError::Invalid("ids", "at most 100 `ids`".into()));
        }
        let ids: Vec<Uuid> =
            ids.iter().map(|s| Uuid::parse_str(s)).collect::<std::result::Result<_, _>>().map_err(
                |_| NotificationError::Invalid("ids", "`ids` must be notification ids".into()),
            )?;
        let mut q = item::Entity::update_many()
            .col_expr(item::Column::ReadAt, Expr::value(Utc::now()))
            .filter(item::Column::UserId.eq(user))
            .filter(item::Column::ReadAt.is_null());
        if !all {
            q = q.filter(item::Column::Id.is_in(ids));
        }
        Ok(q.exec(&self.db).await?.rows_affected as u32)
    }

    pub async fn preferences(&self, user: Uuid) -> Result<Preferences> {
        Ok(match prefs::Entity::find_by_id(user).one(&self.db).await? {
            Some(p) => Preferences {
                email_on_generation: p.email_on_generation,
                email_on_payment: p.email_on_payment,
                locale: p.locale,
            },
            None => Preferences::default(),
        })
    }

    pub async fn set_preferences(&self, user: Uuid, p: Preferences) -> Result<Preferences> {
        let locale = p.locale.trim().to_owned();
        if locale.len() > 16 || !locale.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(NotificationError::Invalid(
                "locale",
                "`locale` must be a BCP 47 tag such as \"en\"".into(),
            ));
        }
        let row = prefs::ActiveModel {
            user_id: Set(user),
            email_on_generation: Set(p.email_on_generation),
            email_on_payment: Set(p.email_on_payment),
            locale: Set(locale),
        };
        prefs::Entity::insert(row)
            .on_conflict(
                sea_orm::sea_query::OnConflict::column(prefs::Column::UserId)
                    .update_columns([
                        prefs::Column::EmailOnGeneration,
                        prefs::Column::EmailOnPayment,
                        prefs::Column::Locale,
                    ])
                    .to_owned(),
            )
            .exec(&self.db)
            .await?;
        self.preferences(user).await
    }
}
