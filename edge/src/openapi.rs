//! The OpenAPI 3 document, generated from the same route table and descriptors the edge
//! serves, so it cannot drift from the routes: paths and methods, path and query parameters,
//! request bodies, responses (JSON, or `text/event-stream` for streams), schemas of every
//! message with the proto3 JSON mapping's types, the comments of the contracts as
//! descriptions, REQUIRED fields, bearer security on protected routes, and the error shape.

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use crate::{
    routes::{BodyRule, RouteTable},
    transcode::is_required,
};

/// Builds the document.
/// The document of every route the contracts define (`skillup openapi`; the web console's
/// typed client is generated from it).
pub fn contract_document() -> String {
    let pool = prost_reflect::DescriptorPool::decode(skillup_proto::FILE_DESCRIPTOR_SET)
        .expect("the contracts' descriptor set decodes");
    let table = RouteTable::from_pool(&pool, None).expect("the contracts' routes are valid");
    let doc = document(&table, "SkillUp API", env!("CARGO_PKG_VERSION"));
    serde_json::to_string_pretty(&doc).expect("a JSON value serializes") + "\n"
}

pub fn document(table: &RouteTable, title: &str, version: &str) -> Value {
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut schemas: BTreeMap<String, Value> = BTreeMap::new();
    let mut pending: Vec<MessageDescriptor> = Vec::new();
    let mut op_ids: BTreeSet<String> = BTreeSet::new();

    for route in &table.routes {
        let rpc = &route.rpc;
        let mut op = Map::new();
        let mut id = format!("{}_{}", rpc.service.rsplit('.').next().unwrap_or_default(), rpc.name);
        while !op_ids.insert(id.clone()) {
            id.push('_');
        }
        op.insert("operationId".into(), json!(id));
        op.insert("tags".into(), json!([rpc.upstream]));
        let doc = comments(&rpc.method);
        let summary = doc.lines().next().unwrap_or_default().trim().to_owned();
        if !summary.is_empty() {
            op.insert("summary".into(), json!(summary));
            op.insert("description".into(), json!(doc.trim()));
        }
        let mut params = Vec::new();
        let bound: Vec<&str> = route.template.variable_fields().collect();
        for var in &bound {
            let schema = field_at(&rpc.input, var)
                .map(|f| field_schema(&f, &mut pending))
                .unwrap_or_else(|| json!({"type": "string"}));
            params.push(json!({"name": var, "in": "path", "required": true, "schema": schema}));
        }
        if route.body != BodyRule::Whole {
            for f in rpc.input.fields() {
                if bound.contains(&f.name())
                    || matches!(&route.body, BodyRule::Field(b) | BodyRule::Raw(b) if b == f.name())
                {
                    continue;
                }
                if let Kind::Message(m) = f.kind()
                    && well_known(&m).is_none()
                    && !f.is_list()
                    && !f.is_map()
                {
                    // A message in the query: its scalar fields as `field.sub`; a `page` of
                    // `page_size` / `page_token` by the top-level names the edge also takes.
                    for sub in m.fields() {
                        let Some(schema) =
                            query_schema(&sub).filter(|_| !matches!(sub.kind(), Kind::Message(_)))
                        else {
                            continue;
                        };
                        let alias = f.name() == "page"
                            && matches!(sub.name(), "page_size" | "page_token")
                            && rpc.input.get_field_by_name(sub.name()).is_none();
                        let name = if alias {
                            sub.name().to_owned()
                        } else {
                            format!("{}.{}", f.name(), sub.name())
                        };
                        let mut p = json!({"name": name, "in": "query", "required": false, "schema": schema});
                        let d = field_comment(&sub);
                        if !d.is_empty() {
                            p["description"] = json!(d);
                        }
                        params.push(p);
                    }
                    continue;
                }
                if let Some(schema) = query_schema(&f) {
                    let mut p = json!({"name": f.name(), "in": "query", "required": is_required(&f), "schema": schema});
                    let d = field_comment(&f);
                    if !d.is_empty() {
                        p["description"] = json!(d);
                    }
                    if f.is_list() {
                        p["style"] = json!("form");
                        p["explode"] = json!(true);
                    }
                    params.push(p);
                }
            }
        }
        if !params.is_empty() {
            op.insert("parameters".into(), json!(params));
        }
        match &route.body {
            BodyRule::Whole => {
                let (schema, required) = body_schema(&rpc.input, &bound, &mut pending);
                op.insert(
                    "requestBody".into(),
                    json!({"required": required, "content": {"application/json": {"schema": schema}}}),
                );
            }
            BodyRule::Field(name) => {
                if let Some(f) = rpc.input.get_field_by_name(name) {
                    let schema = field_schema(&f, &mut pending);
                    op.insert(
                        "requestBody".into(),
                        json!({"required": is_required(&f), "content": {"application/json": {"schema": schema}}}),
                    );
                }
            }
            BodyRule::Raw(_) => {
                op.insert(
                    "requestBody".into(),
                    json!({"required": true, "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}),
                );
            }
            BodyRule::None => {}
        }
        let ok = match rpc.rule.success_status {
            0 => 200,
            s => s,
        };
        let out_schema = match &route.response_body {
            Some(f) => rpc
                .output
                .get_field_by_name(f)
                .map(|f| field_schema(&f, &mut pending))
                .unwrap_or_else(|| json!({})),
            None => schema_ref(&rpc.output, &mut pending),
        };
        let mut responses = Map::new();
        let file = rpc.output.full_name() == "google.api.HttpBody";
        if rpc.server_streaming && !file {
            responses.insert(
                "200".into(),
                json!({
                    "description": format!("a stream of {} as Server-Sent Events (`data:` lines of JSON; a failure midway ends with `event: error`), or WebSocket text frames when upgraded", rpc.output.full_name()),
                    "content": {"text/event-stream": {"schema": {"type": "string"}}}
                }),
            );
        } else if ok == 204 {
            responses.insert("204".into(), json!({"description": "done, no content"}));
        } else if file {
            responses.insert(
                ok.to_string(),
                json!({
                    "description": "a file to download (`Content-Disposition: attachment`), in the content type the operation names",
                    "headers": {"Content-Disposition": {"schema": {"type": "string"}}},
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}
                }),
            );
        } else {
            responses.insert(
                ok.to_string(),
                json!({"description": "success", "content": {"application/json": {"schema": out_schema}}}),
            );
        }
        let err = |d: &str| json!({"description": d, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
        responses.insert(
            "400".into(),
            err("bad input: malformed JSON, a wrong type, a missing required field"),
        );
        if !rpc.rule.public {
            responses
                .insert("401".into(), err("missing, invalid, expired or revoked access token"));
            responses.insert(
                "403".into(),
                err(if rpc.rule.signed_in {
                    "inactive account, missing scope, or an API key (this route needs a signed-in session)"
                } else {
                    "inactive account or missing scope"
                }),
            );
        }
        responses.insert("429".into(), err("rate limited; see Retry-After"));
        responses.insert("503".into(), err("a service is unavailable; see Retry-After"));
        responses.insert("default".into(), err("any other failure, same shape"));
        op.insert("responses".into(), Value::Object(responses));
        if rpc.rule.public {
            op.insert("security".into(), json!([]));
        } else {
            op.insert("security".into(), json!([{"bearerAuth": []}]));
        }
        paths
            .entry(route.template.openapi_path())
            .or_default()
            .insert(route.method.as_str().to_ascii_lowercase(), Value::Object(op));
    }

    while let Some(m) = pending.pop() {
        let name = schema_name(&m);
        if schemas.contains_key(&name) {
            continue;
        }
        schemas.insert(name.clone(), json!({}));
        let s = message_schema(&m, &[], &mut pending);
        schemas.insert(name, s);
    }
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["code", "message", "request_id"],
                "properties": {
                    "code": {"type": "string", "description": "stable machine code, e.g. SUBSCRIPTION_REQUIRED, EMAIL_NOT_VERIFIED, RATE_LIMITED"},
                    "message": {"type": "string", "description": "for people; never internal detail"},
                    "request_id": {"type": "string", "description": "the X-Request-Id of the request"},
                    "field": {"type": "string", "description": "the offending field, when one is to blame"}
                }
            }}
        }),
    );

    json!({
        "openapi": "3.0.3",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT or API key (sk-skillup-…)"}}
        }
    })
}

fn schema_name(m: &MessageDescriptor) -> String {
    m.full_name().to_owned()
}

fn schema_ref(m: &MessageDescriptor, pending: &mut Vec<MessageDescriptor>) -> Value {
    if let Some(wk) = well_known(m) {
        return wk;
    }
    pending.push(m.clone());
    json!({"$ref": format!("#/components/schemas/{}", schema_name(m))})
}

fn body_schema(
    m: &MessageDescriptor,
    bound: &[&str],
    pending: &mut Vec<MessageDescriptor>,
) -> (Value, bool) {
    if bound.is_empty() {
        let required = m.fields().any(|f| is_required(&f));
        return (schema_ref(m, pending), required);
    }
    // Path-bound fields come from the path, not the body.
    let s = message_schema(m, bound, pending);
    let required = s.get("required").is_some();
    (s, required)
}

fn message_schema(
    m: &MessageDescriptor,
    skip: &[&str],
    pending: &mut Vec<MessageDescriptor>,
) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for f in m.fields() {
        if skip.contains(&f.name()) {
            continue;
        }
        let mut s = field_schema(&f, pending);
        if is_required(&f) {
            required.push(f.name().to_owned());
            // proto3 has no presence for scalars: the default value is the same as absent.
            if f.is_list() || f.is_map() {
                s["minItems"] = json!(1);
            } else if matches!(f.kind(), Kind::String | Kind::Bytes) {
                s["minLength"] = json!(1);
            }
        } else if s.get("$ref").is_some() {
            // The proto3 JSON mapping reads `null` as "not set" for every field.
            s = json!({"allOf": [s], "nullable": true});
        } else {
            s["nullable"] = json!(true);
        }
        let d = field_comment(&f);
        if !d.is_empty() && s.get("$ref").is_none() {
            s["description"] = json!(d);
        }
        props.insert(f.name().to_owned(), s);
    }
    let mut out = json!({"type": "object", "properties": props, "additionalProperties": false});
    let d = message_comment(m);
    if !d.is_empty() {
        out["description"] = json!(d);
    }
    if !required.is_empty() {
        out["required"] = json!(required);
    }
    out
}

fn field_schema(f: &FieldDescriptor, pending: &mut Vec<MessageDescriptor>) -> Value {
    if f.is_map() {
        let Kind::Message(entry) = f.kind() else { return json!({"type": "object"}) };
        let value = entry.map_entry_value_field();
        return json!({"type": "object", "additionalProperties": kind_schema(&value.kind(), pending)});
    }
    let one = kind_schema(&f.kind(), pending);
    if f.is_list() { json!({"type": "array", "items": one}) } else { one }
}

fn query_schema(f: &FieldDescriptor) -> Option<Value> {
    if f.is_map() {
        return None;
    }
    let s = match f.kind() {
        Kind::Message(m) => well_known(&m)?,
        k => kind_schema(&k, &mut Vec::new()),
    };
    Some(if f.is_list() { json!({"type": "array", "items": s}) } else { s })
}

fn kind_schema(kind: &Kind, pending: &mut Vec<MessageDescriptor>) -> Value {
    match kind {
        Kind::Double | Kind::Float => json!({"type": "number"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Kind::Uint32 | Kind::Fixed32 => {
            json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295u64})
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({"type": "string", "format": "int64", "pattern": "^-?[0-9]{1,19}$"})
        }
        Kind::Uint64 | Kind::Fixed64 => {
            json!({"type": "string", "format": "uint64", "pattern": "^[0-9]{1,20}$"})
        }
        Kind::Bool => json!({"type": "boolean"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "format": "byte"}),
        Kind::Enum(e) => {
            let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
            json!({"type": "string", "enum": names})
        }
        Kind::Message(m) => schema_ref(m, pending),
    }
}

fn well_known(m: &MessageDescriptor) -> Option<Value> {
    Some(match m.full_name() {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => {
            json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"})
        }
        "google.protobuf.Struct" | "google.protobuf.Any" => json!({"type": "object"}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({"type": "array", "items": {}}),
        "google.protobuf.Empty" => json!({"type": "object", "additionalProperties": false}),
        "google.protobuf.FieldMask" => json!({"type": "string"}),
        "google.protobuf.StringValue" => json!({"type": "string", "nullable": true}),
        "google.protobuf.BoolValue" => json!({"type": "boolean", "nullable": true}),
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => {
            json!({"type": "integer", "nullable": true})
        }
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => {
            json!({"type": "string", "nullable": true})
        }
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => {
            json!({"type": "number", "nullable": true})
        }
        "google.protobuf.BytesValue" => {
            json!({"type": "string", "format": "byte", "nullable": true})
        }
        _ => return None,
    })
}

fn field_at(m: &MessageDescriptor, path: &str) -> Option<FieldDescriptor> {
    let mut current = m.clone();
    let mut parts = path.split('.').peekable();
    while let Some(p) = parts.next() {
        let f = current.get_field_by_name(p)?;
        if parts.peek().is_none() {
            return Some(f);
        }
        current = f.kind().as_message()?.clone();
    }
    None
}

fn comment_at(file: &prost_reflect::FileDescriptor, path: &[i32]) -> String {
    file.file_descriptor_proto()
        .source_code_info
        .as_ref()
        .and_then(|info| info.location.iter().find(|l| l.path == path))
        .map(|l| {
            l.leading_comments()
                .lines()
                .map(str::trim)
                .collect::<Vec<_>>()
                .join("\n")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

fn comments(m: &prost_reflect::MethodDescriptor) -> String {
    comment_at(&m.parent_file(), m.path())
}

fn message_comment(m: &MessageDescriptor) -> String {
    comment_at(&m.parent_file(), m.path())
}

fn field_comment(f: &FieldDescriptor) -> String {
    comment_at(&f.parent_file(), f.path())
}

#[cfg(test)]
mod tests {
    /// The web console's typed client is generated from the saved document: it must be what
    /// the contracts give (`scripts/web-api` refreshes it and the types).
    #[test]
    fn the_consoles_saved_document_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/api/openapi.json");
        let saved = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            saved == super::contract_document(),
            "web/api/openapi.json is stale: run scripts/web-api (then commit it and web/app/api/schema.d.ts)"
        );
    }

    use prost_reflect::DescriptorPool;

    use super::*;

    #[test]
    fn the_document_lists_every_route_with_schemas_and_security() {
        let pool = DescriptorPool::decode(skillup_proto::FILE_DESCRIPTOR_SET).unwrap();
        let table = RouteTable::from_pool(&pool, None).unwrap();
        let doc = document(&table, "SkillUp", "test");
        let paths = doc["paths"].as_object().unwrap();
        for route in &table.routes {
            let p = &paths[&route.template.openapi_path()];
            assert!(
                p.get(route.method.as_str().to_ascii_lowercase()).is_some(),
                "{}",
                route.template.source
            );
        }
        let login = &doc["paths"]["/api/auth/login"]["post"];
        assert_eq!(login["security"], json!([]));
        assert_eq!(login["requestBody"]["required"], json!(true));
        let register = &doc["paths"]["/api/auth/register"]["post"];
        assert!(register["responses"].get("201").is_some(), "success status from the rule");
        let me = &doc["paths"]["/api/auth/me"]["get"];
        assert_eq!(me["security"], json!([{"bearerAuth": []}]));
        let req = &doc["components"]["schemas"]["skillup.auth.v1.LoginRequest"];
        assert_eq!(req["required"], json!(["email", "password"]));
        assert!(req["properties"]["email"]["description"].as_str().unwrap().contains("Email"));
        let user = &doc["components"]["schemas"]["skillup.auth.v1.User"];
        assert_eq!(user["properties"]["created_at"]["format"], json!("date-time"));
        let task = &doc["paths"]["/api/generate/{task_id}"]["get"]["parameters"][0];
        assert_eq!(task["in"], json!("path"));
        // Every $ref resolves.
        let text = doc.to_string();
        for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &r[..r.find('"').unwrap()];
            assert!(doc["components"]["schemas"].get(name).is_some(), "dangling $ref {name}");
        }
    }
}
