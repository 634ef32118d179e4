//! Events on the bus: every event is a `skillup.common.v1.EventEnvelope` whose routing key is
//! its `type` and whose payload is the event message as `google.protobuf.Any`. The name of each
//! event comes from its message type (the catalogue in [`skillup_proto::events`]).

use prost::Message as _;
use skillup_proto::{common::v1::EventEnvelope, events::Event};

use crate::{
    Result,
    bus::{Message, SharedBus},
};

/// Publishes `payload` as its event, about `user_id`.
pub async fn publish<E: Event>(bus: &SharedBus, user_id: &str, payload: &E) -> Result<String> {
    publish_with_id(bus, &uuid::Uuid::now_v7().to_string(), user_id, payload).await
}

/// [`publish`] under a chosen event id: a producer that may publish the same fact twice (a
/// worker redelivered after a crash) uses a deterministic id, so consumers that deduplicate by
/// it act once.
pub async fn publish_with_id<E: Event>(
    bus: &SharedBus,
    id: &str,
    user_id: &str,
    payload: &E,
) -> Result<String> {
    let mut msg = Message::new(envelope(id, user_id, payload));
    msg.id = id.to_owned();
    bus.publish(E::KIND, msg).await?;
    Ok(id.to_owned())
}

/// The encoded envelope of `payload` with `id`, occurring now (what [`publish_with_id`]
/// sends, and what [`crate::outbox::Outbox`] stores to send later).
pub fn envelope<E: Event>(id: &str, user_id: &str, payload: &E) -> Vec<u8> {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    EventEnvelope {
        id: id.to_owned(),
        r#type: E::KIND.to_owned(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: now.as_secs() as i64,
            nanos: now.subsec_nanos() as i32,
        }),
        user_id: user_id.to_owned(),
        payload: Some(prost_types::Any { type_url: E::type_url(), value: payload.encode_to_vec() }),
        traceparent: String::new(),
    }
    .encode_to_vec()
}

/// Decodes an envelope and its payload; `None` unless it is event `E`.
pub fn decode<E: Event>(bytes: &[u8]) -> Option<(EventEnvelope, E)> {
    let env = EventEnvelope::decode(bytes).ok()?;
    let payload = payload::<E>(&env)?;
    Some((env, payload))
}

/// The payload of a decoded envelope, if it is event `E`.
pub fn payload<E: Event>(env: &EventEnvelope) -> Option<E> {
    if env.r#type != E::KIND {
        return None;
    }
    E::decode(env.payload.as_ref()?.value.as_slice()).ok()
}

/// What a consumer made of one event.
#[derive(Debug)]
pub enum Outcome {
    /// Applied (or nothing to do): acknowledged.
    Done,
    /// Not now (a dependency is down): delivered again later.
    Retry(String),
    /// Never applicable: dead-lettered with the reason.
    Reject(String),
}

/// Subscribes `group` to events of kind `E` (durably: what is published from now on waits for
/// it). Subscribe before anything that might cause such an event, then [`consume`].
pub async fn subscribe<E: Event>(bus: &SharedBus, group: &str) -> Result<crate::bus::Consumer> {
    bus.subscribe(&crate::bus::SubscriptionSpec::new(group, &[E::KIND]), 16).await
}

/// Consumes events of kind `E` from `consumer` until `shutdown`: each decoded event goes to
/// `handle`, whose [`Outcome`] settles it; an undecodable one is dead-lettered.
pub async fn consume<E, F, Fut>(
    mut consumer: crate::bus::Consumer,
    shutdown: crate::Shutdown,
    mut handle: F,
) where
    E: Event,
    F: FnMut(EventEnvelope, E) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    loop {
        let delivery = tokio::select! {
            d = consumer.next() => match d { Some(d) => d, None => return },
            _ = shutdown.wait() => return,
        };
        let Some((env, event)) = decode::<E>(&delivery.message.payload) else {
            tracing::warn!(kind = E::KIND, "undecodable event, dead-lettering it");
            let _ = delivery.dead_letter("undecodable").await;
            continue;
        };
        let settled = match handle(env, event).await {
            Outcome::Done => delivery.ack().await,
            Outcome::Retry(why) => {
                tracing::warn!(kind = E::KIND, reason = %why, "event not applied yet");
                delivery.retry(&why, None).await.map(drop)
            }
            Outcome::Reject(why) => {
                tracing::warn!(kind = E::KIND, reason = %why, "event rejected");
                delivery.dead_letter(&why).await
            }
        };
        if let Err(e) = settled {
            tracing::warn!(error = %e, kind = E::KIND, "event not settled");
        }
    }
}
