//! ai's answers as OpenAI's: a whole completion as one `chat.completion`, a stream of events
//! as its SSE chunks.

use super::*;

/// What every object of one answer repeats.
pub(super) struct Head {
    pub(super) id: String,
    pub(super) created: u64,
    pub(super) model: String,
}

/// OpenAI's finish reasons: ours but `stop`, `length` and `content_filter` never reach a
/// client that is still there.
pub(super) fn finish_reason(ours: &str) -> &'static str {
    match ours {
        "length" | "max_tokens" => "length",
        "content_filter" => "content_filter",
        _ => "stop",
    }
}

pub(super) fn usage_json(u: Option<&ai::TokenUsage>) -> Value {
    let u = u.cloned().unwrap_or_default();
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
    })
}

/// A whole answer as one `chat.completion`; `model` as the client named it.
pub(super) fn whole_answer(done: ai::Completion, model: String) -> Response {
    let body = json!({
        "id": format!("chatcmpl-{}", done.id),
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "system_fingerprint": null,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": done.text, "refusal": null},
            "logprobs": null,
            "finish_reason": finish_reason(&done.finish_reason),
        }],
        "usage": usage_json(done.usage.as_ref()),
    });
    axum::Json(body).into_response()
}

/// The answer as OpenAI's stream: a chunk per piece of text, the finish reason, the usage when
/// asked for, then `[DONE]`. A failure midway is an `error` object, and no `[DONE]`. A client
/// that leaves drops the upstream stream: ai stops the provider and charges what was produced.
pub(super) fn stream_answer(
    head: Head,
    events: tonic::Streaming<Bytes>,
    include_usage: bool,
    locale: Locale,
    rid: String,
) -> Response {
    let head = Arc::new(head);
    let chunk = move |h: &Head, delta: Value, finish: Option<&str>, usage: Option<Value>| {
        let mut c = json!({
            "id": h.id,
            "object": "chat.completion.chunk",
            "created": h.created,
            "model": h.model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if include_usage {
            c["usage"] = usage.unwrap_or(Value::Null);
        }
        Event::default().data(c.to_string())
    };
    let opening = chunk(&head, json!({"role": "assistant", "content": ""}), None, None);
    // `None` once the answer has ended.
    let tail = futures::stream::unfold(Some(events), move |state| {
        let head = head.clone();
        let rid = rid.clone();
        async move {
            let mut events = state?;
            let out: Vec<Event> = match events.next().await {
                Some(Ok(bytes)) => match decode(&bytes) {
                    Ok(Some(AiEvent::Delta(d))) => {
                        vec![chunk(&head, json!({"content": d}), None, None)]
                    }
                    Ok(Some(AiEvent::Finished(f))) => {
                        let reason = finish_reason(&f.finish_reason);
                        let mut out = vec![chunk(&head, json!({}), Some(reason), None)];
                        if include_usage {
                            // The last chunk before `[DONE]`: the usage, and no choices.
                            let last = json!({
                                "id": head.id,
                                "object": "chat.completion.chunk",
                                "created": head.created,
                                "model": head.model,
                                "system_fingerprint": null,
                                "choices": [],
                                "usage": usage_json(f.usage.as_ref()),
                            });
                            out.push(Event::default().data(last.to_string()));
                        }
                        out.push(Event::default().data("[DONE]"));
                        return Some((futures::stream::iter(out.into_iter().map(Ok)), None));
                    }
                    Ok(_) => Vec::new(),
                    Err(e) => {
                        // An answer this edge cannot read ends the stream, with why.
                        let e = internal(&e, locale);
                        let out = vec![Event::default().data(e.body().to_string())];
                        return Some((futures::stream::iter(out.into_iter().map(Ok)), None));
                    }
                },
                Some(Err(s)) => {
                    let e = OpenAiError::from_api(ApiError::from_status(&s), locale);
                    tracing::warn!(request_id = %rid, error = %e.message, "chat completion failed midway");
                    let out = vec![Event::default().data(e.body().to_string())];
                    return Some((futures::stream::iter(out.into_iter().map(Ok)), None));
                }
                None => {
                    // Ended without `finished`: cut, never a silent `[DONE]`.
                    let e = internal("the generation ended without `finished`", locale);
                    let out = vec![Event::default().data(e.body().to_string())];
                    return Some((futures::stream::iter(out.into_iter().map(Ok)), None));
                }
            };
            Some((futures::stream::iter(out.into_iter().map(Ok)), Some(events)))
        }
    })
    .flatten();
    let all = futures::stream::once(async move { Ok::<_, Infallible>(opening) }).chain(tail);
    Sse::new(all).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}
