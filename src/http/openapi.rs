//! The OpenAPI 3.1 document of the bridge, generated from the Rust types of the requests and
//! responses (their JSON Schemas by schemars, draft 2020-12, which OpenAPI 3.1 uses) and the route
//! table below. `schemas/openapi.json` is this document; a test fails when the two drift
//! (`UPDATE_SCHEMAS=1 cargo test --test http_openapi` rewrites the file).

use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{json, Map, Value};

use super::as_of::StateQuery;
use super::errors::Problem;
use super::timeline::TimelineQuery;
use super::types::{
    AssignBody, CommandResponse, EmptyBody, EndBody, EventsQuery, Health, History, LogEvent,
    Readiness, RegisterVmBody, SessionQuery, StartSessionBody, VmList,
};
use super::usage::UsageQuery;
use crate::analytics::as_of::Snapshot;
use crate::analytics::timeline::Timeline;
use crate::analytics::UsageReport;
use crate::projections::{Capacity, SessionPage, SessionView, VmView};

/// Who may call a route.
#[derive(Clone, Copy, PartialEq)]
enum Access {
    /// No token needed.
    Public,
    /// Any valid token (a player within their own sessions).
    Anyone,
    /// Operators and services.
    Staff,
    /// Operators.
    Operator,
}

/// A type's schema (a `$ref` to `components/schemas` for named types).
type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema<T: JsonSchema>() -> SchemaFn {
    SchemaGenerator::subschema_for::<T>
}

/// What a route answers on success.
#[derive(Clone, Copy)]
enum Success {
    Json(SchemaFn),
    Command,
    Text,
    Events,
}

/// One route of the table.
struct Route {
    method: &'static str,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    access: Access,
    query: Option<SchemaFn>,
    /// The body's schema and whether it is required.
    body: Option<(SchemaFn, bool)>,
    ok: (u16, &'static str, Success),
    errors: &'static [u16],
}

const COMMAND_ERRORS: &[u16] = &[400, 404, 409, 413, 415, 422, 503];

#[rustfmt::skip]
fn routes() -> Vec<Route> {
    use Access::*;
    use Success::*;
    let r = |method, path, id, summary, access, body, ok, errors| Route { method, path, id, summary, access, query: None, body, ok, errors };
    let empty = Some((schema::<EmptyBody>(), false));
    vec![
        r("post", "/v1/sessions", "startSession", "Start a session (and assign a VM at once with `assign`)", Anyone, Some((schema::<StartSessionBody>(), true)), (201, "Started: the events and the session", Command), &[400, 403, 409, 413, 415, 422, 503]),
        Route { query: Some(schema::<SessionQuery>()), ..r("get", "/v1/sessions", "listSessions", "List sessions (a player: their own), paginated with `after` = the previous page's `next`", Anyone, None, (200, "A page of sessions", Json(schema::<SessionPage>())), &[400, 403, 422, 503]) },
        r("get", "/v1/sessions/{id}", "getSession", "Read a session", Anyone, None, (200, "The session", Json(schema::<SessionView>())), &[400, 404, 503]),
        r("post", "/v1/sessions/{id}/pause", "pauseSession", "Pause an active session", Anyone, empty, (200, "Applied: the event and the session", Command), COMMAND_ERRORS),
        r("post", "/v1/sessions/{id}/resume", "resumeSession", "Resume a paused session", Anyone, empty, (200, "Applied: the event and the session", Command), COMMAND_ERRORS),
        r("post", "/v1/sessions/{id}/end", "endSession", "End a session (a player's reason is always `user`)", Anyone, Some((schema::<EndBody>(), false)), (200, "Applied: the event and the session", Command), &[400, 403, 404, 409, 413, 415, 422, 503]),
        r("post", "/v1/sessions/{id}/assign", "assignSession", "Assign a starting session to a VM (named, or chosen by a policy)", Anyone, Some((schema::<AssignBody>(), false)), (200, "Applied: the event and the session", Command), COMMAND_ERRORS),
        r("get", "/v1/sessions/{id}/history", "sessionHistory", "A session's timeline from the log, with the time in each status", Anyone, None, (200, "The timeline", Json(schema::<History>())), &[400, 404, 503]),
        r("post", "/v1/vms", "registerVm", "Register a VM", Operator, Some((schema::<RegisterVmBody>(), true)), (201, "Registered: the event and the VM", Command), &[400, 409, 413, 415, 422, 503]),
        r("get", "/v1/vms", "listVms", "List VMs", Staff, None, (200, "Every VM", Json(schema::<VmList>())), &[503]),
        r("get", "/v1/vms/{id}", "getVm", "Read a VM", Staff, None, (200, "The VM", Json(schema::<VmView>())), &[400, 404, 503]),
        r("post", "/v1/vms/{id}/drain", "drainVm", "Stop placing sessions on a VM", Operator, empty, (200, "Applied: the event and the VM", Command), COMMAND_ERRORS),
        r("post", "/v1/vms/{id}/retire", "retireVm", "Remove an empty VM for good", Operator, empty, (200, "Applied: the event and the VM", Command), COMMAND_ERRORS),
        r("get", "/v1/capacity", "capacity", "Capacity of the cell and sessions per status", Staff, None, (200, "Capacity", Json(schema::<Capacity>())), &[503]),
        Route { query: Some(schema::<EventsQuery>()), ..r("get", "/v1/events", "events", "The log as Server-Sent Events: `id` = stream sequence, `data` = a LogEvent (a player: their own sessions' events only); open feeds are capped per caller and in all (429 `too_many_feeds`)", Anyone, None, (200, "An endless event stream; each `data:` is a LogEvent", Events), &[400, 404, 503]) },
        Route { query: Some(schema::<UsageQuery>()), ..r("get", "/v1/usage", "usage", "Time each user's, game's or VM's sessions spent in each status within `[from, to)`, read from the log (see docs/analytics.md)", Operator, None, (200, "The usage", Json(schema::<UsageReport>())), &[400, 422, 503]) },
        Route { query: Some(schema::<StateQuery>()), ..r("get", "/v1/state", "stateAt", "The cell as of a stream sequence or a time (VMs with their loads and status, sessions per status, the queue), replayed from the log as `orchestrator state --at` does", Operator, None, (200, "The cell as of the moment", Json(schema::<Snapshot>())), &[400, 422, 503]) },
        Route { query: Some(schema::<TimelineQuery>()), ..r("get", "/v1/stats/timeline", "statsTimeline", "Sessions per status and pool utilisation sampled every `step` over `[from, to]`, folded from the log (at most 2,000 points)", Operator, None, (200, "The timeline", Json(schema::<Timeline>())), &[400, 422, 503]) },
        r("get", "/healthz", "healthz", "Liveness", Public, None, (200, "Alive", Json(schema::<Health>())), &[]),
        r("get", "/readyz", "readyz", "Readiness: NATS connected and the stream readable (else 503, same body); the projections' lag for operators and services", Public, None, (200, "Ready", Json(schema::<Readiness>())), &[]),
        r("get", "/metrics", "metrics", "Prometheus metrics", Staff, None, (200, "Prometheus text format 0.0.4, or OpenMetrics 1.0 when Accept asks for it", Text), &[]),
        r("get", "/openapi.json", "openapi", "This document", Public, None, (200, "OpenAPI 3.1", Json(|_| schemars::json_schema!({ "type": "object" }))), &[]),
    ]
}

/// The fields of a query struct as query parameters.
fn query_params(gen: &mut SchemaGenerator, query: SchemaFn) -> Vec<Value> {
    let reference = query(gen).to_value();
    let name = reference["$ref"]
        .as_str()
        .and_then(|r| r.rsplit('/').next())
        .unwrap_or_default()
        .to_owned();
    let definition = &gen.definitions()[&name];
    let props = definition["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let required: Vec<Value> = definition["required"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    props
        .into_iter()
        .map(|(field, mut schema)| {
            let description = schema
                .as_object_mut()
                .and_then(|o| o.remove("description"))
                .unwrap_or(Value::Null);
            let required = required.contains(&Value::String(field.clone()));
            json!({
                "name": field, "in": "query", "required": required,
                "description": description, "schema": non_null(schema),
            })
        })
        .collect()
}

/// Removes `null` from an optional field's schema (a missing query parameter is how it is absent).
fn non_null(schema: Value) -> Value {
    let Value::Object(mut o) = schema else {
        return schema;
    };
    if let Some(Value::Array(types)) = o.get("type").cloned() {
        let rest: Vec<Value> = types.into_iter().filter(|t| t != "null").collect();
        let one = (rest.len() == 1).then(|| rest[0].clone());
        o.insert("type".into(), one.unwrap_or(Value::Array(rest)));
    }
    if let Some(Value::Array(any)) = o.get("anyOf").cloned() {
        let rest: Vec<Value> = any
            .into_iter()
            .filter(|s| s.get("type") != Some(&json!("null")))
            .collect();
        match rest.as_slice() {
            [Value::Object(inner)] => {
                o.remove("anyOf");
                o.extend(inner.clone());
            }
            _ => {
                o.insert("anyOf".into(), Value::Array(rest));
            }
        }
    }
    Value::Object(o)
}

fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

fn operation(gen: &mut SchemaGenerator, route: &Route) -> Value {
    let mut params = route
        .query
        .map(|q| query_params(gen, q))
        .unwrap_or_default();
    if route.path.contains("{id}") {
        params.insert(0, json!({
            "name": "id", "in": "path", "required": true,
            "schema": { "type": "string", "pattern": "^[A-Za-z0-9_-]+$", "minLength": 1, "maxLength": 64 },
        }));
    }
    if route.path == "/v1/events" {
        params.push(json!({
            "name": "Last-Event-ID", "in": "header", "required": false,
            "description": "Resume after this stream sequence (wins over `from`).",
            "schema": { "type": "integer", "minimum": 0 },
        }));
    }
    if route.method == "post" {
        params.push(json!({
            "name": "Idempotency-Key", "in": "header", "required": false,
            "description": "Becomes the command id: a retry returns the first response; the same key with another body is 422; while the first request is in flight in this bridge, 409. Printable ASCII, at most 255 characters (248 for a start with `assign`).",
            "schema": { "type": "string", "pattern": "^[!-~]+$", "maxLength": 255 },
        }));
    }
    let command = json_content(gen_value(gen, schema::<CommandResponse>()));
    let (status, description, success) = route.ok;
    let content = match success {
        Success::Json(f) => json_content(gen_value(gen, f)),
        Success::Command => command.clone(),
        Success::Text => json!({ "text/plain": { "schema": { "type": "string" } } }),
        Success::Events => {
            json!({ "text/event-stream": { "schema": gen_value(gen, schema::<LogEvent>()) } })
        }
    };
    let mut responses = Map::new();
    responses.insert(
        status.to_string(),
        json!({ "description": description, "content": content }),
    );
    if matches!(success, Success::Command) {
        responses.insert("202".into(), json!({
            "description": "Applied, but this bridge's projections did not catch up in time: the events and `seq` without the state; `pending` says so.",
            "content": command,
        }));
    }
    if route.path == "/readyz" {
        let ready = json_content(gen_value(gen, schema::<Readiness>()));
        responses.insert(
            "503".into(),
            json!({ "description": "Not ready", "content": ready }),
        );
    }
    let mut codes = route.errors.to_vec();
    codes.extend(match route.access {
        Access::Public => &[][..],
        Access::Anyone => &[401, 429],
        Access::Staff | Access::Operator => &[401, 403, 429],
    });
    codes.sort_unstable();
    codes.dedup();
    for code in codes {
        responses.insert(
            code.to_string(),
            json!({ "$ref": "#/components/responses/Problem" }),
        );
    }
    let mut op = json!({
        "operationId": route.id,
        "summary": route.summary,
        "parameters": params,
        "responses": responses,
        "security": if route.access == Access::Public { json!([]) } else { json!([{ "bearer": [] }]) },
    });
    if route.path == "/readyz" {
        // Public, so a probe needs no token; a token may be sent for the details.
        op["security"] = json!([{}, { "bearer": [] }]);
        op["description"] = json!("No token needed: the answer is then `{\"ready\": bool}` only, enough for a Kubernetes readiness probe. With an operator's or a service's token it adds `nats`, `stream_last_seq`, `projection_checkpoint` and `projection_lag`. Any other token (a player's, an unknown one) gets the short answer, never a 401, so the status depends on readiness alone.");
    }
    match route.access {
        Access::Staff => op["description"] = json!("Needs an operator or service token."),
        Access::Operator => op["description"] = json!("Needs an operator token."),
        Access::Public | Access::Anyone => {}
    }
    if let Some((body, required)) = route.body {
        op["requestBody"] =
            json!({ "required": required, "content": json_content(gen_value(gen, body)) });
    }
    op
}

fn gen_value(gen: &mut SchemaGenerator, f: SchemaFn) -> Value {
    f(gen).to_value()
}

/// The OpenAPI 3.1 document.
pub fn document() -> Value {
    let settings = SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
        s.meta_schema = None;
    });
    let mut gen = settings.into_generator();
    let mut paths = Map::new();
    for route in routes() {
        let op = operation(&mut gen, &route);
        let entry = paths.entry(route.path).or_insert_with(|| json!({}));
        entry[route.method] = op;
    }
    let problem = gen_value(&mut gen, schema::<Problem>());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Session orchestrator HTTP bridge",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Thin HTTP bridge of the event-sourced session orchestrator: commands go to the cell's writer over NATS; reads come from the projections. Errors are RFC 9457 problems (application/problem+json) with a stable `code`; see docs/http.md for the table of codes and statuses.",
        },
        "paths": paths,
        "components": {
            "schemas": gen.take_definitions(true),
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "responses": {
                "Problem": {
                    "description": "An RFC 9457 problem; `code` is stable (see the error table)",
                    "content": { "application/problem+json": { "schema": problem } },
                },
            },
        },
    })
}
