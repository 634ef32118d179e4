//! The event catalogue: every event on the bus, its routing key bound to its message type.
//!
//! Producers publish a message and consumers subscribe to and decode a message type; the name
//! comes from here, never typed by hand (`skillup_kit::events::publish(&bus, user, &msg)`,
//! `SubscriptionSpec::new("edge", &[TokensRevoked::KIND])`). A misspelt name cannot compile.

use crate::{
    ai::v1 as ai, auth::v1 as auth, common::v1 as common, notification::v1 as notification,
};
use crate::{payment::v1 as payment, subscribe::v1 as subscribe};

/// A message that travels on the bus as event [`Event::KIND`], inside a
/// `skillup.common.v1.EventEnvelope` whose payload is the message as `google.protobuf.Any`
/// (type URL from [`prost::Name`]).
pub trait Event: prost::Message + prost::Name + Default + Send + Sync + 'static {
    /// The routing key and the envelope's `type`.
    const KIND: &'static str;
}

macro_rules! catalogue {
    ($($ty:ty => $kind:literal),* $(,)?) => {
        $(impl Event for $ty {
            const KIND: &'static str = $kind;
        })*
        /// Every event: its name and its message's full protobuf name.
        pub fn all() -> Vec<(&'static str, String)> {
            vec![$(($kind, <$ty as prost::Name>::full_name())),*]
        }
    };
}

catalogue! {
    auth::UserRegistered => "user.registered",
    auth::UserLoggedIn => "user.logged_in",
    auth::UserUpdated => "user.updated",
    auth::UserDeleted => "user.deleted",
    auth::EmailVerified => "user.email_verified",
    auth::PasswordChanged => "user.password_changed",
    auth::TokensRevoked => "token.revoked",
    subscribe::SubscriptionChanged => "subscription.changed",
    payment::PaymentSucceeded => "payment.succeeded",
    payment::PaymentFailed => "payment.failed",
    ai::GenerationCompleted => "generation.completed",
    ai::GenerationFailed => "generation.failed",
    ai::GenerationCancelled => "generation.cancelled",
    // One notification per message: what replicas of releases before batching fan out
    // (still taken during a rolling upgrade).
    notification::Notification => "notification.created",
    notification::NotificationsStored => "notification.stored",
    common::AuditEntry => "audit.recorded",
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use prost::Message as _;

    #[test]
    fn every_event_is_a_message_of_the_contracts_and_every_name_is_unique() {
        let fds = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
        let messages: HashSet<String> = fds
            .file
            .iter()
            .flat_map(|f| {
                f.message_type.iter().map(move |m| format!("{}.{}", f.package(), m.name()))
            })
            .collect();
        let all = super::all();
        let mut kinds = HashSet::new();
        for (kind, message) in &all {
            assert!(messages.contains(message), "{kind}: {message} is not in proto/");
            assert!(kinds.insert(*kind), "{kind} named twice");
            let (entity, fact) = kind.split_once('.').unwrap();
            assert!(!entity.is_empty() && !fact.is_empty() && !fact.contains('.'), "{kind}");
        }
        assert_eq!(all.len(), 16);
    }
}
