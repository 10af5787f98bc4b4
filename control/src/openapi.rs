//! The OpenAPI 3 description of the business and admin APIs, served at `/v1/openapi.json`.
//!
//! Hand-written (a small `json!` tree) rather than derived, so the handlers stay plain axum; a test
//! (`tests/openapi.rs`) checks that every served business route appears here and that every path
//! here is served, so the document cannot drift from the router.

use serde_json::{Value, json};

/// A JSON-bodied request.
fn json_request(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

/// A JSON response with a description.
fn json_response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

/// The standard error responses of an authenticated route.
fn errors() -> Value {
    let error = json!({"$ref": "#/components/schemas/Error"});
    json!({
        "400": json_response("invalid parameters or body", error.clone()),
        "401": json_response("missing or unknown API key", error.clone()),
        "403": json_response("the key lacks the scope", error.clone()),
        "413": json_response("body larger than the limit", error.clone()),
        "503": json_response("store or bus unavailable; nothing was done", error),
    })
}

/// An operation: summary, scope, optional request body, the success response, and the errors.
fn operation(
    summary: &str,
    scope: Option<&str>,
    body: Option<Value>,
    success: (&str, Value),
) -> Value {
    let mut responses = errors();
    responses[success.0] = success.1;
    let mut op = json!({"summary": summary, "responses": responses});
    if let Some(scope) = scope {
        op["security"] = json!([{"apiKey": []}, {"bearer": []}]);
        op["description"] = Value::String(format!(
            "Requires an API key with the `{scope}` scope (or `admin`)."
        ));
    }
    if let Some(body) = body {
        op["requestBody"] = json_request(body);
    }
    op
}

/// A query parameter.
fn query(name: &str, required: bool, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": required, "schema": schema, "description": description})
}

/// An operation with its path or query parameters.
fn with_parameters(mut op: Value, parameters: Value) -> Value {
    op["parameters"] = parameters;
    op
}

/// A push request schema with its target fields.
fn push_schema(target: Value, required_target: &[&str]) -> Value {
    let mut properties = json!({
        "operation": {"type": "integer", "format": "int32", "minimum": 1000, "description": "operation code the clients see"},
        "body_text": {"type": "string", "description": "payload as UTF-8 text (exclusive with body_base64)"},
        "body_base64": {"type": "string", "format": "byte", "description": "payload as base64 (exclusive with body_text)"},
    });
    if let (Some(properties), Some(target)) = (properties.as_object_mut(), target.as_object()) {
        properties.extend(target.clone());
    }
    let mut required = vec!["operation"];
    required.extend_from_slice(required_target);
    json!({"type": "object", "properties": properties, "required": required})
}

/// The whole document.
pub fn document() -> Value {
    let accepted = |what: &str| {
        json_response(
            &format!("{what}: the bus holds the push"),
            json!({"$ref": "#/components/schemas/PushReport"}),
        )
    };
    let object = json!({"type": "object"});
    let region_name =
        json!([{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}]);
    let key_id =
        json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]);
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "rim control plane",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Business and admin API of rim. Pushes are accepted (202) once the regional bus holds them. \
                            The goim-compatible routes under /goim are documented in GOIM-HTTP-API.md."
        },
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
                "bearer": {"type": "http", "scheme": "bearer"}
            },
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "string"}, "message": {"type": "string"}}},
                "PushReport": {"type": "object", "properties": {
                    "message_id": {"type": "string", "description": "UUIDv7 of the push"},
                    "sessions": {"type": "integer", "description": "connections addressed: live sessions of the keys or users; for rooms and broadcasts, connections in the room or online as of the edges' last heartbeats"},
                    "regions": {"type": "array", "items": {"type": "string"}},
                    "records": {"type": "integer", "description": "bus records published"},
                    "offline_keys": {"type": "array", "items": {"type": "string"}},
                    "offline_mids": {"type": "array", "items": {"type": "integer", "format": "int64"}},
                    "capped_mids": {"type": "array", "items": {"type": "integer", "format": "int64"}, "description": "users with more live sessions than the per-user bound: only their newest sessions were targeted"},
                    "count_unavailable": {"type": "string", "description": "why a room's connections could not be counted (the push was sent; sessions is 0)"}
                }},
                "Scope": {"type": "string", "enum": ["push", "read", "admin"]}
            }
        },
        "paths": {
            "/v1/push/keys": {"post": operation("Push to connections by key", Some("push"),
                Some(push_schema(json!({"keys": {"type": "array", "items": {"type": "string"}}}), &["keys"])),
                ("202", accepted("accepted")))},
            "/v1/push/users": {"post": operation("Push to every connection of users", Some("push"),
                Some(push_schema(json!({"mids": {"type": "array", "items": {"type": "integer", "format": "int64"}}}), &["mids"])),
                ("202", accepted("accepted")))},
            "/v1/push/room": {"post": operation("Push to a room", Some("push"),
                Some(push_schema(json!({"room": {"type": "string", "description": "type://id"}}), &["room"])),
                ("202", accepted("accepted")))},
            "/v1/push/all": {"post": operation("Push to every connection", Some("push"),
                Some(push_schema(json!({"speed": {"type": "integer", "minimum": 0, "description": "deliveries per second per edge, 0 = no cap"}}), &[])),
                ("202", accepted("accepted")))},
            "/v1/online/total": {"get": operation("Connection and IP totals", Some("read"), None,
                ("200", json_response("totals", json!({"type": "object", "properties": {
                    "conn_count": {"type": "integer"}, "ip_count": {"type": "integer"}}}))))},
            "/v1/online/rooms": {"get": with_parameters(operation("Online counts of rooms", Some("read"), None,
                    ("200", json_response("counts by room", json!({"type": "object", "properties": {
                        "rooms": {"type": "object", "additionalProperties": {"type": "integer"}}}})))), json!([query("rooms", true, json!({"type": "array", "items": {"type": "string"}}),
                    "room ids `type://id`, repeated or comma-separated")]))},
            "/v1/online/top": {"get": with_parameters(operation("Most populated rooms of a type", Some("read"), None,
                    ("200", json_response("rooms, most online first", object.clone()))), json!([query("type", true, json!({"type": "string"}), "room type"),
                               query("limit", true, json!({"type": "integer", "minimum": 1, "maximum": crate::goim::MAX_TOP_LIMIT}), "most rooms answered")]))},
            "/v1/presence": {"get": with_parameters(operation("Which of these users are online now, across regions, with their sessions", Some("read"), None,
                    ("200", json_response("online users with their sessions, and the offline ones", json!({"type": "object", "properties": {
                        "online": {"type": "array", "items": {"type": "object", "properties": {
                            "mid": {"type": "integer", "format": "int64"},
                            "sessions": {"type": "array", "items": {"type": "object", "properties": {
                                "key": {"type": "string"}, "node": {"type": "string"}, "region": {"type": "string"},
                                "platform": {"type": "string"}, "room": {"type": "string"},
                                "connected_at_unix_ms": {"type": "integer", "format": "int64"}}}}}}},
                        "offline": {"type": "array", "items": {"type": "integer", "format": "int64"}}}})))),
                    json!([query("mids", true, json!({"type": "array", "items": {"type": "integer", "format": "int64"}}),
                    "user ids (not 0), repeated or comma-separated, at most control_max_targets")]))},
            "/v1/pushes/{id}": {"get": with_parameters(operation("What became of a push, per target (receipts: accepted, stored, written, acked, offline, expired, fallback); 404 if nothing is known", Some("read"), None,
                    ("200", json_response("the push's receipts by target, times in Unix milliseconds", json!({"type": "object", "properties": {
                        "message_id": {"type": "string", "format": "uuid"},
                        "targets": {"type": "array", "items": {"type": "object", "properties": {
                            "target": {"type": "string", "description": "`mid:<mid>` or `key:<key>`"},
                            "states": {"type": "object", "additionalProperties": {"type": "integer", "format": "int64"}}}}}}})))),
                    json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}, "description": "the push's message_id"}]))},
            "/v1/nodes": {"get": operation("Every edge node with state and load", Some("read"), None,
                ("200", json_response("nodes", object.clone())))},
            "/v1/dns": {"get": with_parameters(operation("HTTPDNS: edges for a client, best first (public)", None, None,
                    ("200", json_response("goim-shaped answer plus the explained ranking", object.clone()))), json!([query("lat", false, json!({"type": "number"}), "client latitude (with lon)"),
                               query("lon", false, json!({"type": "number"}), "client longitude (with lat)"),
                               query("platform", false, json!({"type": "string"}), "`web` answers host names, anything else addresses"),
                               query("region", false, json!({"type": "string"}), "client's region hint")]))},
            "/v1/admin/regions": {
                "get": operation("List regions (each with its bus topic, when the bus has topics)", Some("admin"), None,
                    ("200", json_response("regions", object.clone()))),
                "post": operation("Create a region and its bus topic; 409 if the name is taken", Some("admin"),
                    Some(json!({"type": "object", "required": ["name", "latitude", "longitude"], "properties": {
                        "name": {"type": "string", "minLength": 1, "maxLength": 128},
                        "latitude": {"type": "number", "minimum": -90, "maximum": 90},
                        "longitude": {"type": "number", "minimum": -180, "maximum": 180}}})),
                    ("201", json_response("the region", object.clone()))),
            },
            "/v1/admin/regions/{name}": {
                "get": with_parameters(operation("One region; 404 if unknown", Some("admin"), None,
                    ("200", json_response("the region", object.clone()))), region_name.clone()),
                "put": with_parameters(operation("Create (with its bus topic) or move a region", Some("admin"),
                    Some(json!({"type": "object", "required": ["latitude", "longitude"], "properties": {
                        "latitude": {"type": "number", "minimum": -90, "maximum": 90},
                        "longitude": {"type": "number", "minimum": -180, "maximum": 180}}})),
                    ("200", json_response("the region", object.clone()))), region_name.clone()),
                "delete": with_parameters(operation("Delete a region no live node serves (with its dead nodes' records); \
                                                     404 if unknown, 409 while active or draining nodes are in it", Some("admin"), None,
                    ("204", json!({"description": "deleted"}))), region_name),
            },
            "/v1/admin/api-keys": {
                "get": operation("List API keys (never their secrets)", Some("admin"), None,
                    ("200", json_response("keys", object.clone()))),
                "post": operation("Create an API key; the answer holds its secret, shown once", Some("admin"),
                    Some(json!({"type": "object", "required": ["name", "scopes"], "properties": {
                        "name": {"type": "string"},
                        "scopes": {"type": "array", "items": {"$ref": "#/components/schemas/Scope"}}}})),
                    ("201", json_response("the key, with `secret`", object.clone())))
            },
            "/v1/admin/api-keys/{id}": {
                "get": with_parameters(operation("One API key (never its secret), revoked ones too; 404 if unknown", Some("admin"), None,
                    ("200", json_response("the key", object.clone()))), key_id.clone()),
                "delete": with_parameters(operation("Revoke an API key", Some("admin"), None,
                    ("204", json!({"description": "revoked"}))), key_id),
            },
            "/v1/admin/nodes/{id}/drain": {"post": with_parameters(operation("Drain an edge node: no new clients", Some("admin"), None,
                    ("204", json!({"description": "draining"}))), json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]))},
            "/v1/admin/nodes/{id}/undrain": {"post": with_parameters(operation("Lift an admin's drain of an edge node (drains last across restarts until lifted)", Some("admin"), None,
                    ("204", json!({"description": "active again"}))), json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]))}
        }
    })
}
