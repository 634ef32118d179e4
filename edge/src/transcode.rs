//! JSON ↔ protobuf by the proto3 JSON mapping (prost-reflect), with proto field names as in
//! DESIGN.md (`access_token`, not `accessToken`; both are accepted on input). A request
//! message is assembled as one JSON object — the body (whole or one field), then query
//! parameters, then path variables, each converted by its field's kind — and decoded once,
//! so 64-bit integers, enums, timestamps and wrappers follow the mapping in every position.

use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage,
    Value,
};
use serde_json::{Map, Value as Json};

use serde::Serialize as _;

use crate::{
    errors::ApiError,
    json::ProtoJson,
    routes::{BodyRule, Route},
};

const MAX_DEPTH: usize = 32;

/// Puts a raw body (a `BodyRule::Raw` route's) into the request's `google.api.HttpBody` field.
pub fn put_raw_body(msg: &mut DynamicMessage, field: &str, content_type: &str, body: Bytes) {
    let Some(f) = msg.descriptor().get_field_by_name(field) else { return };
    let Kind::Message(desc) = f.kind() else { return };
    let mut raw = DynamicMessage::new(desc);
    raw.set_field_by_name("content_type", Value::String(content_type.to_owned()));
    raw.set_field_by_name("data", Value::Bytes(body));
    msg.set_field(&f, Value::Message(raw));
}

/// Builds the request message of `route` from the HTTP request's parts.
pub fn request_message(
    route: &Route,
    vars: &[(String, String)],
    query: Option<&str>,
    body: &[u8],
) -> Result<DynamicMessage, ApiError> {
    let input = &route.rpc.input;
    let mut root = match &route.body {
        BodyRule::Whole => parse_object(body)?,
        BodyRule::Field(name) => {
            let mut m = Map::new();
            if !body.iter().all(u8::is_ascii_whitespace) {
                m.insert(name.clone(), parse_json(body)?);
            }
            m
        }
        BodyRule::None | BodyRule::Raw(_) => Map::new(),
    };
    if route.body != BodyRule::Whole
        && let Some(q) = query
    {
        let bound: Vec<&str> = route.template.variable_fields().collect();
        for (key, value) in form_urlencoded(q) {
            if bound.contains(&key.as_str()) {
                continue;
            }
            if let BodyRule::Field(f) = &route.body
                && (key == *f || key.starts_with(&format!("{f}.")))
            {
                return Err(ApiError::invalid_as(
                    format!("query parameter `{key}` belongs to the body"),
                    "bad-query-in-body",
                    &[("field", &key)],
                )
                .field(key));
            }
            let key = page_alias(input, key);
            set_path(&mut root, input, &key, &value, true)?;
        }
    }
    for (field, value) in vars {
        set_path(&mut root, input, field, value, false)?;
    }
    let json = Json::Object(root);
    let msg = DynamicMessage::deserialize_with_options(
        input.clone(),
        json,
        &DeserializeOptions::new().deny_unknown_fields(true),
    )
    .map_err(|e| {
        let detail = e.to_string();
        ApiError::invalid_as(
            format!("the request does not fit its schema: {detail}"),
            "bad-schema",
            &[("detail", &detail)],
        )
    })?;
    check_required(&msg, "", 0)?;
    Ok(msg)
}

fn parse_json(body: &[u8]) -> Result<Json, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let (key, why) = match e.classify() {
            serde_json::error::Category::Eof => ("bad-json-eof", "it ends too early"),
            _ => ("bad-json", "unexpected input"),
        };
        let (line, column) = (e.line().to_string(), e.column().to_string());
        ApiError::invalid_as(
            format!("the body is not valid JSON (line {line}, column {column}): {why}"),
            key,
            &[("line", &line), ("column", &column)],
        )
    })
}

fn parse_object(body: &[u8]) -> Result<Map<String, Json>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match parse_json(body)? {
        Json::Object(m) => Ok(m),
        _ => Err(ApiError::invalid_as("the body must be a JSON object", "bad-object", &[])),
    }
}

/// `page_size` and `page_token` at the top of a query are the request's `page.page_size` and
/// `page.page_token` (as AIP-158 writes them) when it has a `page` and no field of that name.
fn page_alias(input: &MessageDescriptor, key: String) -> String {
    if (key == "page_size" || key == "page_token")
        && input.get_field_by_name(&key).is_none()
        && input.get_field_by_name("page").is_some()
    {
        format!("page.{key}")
    } else {
        key
    }
}

fn form_urlencoded(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    q.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            let s = s.replace('+', " ");
            percent_encoding::percent_decode_str(&s).decode_utf8_lossy().into_owned()
        };
        (dec(k), dec(v))
    })
}

/// Puts a text value (from the path or query) at `path` (`a.b.c`), typed by the field's kind.
fn set_path(
    root: &mut Map<String, Json>,
    msg: &MessageDescriptor,
    path: &str,
    value: &str,
    from_query: bool,
) -> Result<(), ApiError> {
    let where_ = if from_query { "query parameter" } else { "path variable" };
    // The message in other languages: by the place the value came from.
    let key = |what: &str| -> &'static str {
        match (what, from_query) {
            ("unknown", true) => "bad-unknown-query",
            ("unknown", false) => "bad-unknown-path",
            ("unsettable", true) => "bad-unsettable-query",
            ("unsettable", false) => "bad-unsettable-path",
            (_, true) => "bad-value-query",
            (_, false) => "bad-value-path",
        }
    };
    let at = [("field", path)];
    let mut desc = msg.clone();
    let mut obj = root;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let field = desc
            .get_field_by_name(part)
            .or_else(|| desc.get_field_by_json_name(part))
            .ok_or_else(|| {
                ApiError::invalid_as(format!("unknown {where_} `{path}`"), key("unknown"), &at)
                    .field(path.to_owned())
            })?;
        let name = field.name().to_owned();
        if i + 1 < parts.len() {
            let Kind::Message(inner) = field.kind() else {
                return Err(ApiError::invalid_as(
                    format!("`{path}`: {part} is not a message"),
                    "bad-not-message",
                    &[("field", path), ("part", part)],
                )
                .field(path.to_owned()));
            };
            if field.is_list() || field.is_map() || is_well_known(&inner) {
                return Err(ApiError::invalid_as(
                    format!("`{path}` cannot be set from the {where_}"),
                    key("unsettable"),
                    &at,
                )
                .field(path.to_owned()));
            }
            let entry = obj.entry(name).or_insert_with(|| Json::Object(Map::new()));
            obj = match entry {
                Json::Object(m) => m,
                _ => {
                    return Err(ApiError::invalid_as(
                        format!("`{path}` is set twice"),
                        "bad-twice",
                        &at,
                    )
                    .field(path.to_owned()));
                }
            };
            desc = inner;
            continue;
        }
        if field.is_map() || (matches!(field.kind(), Kind::Message(ref m) if !is_well_known(m))) {
            return Err(ApiError::invalid_as(
                format!("`{path}` cannot be set from the {where_}"),
                key("unsettable"),
                &at,
            )
            .field(path.to_owned()));
        }
        let v = scalar_json(&field, value).map_err(|m| {
            let words = [("field", path), ("detail", m.as_str())];
            ApiError::invalid_as(format!("{where_} `{path}`: {m}"), key("value"), &words)
                .field(path.to_owned())
        })?;
        if field.is_list() {
            match obj.entry(name).or_insert_with(|| Json::Array(Vec::new())) {
                Json::Array(a) => a.push(v),
                other => *other = Json::Array(vec![v]),
            }
        } else {
            obj.insert(name, v);
        }
        return Ok(());
    }
    Ok(())
}

fn is_well_known(m: &MessageDescriptor) -> bool {
    m.full_name().starts_with("google.protobuf.")
}

/// The JSON form of one text value for a scalar (or well-known) field.
fn scalar_json(field: &FieldDescriptor, value: &str) -> Result<Json, String> {
    Ok(match field.kind() {
        // As the OpenAPI document says: a boolean is `true` or `false`.
        Kind::Bool => match value {
            "true" => Json::Bool(true),
            "false" => Json::Bool(false),
            _ => return Err("must be true or false".into()),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Json::from(value.parse::<i32>().map_err(|_| "must be a 32-bit integer")?)
        }
        Kind::Uint32 | Kind::Fixed32 => {
            Json::from(value.parse::<u32>().map_err(|_| "must be an unsigned 32-bit integer")?)
        }
        Kind::Float | Kind::Double => match value {
            "NaN" | "Infinity" | "-Infinity" => Json::String(value.to_owned()),
            _ => Json::from(value.parse::<f64>().map_err(|_| "must be a number")?),
        },
        // Enums by name in a query, as the OpenAPI document says.
        Kind::Enum(e) => match e.get_value_by_name(value) {
            Some(_) => Json::String(value.to_owned()),
            None => {
                let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
                return Err(format!("must be one of {}", names.join(", ")));
            }
        },
        // 64-bit integers, strings, bytes (base64) and well-known types (RFC 3339 timestamps,
        // "1.5s" durations) take their JSON string form.
        _ => Json::String(value.to_owned()),
    })
}

/// Refuses a message that lacks a field marked `(google.api.field_behavior) = REQUIRED`.
fn check_required(msg: &DynamicMessage, prefix: &str, depth: usize) -> Result<(), ApiError> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    for field in msg.descriptor().fields() {
        let path = if prefix.is_empty() {
            field.name().to_owned()
        } else {
            format!("{prefix}.{}", field.name())
        };
        if is_required(&field) && !msg.has_field(&field) {
            return Err(ApiError::invalid_as(
                format!("`{path}` is required"),
                "bad-required",
                &[("field", &path)],
            )
            .field(path.clone()));
        }
        // Proto3 enums are open, but a number the contract does not define is a mistake.
        if let Some(e) = field.kind().as_enum() {
            let defined = |n: i32| e.get_value(n).is_some();
            let ok = match msg.get_field(&field).as_ref() {
                Value::EnumNumber(n) => defined(*n),
                Value::List(items) => items.iter().all(|v| v.as_enum_number().is_none_or(defined)),
                _ => true,
            };
            if !ok {
                let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
                let options = names.join(", ");
                return Err(ApiError::invalid_as(
                    format!("`{path}` must be one of {options}"),
                    "bad-enum",
                    &[("field", &path), ("options", &options)],
                )
                .field(path.clone()));
            }
        }
        if let Value::Message(inner) = msg.get_field(&field).as_ref()
            && msg.has_field(&field)
        {
            check_required(inner, &path, depth + 1)?;
        }
    }
    Ok(())
}

/// Whether a field is marked REQUIRED.
pub fn is_required(field: &FieldDescriptor) -> bool {
    const REQUIRED: i32 = 2;
    let Some(ext) = field.parent_pool().get_extension_by_name("google.api.field_behavior") else {
        return false;
    };
    let options = field.options();
    if !options.has_extension(&ext) {
        return false;
    }
    match options.get_extension(&ext).as_ref() {
        Value::List(values) => values.iter().any(|v| v.as_enum_number() == Some(REQUIRED)),
        _ => false,
    }
}

/// The JSON answer for a response message (or its `response_body` field).
pub fn response_json(
    output: &MessageDescriptor,
    bytes: &[u8],
    response_body: Option<&str>,
) -> Result<Vec<u8>, ApiError> {
    let msg = DynamicMessage::decode(output.clone(), bytes).map_err(|e| {
        tracing::error!(error = %e, message = output.full_name(), "undecodable upstream response");
        ApiError::new(502, "INTERNAL", "the service answered with an unreadable message")
    })?;
    let opts = crate::json::options();
    let mut out = Vec::with_capacity(bytes.len() * 2 + 16);
    let mut ser = serde_json::Serializer::new(&mut out);
    let res = match response_body {
        Some(field) => match output.get_field_by_name(field) {
            Some(f) => {
                let value = msg.get_field(&f);
                match value.as_ref() {
                    Value::Message(inner) => ProtoJson(inner).serialize(&mut ser),
                    _ => {
                        // A scalar response body: wrap and unwrap through a one-field object.
                        let mut tmp = Vec::new();
                        msg.serialize_with_options(
                            &mut serde_json::Serializer::new(&mut tmp),
                            &opts,
                        )
                        .map_err(|e| ApiError::new(500, "INTERNAL", e.to_string()))?;
                        let v: Json = serde_json::from_slice(&tmp)
                            .map_err(|e| ApiError::new(500, "INTERNAL", e.to_string()))?;
                        return Ok(serde_json::to_vec(&v[field]).unwrap_or_default());
                    }
                }
            }
            None => ProtoJson(&msg).serialize(&mut ser),
        },
        None => ProtoJson(&msg).serialize(&mut ser),
    };
    res.map_err(|e| ApiError::new(500, "INTERNAL", e.to_string()))?;
    Ok(out)
}

/// Encodes a request message for the wire.
pub fn encode(msg: &DynamicMessage) -> Bytes {
    Bytes::from(msg.encode_to_vec())
}
