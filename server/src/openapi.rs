//! The OpenAPI document served at `/api/openapi.json`, generated at run time
//! from the wire types (their `JsonSchema` derives) and from
//! [`crate::sidecar_api::COMMAND_NAMES`], the same list the command endpoint
//! accepts, so the document cannot drift from the code. The tests check that
//! every command variant is listed and every listed name is a variant.

use commandpost_shared::incident::{Briefing, Command, IncidentState, Tenure};
use commandpost_shared::{
    CommandOutcome, CreateIncident, ErrorBody, Incident, IssuedToken, PeopleList, QuarantineEntry,
    Revocation, RevokeMintedBy, ShareLink, ShareRequest, TimelinePage, TokenClaims,
};
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use crate::sidecar_api::COMMAND_NAMES;

/// The schema of one `Command` variant, found by its `type` tag.
fn variant<'a>(command: &'a Value, name: &str) -> Option<&'a Value> {
    command["oneOf"].as_array()?.iter().find(|variant| {
        let tag = &variant["properties"]["type"];
        tag["const"] == name || tag["enum"] == json!([name])
    })
}

fn json_body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

fn responses(ok_status: &str, ok_description: &str, schema: Value) -> Value {
    let error = json!({"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}});
    let mut responses = json!({
        ok_status: {"description": ok_description, "content": {"application/json": {"schema": schema}}},
        "401": {"description": "missing, invalid or expired token", "content": error["content"]},
        "403": {"description": "not allowed for this access role or incident role", "content": error["content"]},
        "404": {"description": "unknown incident", "content": error["content"]},
    });
    for (status, description) in [
        ("400", "malformed query string or JSON"),
        (
            "409",
            "refused by the incident's state (e.g. already declared, closed, a gate)",
        ),
        ("413", "request body larger than the server accepts"),
        (
            "415",
            "request body is not `Content-Type: application/json`",
        ),
        (
            "422",
            "invalid body (a field over its `maxLength`, a missing field) or refused by a rule",
        ),
        (
            "429",
            "rate limited: too many commands or connections for this token; the message says when to retry",
        ),
    ] {
        responses[status] = json!({"description": description, "content": error["content"]});
    }
    responses
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// Builds the document.
pub fn document() -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    for schema in [
        generator.subschema_for::<Incident>(),
        generator.subschema_for::<CreateIncident>(),
        generator.subschema_for::<IncidentState>(),
        generator.subschema_for::<Command>(),
        generator.subschema_for::<CommandOutcome>(),
        generator.subschema_for::<TimelinePage>(),
        generator.subschema_for::<ErrorBody>(),
        generator.subschema_for::<Briefing>(),
        generator.subschema_for::<Vec<Tenure>>(),
        generator.subschema_for::<TokenClaims>(),
        generator.subschema_for::<PeopleList>(),
        generator.subschema_for::<commandpost_shared::Presence>(),
        generator.subschema_for::<ShareRequest>(),
        generator.subschema_for::<ShareLink>(),
        generator.subschema_for::<IssuedToken>(),
        generator.subschema_for::<RevokeMintedBy>(),
        generator.subschema_for::<Revocation>(),
        generator.subschema_for::<QuarantineEntry>(),
    ] {
        drop(schema);
    }
    let schemas = Value::Object(generator.take_definitions(true));
    let command = schemas["Command"].clone();
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "example": "INC-1"});

    let mut paths = serde_json::Map::new();
    paths.insert(
        "/api/incidents".into(),
        json!({
            "get": {"summary": "List the incidents the token may see", "responses": responses("200", "incidents", json!({"type": "array", "items": reference("Incident")}))},
            "post": {"summary": "Declare an incident; the caller becomes its incident commander", "requestBody": json_body(reference("CreateIncident")), "responses": responses("201", "the declared incident", reference("Incident"))},
        }),
    );
    paths.insert("/api/incidents/{id}".into(), json!({"get": {"summary": "An incident with its state and presence", "parameters": [id], "responses": responses("200", "the incident", reference("Incident"))}}));
    paths.insert("/api/me".into(), json!({"get": {"summary": "Who the token belongs to", "responses": responses("200", "the token's claims", reference("TokenClaims"))}}));
    paths.insert(
        "/api/people".into(),
        json!({"get": {"summary": "Who the server knows, to name in commands (tokens that can write): every token subject the server has recorded, and the declarer, role holders and responders of every incident the token covers. Deduplicated by id (latest name), sorted by name then id, at most 50; a command naming anyone else is refused with 422 `unknown_person`.",
            "parameters": [{"name": "q", "in": "query", "schema": {"type": "string"}, "description": "keep people whose id or name contains this, ignoring case"}],
            "responses": responses("200", "people", reference("PeopleList"))}}),
    );
    paths.insert(
        "/api/incidents/{id}/share".into(),
        json!({"post": {"summary": "Create a responder or viewer link limited to this incident (incident commander or admin)", "parameters": [id],
            "requestBody": json_body(reference("ShareRequest")), "responses": responses("200", "the link", reference("ShareLink"))}}),
    );
    paths.insert("/api/incidents/{id}/state".into(), json!({"get": {"summary": "The command sidecar's state", "parameters": [id], "responses": responses("200", "the state", reference("IncidentState"))}}));
    paths.insert(
        "/api/incidents/{id}/timeline".into(),
        json!({"get": {"summary": "The timeline, oldest first, paged", "parameters": [id,
            {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}, "description": "only events after this sequence number"},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}, "description": "page size (default 100)"}],
            "responses": responses("200", "a page", reference("TimelinePage"))}}),
    );
    paths.insert("/api/incidents/{id}/roles/history".into(), json!({"get": {"summary": "Who held which role, from when to when", "parameters": [id], "responses": responses("200", "tenures", json!({"type": "array", "items": reference("Tenure")}))}}));
    paths.insert(
        "/api/incidents/{id}/briefing".into(),
        json!({"get": {"summary": "The ICS 201 briefing a handoff offer would carry now", "parameters": [id, {"name": "notes", "in": "query", "schema": {"type": "string"}}], "responses": responses("200", "the briefing", reference("Briefing"))}}),
    );
    paths.insert(
        "/api/incidents/{id}/events".into(),
        json!({"get": {"summary": "Live events as Server-Sent Events; each SSE id is the event's sequence number. Resume with Last-Event-ID or ?after=. The token may be passed as ?token= (EventSource cannot set headers). The stream also carries `event: presence` messages without an SSE id, whose data is a Presence object (the document's connection counts): one when the stream opens, then one whenever the counts change, at most one a second.",
            "parameters": [id, {"name": "after", "in": "query", "schema": {"type": "integer"}}, {"name": "token", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "an endless text/event-stream of Event objects", "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/Event"}}}}}}}),
    );
    let jti = json!({"name": "jti", "in": "path", "required": true, "schema": {"type": "string"}, "description": "the token id (`jti` claim)"});
    paths.insert("/api/tokens/{jti}/revoke".into(), json!({"post": {"summary": "Revoke a token (admin): refused from now on, its open sockets close (4401)", "parameters": [jti], "responses": responses("200", "the revocation", reference("Revocation"))}}));
    paths.insert("/api/admin/tokens".into(), json!({"get": {"summary": "Every token the server minted or has seen in use (admin of every incident), newest first; `?minted_by=SUB` keeps those that SUB minted", "parameters": [{"name": "minted_by", "in": "query", "schema": {"type": "string"}}], "responses": responses("200", "tokens", json!({"type": "array", "items": reference("IssuedToken")}))}}));
    paths.insert("/api/admin/tokens/revoke".into(), json!({"post": {"summary": "Revoke every token a subject minted (admin of every incident), and what was minted from those", "requestBody": json_body(reference("RevokeMintedBy")), "responses": responses("200", "the revocations", json!({"type": "array", "items": reference("Revocation")}))}}));
    paths.insert("/api/tokens/revoked".into(), json!({"get": {"summary": "Revoked tokens (admin)", "responses": responses("200", "revocations", json!({"type": "array", "items": reference("Revocation")}))}}));
    paths.insert("/api/admin/backup".into(), json!({"get": {"summary": "A consistent online backup of the database (admin); restore with `commandpost restore`", "responses": {"200": {"description": "gzip backup file", "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}}}}}}));
    paths.insert("/api/admin/quarantine".into(), json!({"get": {"summary": "Stored updates and events that no longer decode, moved aside at load (admin); `?bytes=true` includes their bytes", "responses": responses("200", "quarantined records", json!({"type": "array", "items": reference("QuarantineEntry")}))}}));
    paths.insert("/api/incidents/{id}/postmortem.md".into(), json!({"get": {"summary": "The postmortem draft, Markdown", "parameters": [id], "responses": {"200": {"description": "Markdown", "content": {"text/markdown": {"schema": {"type": "string"}}}}}}}));
    for name in COMMAND_NAMES {
        let mut body = variant(&command, name)
            .unwrap_or_else(|| panic!("command `{name}` is not a Command variant"))
            .clone();
        // The path names the command; the body carries the other fields.
        if let Some(properties) = body["properties"].as_object_mut() {
            properties.remove("type");
        }
        if let Some(required) = body["required"].as_array_mut() {
            required.retain(|field| field != "type");
        }
        let description = body["description"].as_str().unwrap_or_default().to_owned();
        paths.insert(
            format!("/api/incidents/{{id}}/commands/{name}"),
            json!({"post": {"summary": name.replace('_', " "), "description": description, "parameters": [id], "requestBody": json_body(body),
                "responses": responses("200", "the events (durable) and the state after them", reference("CommandOutcome"))}}),
        );
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Command Post API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Incidents, the command sidecar and its live events. Authenticate with `Authorization: Bearer TOKEN` (JWT, HS256). Errors are `{\"error\": {\"code\", \"message\"}}`."},
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `type` tag of the `Command` schema.
    fn variant_names(command: &Value) -> Vec<String> {
        command["oneOf"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|variant| {
                let tag = &variant["properties"]["type"];
                tag["const"]
                    .as_str()
                    .or_else(|| tag["enum"][0].as_str())
                    .map(str::to_owned)
            })
            .collect()
    }

    #[test]
    fn every_command_variant_has_an_endpoint_and_every_endpoint_a_variant() {
        let document = document();
        let command = &document["components"]["schemas"]["Command"];
        let mut variants = variant_names(command);
        variants.sort();
        let mut expected: Vec<String> = COMMAND_NAMES.iter().map(|name| name.to_string()).collect();
        // Declared through POST /api/incidents; the timer's own command.
        expected.extend(["declare".to_string(), "tick".to_string()]);
        expected.sort();
        assert_eq!(
            variants, expected,
            "COMMAND_NAMES and the Command enum drifted apart"
        );
        for name in COMMAND_NAMES {
            let path = format!("/api/incidents/{{id}}/commands/{name}");
            let body = &document["paths"][&path]["post"]["requestBody"]["content"]["application/json"]
                ["schema"];
            assert!(body.is_object(), "no body schema for {name}");
            assert!(
                body["properties"].get("type").is_none(),
                "{name}: the tag is in the path"
            );
        }
        let offer = &document["paths"]["/api/incidents/{id}/commands/offer_handoff"]["post"]["requestBody"]
            ["content"]["application/json"]["schema"];
        for field in ["role", "to"] {
            assert!(
                offer["properties"].get(field).is_some(),
                "offer_handoff lacks {field}: {offer}"
            );
        }
    }

    /// Every body the API answers with has a real schema: no route says
    /// only "an object" (the revocation and quarantine routes once did).
    #[test]
    fn no_response_is_an_untyped_object() {
        fn untyped(schema: &Value) -> bool {
            match schema {
                Value::Object(map) => {
                    (map.get("type") == Some(&json!("object"))
                        && !map.contains_key("properties")
                        && !map.contains_key("additionalProperties"))
                        || map.values().any(untyped)
                }
                Value::Array(items) => items.iter().any(untyped),
                _ => false,
            }
        }
        let document = document();
        for (path, item) in document["paths"].as_object().unwrap() {
            assert!(
                !untyped(item),
                "{path} has an untyped object schema: {item}"
            );
        }
    }

    #[test]
    fn every_api_route_is_documented() {
        let document = document();
        let paths = document["paths"].as_object().unwrap();
        for route in crate::api::route_paths() {
            if !route.starts_with("/api/") || route == "/api/openapi.json" {
                continue;
            }
            if route.ends_with("/commands/{name}") {
                assert!(
                    COMMAND_NAMES
                        .iter()
                        .all(|name| paths.contains_key(&route.replace("{name}", name)))
                );
                continue;
            }
            assert!(
                paths.contains_key(route),
                "{route} is not in the OpenAPI document"
            );
        }
    }

    #[test]
    fn text_fields_state_their_limits() {
        let document = document();
        let note = &document["paths"]["/api/incidents/{id}/commands/post_note"]["post"]["requestBody"]
            ["content"]["application/json"]["schema"];
        assert_eq!(
            note["properties"]["text"]["maxLength"],
            json!(commandpost_shared::limits::NOTE_CHARS),
            "{note}"
        );
        let text = document.to_string();
        assert!(text.contains("\"maxLength\":200"), "the title limit");
        for status in ["400", "409", "413", "415", "422", "429"] {
            assert!(
                document["paths"]["/api/incidents"]["post"]["responses"][status].is_object(),
                "{status}"
            );
        }
    }

    #[test]
    fn every_schema_reference_resolves() {
        let document = document();
        let text = document.to_string();
        let schemas = document["components"]["schemas"].as_object().unwrap();
        for reference in text.split("\"#/components/schemas/").skip(1) {
            let name = &reference[..reference.find('"').unwrap()];
            assert!(schemas.contains_key(name), "dangling reference to {name}");
        }
    }

    /// `web/openapi.json` is what the web app's types are generated from
    /// (`npm --prefix web run types`); it must be this document.
    #[test]
    fn the_web_apps_copy_of_the_openapi_document_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/openapi.json");
        let expected = serde_json::to_string_pretty(&document()).unwrap() + "\n";
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if std::env::var_os("UPDATE_OPENAPI").is_some_and(|value| value == "1") {
            // Only when it changed: the server's build script reruns the
            // web build when the file is touched.
            if committed != expected {
                std::fs::write(&path, &expected)
                    .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
            }
            return;
        }
        assert!(
            committed == expected,
            "{} is not the current OpenAPI document (a wire type changed?). Update it and the \
             web app's generated types with:\n    \
             UPDATE_OPENAPI=1 cargo test -p commandpost --lib openapi\n    \
             npm --prefix web run types\nthen fix what `npm --prefix web run typecheck` reports.",
            path.display()
        );
    }
}
