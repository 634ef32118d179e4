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
