//! The VM routes (register, list, read, drain, retire) and the cell's capacity.

use axum::extract::State;
use axum::response::Response;
use axum::Json;

use super::auth::Auth;
use super::commands::{self, Subject};
use super::errors::ApiError;
use super::extract::{in_range, ApiJson, IdempotencyKey, OptionalJson, VmPath};
use super::state::AppState;
use super::types::{EmptyBody, RegisterVmBody, VmList};
use crate::domain::command::{RegisterVm, VmRef, HEARTBEAT_MS_RANGE};
use crate::domain::{Command, DomainConfig};
use crate::projections::{Capacity, VmView};

fn store_error(e: crate::projections::ProjectionError) -> ApiError {
    ApiError::projections(e)
}

/// What a registration's body asks, checked before it is sent: a capacity or heartbeat interval
/// out of its range is 422 `invalid_argument`.
pub fn register_request(body: RegisterVmBody) -> Result<RegisterVm, ApiError> {
    let max = i64::from(DomainConfig::default().max_vm_capacity);
    let capacity = in_range("capacity", body.capacity, 1..=max)?;
    let (lo, hi) = HEARTBEAT_MS_RANGE.into_inner();
    let heartbeat_ms = body
        .heartbeat_ms
        .map(|h| in_range("heartbeat_ms", h, i64::from(lo)..=i64::from(hi)))
        .transpose()?;
    Ok(RegisterVm {
        vm_id: body.vm_id,
        capacity,
        labels: body.labels,
        heartbeat_ms,
        endpoint: body.endpoint,
    })
}

/// `POST /v1/vms` (operator).
pub async fn register(
    State(state): State<AppState>,
    auth: Auth,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(body): ApiJson<RegisterVmBody>,
) -> Result<Response, ApiError> {
    auth.require_operator()?;
    let vm_id = body.vm_id.clone();
    let command = Command::RegisterVm(register_request(body)?);
    let (command_id, _guard) = commands::command_id(&state, &auth.0, key)?;
    let applied = commands::send(&state, &auth.0, &command_id, &command).await?;
    commands::respond(&state, &auth.0, vec![applied], Subject::Vm(vm_id), true).await
}

/// `GET /v1/vms` (operator, service).
pub async fn list(State(state): State<AppState>, auth: Auth) -> Result<Json<VmList>, ApiError> {
    auth.require_staff()?;
    let as_of_seq = state.store().checkpoint();
    let vms = state.store().vms().map_err(store_error)?;
    Ok(Json(VmList { vms, as_of_seq }))
}

/// `GET /v1/vms/{id}` (operator, service).
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    VmPath(id): VmPath,
) -> Result<Json<VmView>, ApiError> {
    auth.require_staff()?;
    state
        .store()
        .vm(&id)
        .map_err(store_error)?
        .map(Json)
        .ok_or_else(|| ApiError::VmNotFound(id.to_string()))
}

async fn vm_command(
    state: AppState,
    auth: Auth,
    key: Option<orchestrator_events::CommandId>,
    command: Command,
    vm_id: orchestrator_events::VmId,
) -> Result<Response, ApiError> {
    auth.require_operator()?;
    let (command_id, _guard) = commands::command_id(&state, &auth.0, key)?;
    let applied = commands::send(&state, &auth.0, &command_id, &command).await?;
    commands::respond(&state, &auth.0, vec![applied], Subject::Vm(vm_id), false).await
}

/// `POST /v1/vms/{id}/drain` (operator).
pub async fn drain(
    State(state): State<AppState>,
    auth: Auth,
    IdempotencyKey(key): IdempotencyKey,
    VmPath(id): VmPath,
    OptionalJson(EmptyBody {}): OptionalJson<EmptyBody>,
) -> Result<Response, ApiError> {
    let command = Command::DrainVm(VmRef { vm_id: id.clone() });
    vm_command(state, auth, key, command, id).await
}

/// `POST /v1/vms/{id}/retire` (operator).
pub async fn retire(
    State(state): State<AppState>,
    auth: Auth,
    IdempotencyKey(key): IdempotencyKey,
    VmPath(id): VmPath,
    OptionalJson(EmptyBody {}): OptionalJson<EmptyBody>,
) -> Result<Response, ApiError> {
    let command = Command::RetireVm(VmRef { vm_id: id.clone() });
    vm_command(state, auth, key, command, id).await
}

/// `GET /v1/capacity` (operator, service).
pub async fn capacity(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<Capacity>, ApiError> {
    auth.require_staff()?;
    state.store().capacity().map(Json).map_err(store_error)
}
