//! The adapter's parsing and error mapping.

use super::*;

fn refused(body: Value) -> OpenAiError {
    match check(body.to_string().as_bytes()) {
        Ok(_) => panic!("accepted: {body}"),
        Err(e) => e,
    }
}

#[test]
fn a_request_becomes_ais_chat_completion() {
    let c = check(
        json!({
            "model": "skillup/quiz",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Photo"}, {"type": "text", "text": "synthesis"}]},
            ],
            "max_completion_tokens": 300,
            "temperature": 0.2,
            "stop": ["\n\n"],
            "n": 1,
            "stream": true,
            "stream_options": {"include_usage": true},
            "metadata": {"locale": "ru", "questions": "5"},
            "presence_penalty": 0,
            "tool_choice": "none",
            "response_format": {"type": "text"},
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    assert!(c.stream && c.include_usage);
    assert_eq!(c.ask.model, "skillup/quiz");
    assert_eq!(c.ask.max_tokens, 300);
    assert_eq!(c.ask.messages[0].role, "system");
    assert_eq!(c.ask.messages[1].content, "Photosynthesis");
    assert_eq!(c.ask.metadata["locale"], "ru");
    assert_eq!((c.ask.temperature, c.ask.top_p), (Some(0.2), None));
    assert_eq!(c.ask.stop, ["\n\n"]);
}

#[test]
fn what_cannot_be_honoured_is_refused_by_its_parameter() {
    let user = json!([{"role": "user", "content": "x"}]);
    for (body, param) in [
        (json!({"messages": user}), "model"),
        (json!({"model": "skillup/quiz", "messages": []}), "messages"),
        (
            json!({"model": "skillup/quiz", "messages": [{"role": "system", "content": "x"}]}),
            "messages",
        ),
        (
            json!({"model": "skillup/quiz", "messages": [{"role": "tool", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "skillup/quiz", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
            "messages[0].content[0]",
        ),
        (json!({"model": "skillup/quiz", "messages": user, "n": 2}), "n"),
        (json!({"model": "skillup/quiz", "messages": user, "max_tokens": 0}), "max_tokens"),
        (
            json!({"model": "skillup/quiz", "messages": user, "max_completion_tokens": 40000}),
            "max_completion_tokens",
        ),
        (json!({"model": "skillup/quiz", "messages": user, "temperature": 2.5}), "temperature"),
        (json!({"model": "skillup/quiz", "messages": user, "top_p": 0}), "top_p"),
        (json!({"model": "skillup/quiz", "messages": user, "stop": [1]}), "stop"),
        (json!({"model": "skillup/quiz", "messages": user, "tools": []}), "tools"),
        (json!({"model": "skillup/quiz", "messages": user, "logprobs": true}), "logprobs"),
        (
            json!({"model": "skillup/quiz", "messages": user, "response_format": {"type": "json_object"}}),
            "response_format",
        ),
        (json!({"model": "skillup/quiz", "messages": user, "metadata": {"k": 1}}), "metadata.k"),
        (
            json!({"model": "skillup/quiz", "messages": user, "stream_options": {"include_usage": true}}),
            "stream_options",
        ),
    ] {
        let e = refused(body.clone());
        assert_eq!(
            (e.status, e.kind),
            (StatusCode::BAD_REQUEST, "invalid_request_error"),
            "{body}"
        );
        assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
    }
    let Err(e) = check(b"{not json") else { panic!("accepted") };
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
}

#[test]
fn refusals_take_the_status_type_and_code_openai_clients_act_on() {
    let cases = [
        (
            ApiError::new(401, "UNAUTHENTICATED", "x"),
            401,
            "authentication_error",
            Some("invalid_api_key"),
        ),
        (
            ApiError::new(402, "SUBSCRIPTION_REQUIRED", "x"),
            403,
            "permission_error",
            Some("model_not_allowed"),
        ),
        (
            ApiError::new(403, "EMAIL_NOT_VERIFIED", "x"),
            403,
            "permission_error",
            Some("email_not_verified"),
        ),
        (
            ApiError::new(404, "NOT_FOUND", "x"),
            404,
            "invalid_request_error",
            Some("model_not_found"),
        ),
        (
            ApiError::new(429, "QUOTA_EXCEEDED", "x"),
            429,
            "insufficient_quota",
            Some("insufficient_quota"),
        ),
        (
            ApiError::new(429, "RATE_LIMITED", "x"),
            429,
            "rate_limit_error",
            Some("rate_limit_exceeded"),
        ),
        (ApiError::new(503, "UNAVAILABLE", "x"), 503, "api_error", None),
    ];
    for (e, status, kind, code) in cases {
        let o = OpenAiError::from_api(e, Locale::En);
        assert_eq!((o.status.as_u16(), o.kind, o.code), (status, kind, code));
        assert_eq!(o.headers.get("x-should-retry").is_some(), kind == "insufficient_quota");
    }
    let mut e = ApiError::new(400, "INVALID_ARGUMENT", "topic is too long");
    e = e.field("topic");
    assert_eq!(OpenAiError::from_api(e, Locale::En).param.as_deref(), Some("messages"));
    assert_eq!(param_of("params.questions"), "metadata.questions");
    assert_eq!(finish_reason("max_tokens"), "length");
    assert_eq!(finish_reason("stop"), "stop");
}
