//! Administration: deactivating accounts, and tiers kept in step with subscriptions.

use bytes::Bytes;
use uuid::Uuid;

use crate::{error::Result, store::entities::user};

use crate::auth::*;

impl Auth {
    pub async fn set_active(&self, user_id: &str, active: bool) -> Result<user::Model> {
        let id = Uuid::parse_str(user_id)
            .map_err(|_| invalid("user_id", skillup_kit::invalid::uuid("user_id")))?;
        let user = self.user(id).await?;
        self.store.set_active(id, active).await?;
        if active {
            self.cache.delete(&format!("auth:off:{id}")).await.map_err(cache_err)?;
        } else {
            self.cache
                .set(&format!("auth:off:{id}"), Bytes::from_static(b"1"), None)
                .await
                .map_err(cache_err)?;
            let ids = self.active_session_ids(id).await?;
            self.revoke_sessions(id, &ids).await?;
            self.emit_revoked(id, Vec::new(), Some(now())).await;
        }
        Ok(user::Model { is_active: active, ..user })
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
