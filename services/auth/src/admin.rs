//! Administration: finding accounts, deactivating them, granting and revoking the admin
//! scope (each change written with its audit entry in one transaction), the audit log every
//! service's admin actions end up in, and tiers kept in step with subscriptions.

use bytes::Bytes;
use sea_orm::TransactionTrait;
use serde::Serialize;
use skillup_kit::audit::{ADMIN_SCOPE, Actor};
use uuid::Uuid;

use crate::{
    error::{AuthError, Result},
    store::{
        audit::AuditFilter,
        entities::{audit_entry, user},
    },
};

use crate::auth::*;

/// Which accounts a listing shows.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// Part of the email or name, any case.
    pub query: String,
    /// Only active (`Some(true)`) or deactivated (`Some(false)`) accounts.
    pub active: Option<bool>,
    pub admins_only: bool,
}

/// What an audit entry shows of an account before and after a change.
#[derive(Serialize)]
struct AccountState<'a> {
    email: &'a str,
    active: bool,
    scopes: Vec<&'a str>,
}

impl<'a> From<&'a user::Model> for AccountState<'a> {
    fn from(u: &'a user::Model) -> Self {
        Self { email: &u.email, active: u.is_active, scopes: u.scopes.split_whitespace().collect() }
    }
}

fn has_admin(u: &user::Model) -> bool {
    u.scopes.split_whitespace().any(|s| s == ADMIN_SCOPE)
}

fn page_size(n: u32) -> u64 {
    match n {
        0 => 20,
        n => Ord::min(n, 100) as u64,
    }
}

fn cursor(field: &'static str, token: &str) -> Result<Option<Uuid>> {
    match token {
        "" => Ok(None),
        t => Uuid::parse_str(t)
            .map(Some)
            .map_err(|_| invalid(field, skillup_kit::invalid::page_token(field))),
    }
}

fn reason(text: &str) -> Result<String> {
    skillup_kit::audit::reason(text, false).map_err(|m| invalid("reason", m))
}

impl Auth {
    fn user_id(user_id: &str) -> Result<Uuid> {
        Uuid::parse_str(user_id)
            .map_err(|_| invalid("user_id", skillup_kit::invalid::uuid("user_id")))
    }

    /// Activates or deactivates an account, audited; deactivation revokes its tokens at once.
    /// Setting the state it already has changes nothing and writes no entry.
    pub async fn set_active(
        &self,
        actor: &Actor,
        user_id: &str,
        active: bool,
        why: &str,
    ) -> Result<user::Model> {
        let id = Self::user_id(user_id)?;
        let why = reason(why)?;
        let action = if active { "user.reactivate" } else { "user.deactivate" };
        let (after, changed) = self
            .change_account(actor, id, action, &why, |u| {
                (u.is_active != active).then(|| user::Model { is_active: active, ..u.clone() })
            })
            .await?;
        if !changed {
            return Ok(after);
        }
        if active {
            self.cache.delete(&format!("auth:off:{id}")).await.map_err(cache_err)?;
            self.bump_identity_version(id).await?;
        } else {
            self.cache
                .set(&format!("auth:off:{id}"), Bytes::from_static(b"1"), None)
                .await
                .map_err(cache_err)?;
            let ids = self.active_session_ids(id).await?;
            self.revoke_sessions(id, &ids).await?;
            self.emit_revoked(id, Vec::new(), Some(now())).await;
        }
        self.forget_profile(id);
        Ok(after)
    }

    /// Grants or revokes the admin scope, audited. Revoking signs the account out everywhere
    /// (its tokens carry the scope); a grant reaches its tokens at their next refresh. The
    /// last active admin is never revoked (somebody must be able to grant it back).
    pub async fn set_admin(
        &self,
        actor: &Actor,
        user_id: &str,
        admin: bool,
        why: &str,
    ) -> Result<user::Model> {
        let id = Self::user_id(user_id)?;
        let why = reason(why)?;
        let action = if admin { "user.grant_admin" } else { "user.revoke_admin" };
        let (after, changed) = self
            .change_account(actor, id, action, &why, |u| {
                if has_admin(u) == admin {
                    return None;
                }
                let mut scopes: Vec<&str> =
                    u.scopes.split_whitespace().filter(|s| *s != ADMIN_SCOPE).collect();
                if admin {
                    scopes.push(ADMIN_SCOPE);
                }
                Some(user::Model { scopes: scopes.join(" "), ..u.clone() })
            })
            .await?;
        if changed {
            if !admin {
                let ids = self.active_session_ids(id).await?;
                self.revoke_sessions(id, &ids).await?;
                self.emit_revoked(id, Vec::new(), Some(now())).await;
            } else {
                self.bump_identity_version(id).await?;
            }
            self.forget_profile(id);
        }
        Ok(after)
    }

    /// Applies `change` to account `id` with its audit entry, in one transaction that holds
    /// the account's row (and, for a revocation of the admin scope, every admin's row, so two
    /// revocations at once cannot leave none). `change` answers the new row, or `None` when
    /// there is nothing to change. Answers the row now and whether it changed.
    async fn change_account(
        &self,
        actor: &Actor,
        id: Uuid,
        action: &str,
        why: &str,
        change: impl FnOnce(&user::Model) -> Option<user::Model>,
    ) -> Result<(user::Model, bool)> {
        let txn = self.db.begin().await?;
        let before = self
            .store
            .lock_for_admin_change(&txn, id)
            .await?
            .ok_or(AuthError::NotFound("error-no-account"))?;
        let Some(after) = change(&before) else {
            txn.rollback().await?;
            return Ok((before, false));
        };
        // Somebody must stay able to grant the scope back.
        if has_admin(&before) && before.is_active && !(has_admin(&after) && after.is_active) {
            let admins = self.store.active_admins(&txn).await?;
            if admins.iter().filter(|u| has_admin(u)).count() <= 1 {
                txn.rollback().await?;
                return Err(AuthError::Conflict("error-last-admin"));
            }
        }
        let now = now();
        self.store.set_access(&txn, id, after.is_active, &after.scopes, now).await?;
        let entry = crate::events::audit(
            actor,
            action,
            ("user", &id.to_string()),
            &AccountState::from(&before),
            &AccountState::from(&after),
            why,
        );
        self.outbox.add(&txn, &entry.id.clone(), &id.to_string(), &entry).await?;
        txn.commit().await?;
        self.outbox.wake();
        Ok((user::Model { updated_at: now, ..after }, true))
    }

    /// Accounts matching `filter`, newest first, and the next page's token.
    pub async fn list_users(
        &self,
        filter: &UserFilter,
        size: u32,
        token: &str,
    ) -> Result<(Vec<user::Model>, String)> {
        let query = filter.query.trim().to_lowercase();
        if query.chars().count() > 254 {
            return Err(invalid("query", skillup_kit::invalid::at_most_chars("query", 254)));
        }
        let before = cursor("page.page_token", token)?;
        let size = page_size(size);
        let mut rows = self
            .store
            .search_users(&query, filter.active, filter.admins_only, before, size + 1)
            .await?;
        let next = next(&rows, size);
        rows.truncate(size as usize);
        Ok((rows, next))
    }

    /// Keeps an audit entry (event `audit.recorded`, decoded by the consumer in `lib.rs`)
    /// once: a redelivery changes nothing. An account's entry gets the admin's address as it
    /// is now.
    pub async fn record_audit(&self, mut row: audit_entry::Model) -> Result<bool> {
        if row.actor.is_empty()
            && let Some(a) = row.actor_id
        {
            row.actor = match self.store.user(a).await? {
                Some(u) => u.email,
                None => format!("account:{a}"),
            };
        }
        let cut = |s: &str, max: usize| truncate(s, max);
        let row = audit_entry::Model {
            actor: cut(&row.actor, 254),
            action: cut(&row.action, 64),
            target_type: cut(&row.target_type, 32),
            target_id: cut(&row.target_id, 128),
            reason: cut(&row.reason, 500),
            request_id: cut(&row.request_id, 128),
            client_ip: cut(&row.client_ip, 64),
            component: cut(&row.component, 32),
            ..row
        };
        Ok(self.audit.insert(row).await?)
    }

    /// The audit log, newest first, and the next page's token.
    pub async fn audit_log(
        &self,
        mut filter: AuditFilter,
        size: u32,
        token: &str,
    ) -> Result<(Vec<audit_entry::Model>, String)> {
        filter.before = cursor("page.page_token", token)?;
        let size = page_size(size);
        let mut rows = self.audit.list(&filter, size + 1).await?;
        let next = next(&rows, size);
        rows.truncate(size as usize);
        Ok((rows, next))
    }

    /// Applies a `subscription.changed` event: new tokens carry the tier, and existing ones
    /// read it from the cache at validation.
    pub async fn apply_tier(&self, user_id: &str, tier: &str) -> Result<()> {
        let id = Uuid::parse_str(user_id)
            .map_err(|_| invalid("user_id", skillup_kit::invalid::uuid("user_id")))?;
        if tier.is_empty() || tier.len() > 32 {
            return Err(invalid("plan", skillup_kit::invalid::chars("plan", 1, 32)));
        }
        self.store.set_tier(id, tier).await?;
        self.cache
            .set(&format!("auth:tier:{id}"), Bytes::from(tier.to_owned()), Some(self.marker_ttl()))
            .await
            .map_err(cache_err)?;
        self.bump_identity_version(id).await?;
        Ok(())
    }
}

/// The token of the page after `rows` (fetched one more than `size`): the last shown id.
fn next<T: HasId>(rows: &[T], size: u64) -> String {
    if rows.len() as u64 > size { rows[size as usize - 1].id().to_string() } else { String::new() }
}

trait HasId {
    fn id(&self) -> Uuid;
}

impl HasId for user::Model {
    fn id(&self) -> Uuid {
        self.id
    }
}

impl HasId for audit_entry::Model {
    fn id(&self) -> Uuid {
        self.id
    }
}
