//! The OpenAPI 3.1 document of the bridge, generated from the Rust types of the requests and
//! responses (their JSON Schemas by schemars, draft 2020-12, which OpenAPI 3.1 uses) and the route
//! table below. `schemas/openapi.json` is this document; a test fails when the two drift
//! (`UPDATE_SCHEMAS=1 cargo test --test http_openapi` rewrites the file).

use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use super::errors::Problem;
use super::types::{
    AssignBody, CommandResponse, EmptyBody, EndBody, EventsQuery, Health, History, LogEvent,
    Readiness, RegisterVmBody, SessionQuery, StartSessionBody, VmList,
};
use crate::projections::{Capacity, SessionPage, SessionView, VmView};

/// Who may call a route.
#[derive(Clone, Copy)]
enum Access {
    Public,
    Anyone,
    Staff,
    Operator,
}

struct Builder {
    gen: SchemaGenerator,
    paths: Map<String, Value>,
}

fn problem_ref() -> Value {
    json!({ "$ref": "#/components/responses/Problem" })
}

impl Builder {
    fn schema<T: JsonSchema>(&mut self) -> Value {
        self.gen.subschema_for::<T>().to_value()
    }

    /// The fields of a query struct as query parameters.
    fn query<T: JsonSchema>(&mut self) -> Vec<Value> {
        let reference = self.schema::<T>();
        let name = reference["$ref"]
            .as_str()
            .and_then(|r| r.rsplit('/').next())
            .unwrap_or_default()
            .to_owned();
        let props = self.gen.definitions()[&name]["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        props
            .into_iter()
            .map(|(field, mut schema)| {
                let description = schema
                    .as_object_mut()
                    .and_then(|o| o.remove("description"))
                    .unwrap_or(Value::Null);
                json!({
                    "name": field, "in": "query", "required": false,
                    "description": description, "schema": non_null(schema),
                })
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn op(
        &mut self,
        method: &str,
        path: &str,
        id: &str,
        summary: &str,
        access: Access,
        mut params: Vec<Value>,
        body: Option<(Value, bool)>,
        ok: (u16, &str, Value),
        errors: &[u16],
    ) {
        if path.contains("{id}") {
            params.insert(0, json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string", "pattern": "^[A-Za-z0-9_-]+$", "maxLength": 64 } }));
        }
        if method == "post" {
            params.push(json!({
                "name": "Idempotency-Key", "in": "header", "required": false,
                "description": "Becomes the command id: a retry returns the first response; the same key with another body is 422; while the first is in flight, 409. Printable ASCII, at most 255 characters (248 for a start with `assign`).",
                "schema": { "type": "string", "pattern": "^[!-~]+$", "maxLength": 255 },
            }));
        }
        let mut responses = Map::new();
        let (status, description, content) = ok;
        responses.insert(
            status.to_string(),
            json!({ "description": description, "content": content }),
        );
        if method == "post" {
            responses.insert("202".into(), json!({
                "description": "Applied, but this bridge's projections did not catch up in time: the events and `seq` without the state, and `pending` says so.",
                "content": { "application/json": { "schema": self.schema::<CommandResponse>() } },
            }));
        }
        let mut codes: Vec<u16> = errors.to_vec();
        match access {
            Access::Public => {}
            Access::Anyone => codes.extend([401, 429]),
            Access::Staff | Access::Operator => codes.extend([401, 403, 429]),
        }
        codes.sort_unstable();
        codes.dedup();
        for code in codes {
            responses.insert(code.to_string(), problem_ref());
        }
        let mut op = json!({
            "operationId": id,
            "summary": summary,
            "parameters": params,
            "responses": responses,
        });
        op["security"] = match access {
            Access::Public => json!([]),
            _ => json!([{ "bearer": [] }]),
        };
        if let Access::Staff | Access::Operator = access {
            let who = if matches!(access, Access::Operator) {
                "operator"
            } else {
                "operator or service"
            };
            op["description"] = json!(format!("Needs an {who} token."));
        }
        if let Some((schema, required)) = body {
            op["requestBody"] = json!({ "required": required, "content": { "application/json": { "schema": schema } } });
        }
        let entry = self
            .paths
            .entry(path.to_owned())
            .or_insert_with(|| json!({}));
        entry[method] = op;
    }
}

/// Removes `null` from an optional field's schema (a missing query parameter is how it is absent).
fn non_null(schema: Value) -> Value {
    match schema {
        Value::Object(mut o) => {
            if let Some(Value::Array(types)) = o.get("type").cloned() {
                let rest: Vec<Value> = types.into_iter().filter(|t| t != "null").collect();
                o.insert(
                    "type".into(),
                    if rest.len() == 1 {
                        rest[0].clone()
                    } else {
                        Value::Array(rest)
                    },
                );
            }
            if let Some(Value::Array(any)) = o.get("anyOf").cloned() {
                let rest: Vec<Value> = any
                    .into_iter()
                    .filter(|s| s.get("type") != Some(&json!("null")))
                    .collect();
                if rest.len() == 1 {
                    o.remove("anyOf");
                    if let Value::Object(inner) = &rest[0] {
                        o.extend(inner.clone());
                    }
                } else {
                    o.insert("anyOf".into(), Value::Array(rest));
                }
            }
            Value::Object(o)
        }
        other => other,
    }
}

fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

/// The OpenAPI 3.1 document.
pub fn document() -> Value {
    let settings = SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
        s.meta_schema = None;
    });
    let mut b = Builder {
        gen: settings.into_generator(),
        paths: Map::new(),
    };
    let command = |b: &mut Builder| json_content(b.schema::<CommandResponse>());
    let (start, assign, end, empty, register) = (
        b.schema::<StartSessionBody>(),
        b.schema::<AssignBody>(),
        b.schema::<EndBody>(),
        b.schema::<EmptyBody>(),
        b.schema::<RegisterVmBody>(),
    );

    let c = command(&mut b);
    b.op(
        "post",
        "/v1/sessions",
        "startSession",
        "Start a session (and assign a VM at once with `assign`)",
        Access::Anyone,
        vec![],
        Some((start, true)),
        (201, "Started: the events and the session", c),
        &[400, 403, 409, 413, 415, 422, 503],
    );
    let (q, page) = (b.query::<SessionQuery>(), b.schema::<SessionPage>());
    b.op(
        "get",
        "/v1/sessions",
        "listSessions",
        "List sessions (a player: their own), paginated with `after` = the previous page's `next`",
        Access::Anyone,
        q,
        None,
        (200, "A page of sessions", json_content(page)),
        &[400, 403, 422],
    );
    let view = b.schema::<SessionView>();
    b.op(
        "get",
        "/v1/sessions/{id}",
        "getSession",
        "Read a session",
        Access::Anyone,
        vec![],
        None,
        (200, "The session", json_content(view)),
        &[400, 404],
    );
    for (name, id, summary) in [
        ("pause", "pauseSession", "Pause an active session"),
        ("resume", "resumeSession", "Resume a paused session"),
    ] {
        let c = command(&mut b);
        b.op(
            "post",
            &format!("/v1/sessions/{{id}}/{name}"),
            id,
            summary,
            Access::Anyone,
            vec![],
            Some((empty.clone(), false)),
            (200, "Applied: the event and the session", c),
            &[400, 404, 409, 413, 415, 422, 503],
        );
    }
    let c = command(&mut b);
    b.op(
        "post",
        "/v1/sessions/{id}/end",
        "endSession",
        "End a session (a player's reason is always `user`)",
        Access::Anyone,
        vec![],
        Some((end, false)),
        (200, "Applied: the event and the session", c),
        &[400, 403, 404, 409, 413, 415, 422, 503],
    );
    let c = command(&mut b);
    b.op(
        "post",
        "/v1/sessions/{id}/assign",
        "assignSession",
        "Assign a starting session to a VM (named, or chosen by a policy)",
        Access::Anyone,
        vec![],
        Some((assign, false)),
        (200, "Applied: the event and the session", c),
        &[400, 404, 409, 413, 415, 422, 503],
    );
    let history = b.schema::<History>();
    b.op(
        "get",
        "/v1/sessions/{id}/history",
        "sessionHistory",
        "A session's timeline from the log, with the time in each status",
        Access::Anyone,
        vec![],
        None,
        (200, "The timeline", json_content(history)),
        &[400, 404, 503],
    );

    let c = command(&mut b);
    b.op(
        "post",
        "/v1/vms",
        "registerVm",
        "Register a VM",
        Access::Operator,
        vec![],
        Some((register, true)),
        (201, "Registered: the event and the VM", c),
        &[400, 409, 413, 415, 422, 503],
    );
    let vms = b.schema::<VmList>();
    b.op(
        "get",
        "/v1/vms",
        "listVms",
        "List VMs",
        Access::Staff,
        vec![],
        None,
        (200, "Every VM", json_content(vms)),
        &[],
    );
    let vm = b.schema::<VmView>();
    b.op(
        "get",
        "/v1/vms/{id}",
        "getVm",
        "Read a VM",
        Access::Staff,
        vec![],
        None,
        (200, "The VM", json_content(vm)),
        &[400, 404],
    );
    for (name, id, summary) in [
        ("drain", "drainVm", "Stop placing sessions on a VM"),
        ("retire", "retireVm", "Remove an empty VM for good"),
    ] {
        let c = command(&mut b);
        b.op(
            "post",
            &format!("/v1/vms/{{id}}/{name}"),
            id,
            summary,
            Access::Operator,
            vec![],
            Some((empty.clone(), false)),
            (200, "Applied: the event and the VM", c),
            &[400, 404, 409, 413, 415, 422, 503],
        );
    }
    let cap = b.schema::<Capacity>();
    b.op(
        "get",
        "/v1/capacity",
        "capacity",
        "Capacity of the cell and sessions per status",
        Access::Staff,
        vec![],
        None,
        (200, "Capacity", json_content(cap)),
        &[],
    );

    let mut params = b.query::<EventsQuery>();
    params.push(json!({ "name": "Last-Event-ID", "in": "header", "required": false, "description": "Resume after this stream sequence (wins over `from`).", "schema": { "type": "integer", "minimum": 0 } }));
    let event = b.schema::<LogEvent>();
    b.op("get", "/v1/events", "events", "The log as Server-Sent Events: `id` = stream sequence, `data` = the event (a player: their own sessions' events only)", Access::Anyone, params, None, (200, "An endless event stream; each `data:` is a LogEvent", json!({ "text/event-stream": { "schema": event } })), &[400, 404, 503]);

    let health = b.schema::<Health>();
    b.op(
        "get",
        "/healthz",
        "healthz",
        "Liveness",
        Access::Public,
        vec![],
        None,
        (200, "Alive", json_content(health)),
        &[],
    );
    let ready = b.schema::<Readiness>();
    b.op("get", "/readyz", "readyz", "Readiness: NATS connected and the stream readable (503 otherwise), with the projections' lag", Access::Public, vec![], None, (200, "Ready", json_content(ready.clone())), &[]);
    b.paths["/readyz"]["get"]["responses"]["503"] =
        json!({ "description": "Not ready", "content": json_content(ready) });
    b.op(
        "get",
        "/metrics",
        "metrics",
        "Prometheus metrics",
        Access::Staff,
        vec![],
        None,
        (
            200,
            "Text format 0.0.4",
            json!({ "text/plain": { "schema": { "type": "string" } } }),
        ),
        &[],
    );
    b.op(
        "get",
        "/openapi.json",
        "openapi",
        "This document",
        Access::Public,
        vec![],
        None,
        (
            200,
            "OpenAPI 3.1",
            json!({ "application/json": { "schema": { "type": "object" } } }),
        ),
        &[],
    );

    let problem = b.schema::<Problem>();
    let schemas = b.gen.take_definitions(true);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Session orchestrator HTTP bridge",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Thin HTTP bridge of the event-sourced session orchestrator: commands go to the cell's writer over NATS; reads come from the projections. Errors are RFC 9457 problems with a stable `code`.",
        },
        "paths": b.paths,
        "components": {
            "schemas": schemas,
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
