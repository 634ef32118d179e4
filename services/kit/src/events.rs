//! Events on the bus: every event is a `skillup.common.v1.EventEnvelope` whose routing key is
//! its `type` and whose payload is the event message as `google.protobuf.Any`.

use prost::Message as _;
use skillup_proto::common::v1::EventEnvelope;

use crate::{
    Result,
    bus::{Message, SharedBus},
};

/// Publishes `payload` (a message of `type.googleapis.com/<full_name>`) as event `kind`.
pub async fn publish<M: prost::Message>(
    bus: &SharedBus,
    kind: &str,
    user_id: &str,
    full_name: &str,
    payload: &M,
) -> Result<String> {
    publish_with_id(bus, &uuid::Uuid::now_v7().to_string(), kind, user_id, full_name, payload).await
}

/// [`publish`] under a chosen event id: a producer that may publish the same fact twice (a
/// worker redelivered after a crash) uses a deterministic id, so consumers that deduplicate by
/// it act once.
pub async fn publish_with_id<M: prost::Message>(
    bus: &SharedBus,
    id: &str,
    kind: &str,
    user_id: &str,
    full_name: &str,
    payload: &M,
) -> Result<String> {
    let mut msg = Message::new(envelope(id, kind, user_id, full_name, payload));
    msg.id = id.to_owned();
    bus.publish(kind, msg).await?;
    Ok(id.to_owned())
}

/// The encoded envelope of event `kind` with `id`, occurring now (what [`publish_with_id`]
/// sends, and what [`crate::outbox::Outbox`] stores to send later).
pub fn envelope<M: prost::Message>(
    id: &str,
    kind: &str,
    user_id: &str,
    full_name: &str,
    payload: &M,
) -> Vec<u8> {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    EventEnvelope {
        id: id.to_owned(),
        r#type: kind.to_owned(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: now.as_secs() as i64,
            nanos: now.subsec_nanos() as i32,
        }),
        user_id: user_id.to_owned(),
        payload: Some(prost_types::Any {
            type_url: format!("type.googleapis.com/{full_name}"),
            value: payload.encode_to_vec(),
        }),
        traceparent: String::new(),
    }
    .encode_to_vec()
}

/// Decodes an envelope and its payload.
pub fn decode<M: prost::Message + Default>(bytes: &[u8]) -> Option<(EventEnvelope, M)> {
    let env = EventEnvelope::decode(bytes).ok()?;
    let payload = M::decode(env.payload.as_ref()?.value.as_slice()).ok()?;
    Some((env, payload))
}
