//! Deploys: package uploads and atomic activation of application versions.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::StatusCode;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use stratus_archive::sha256_hex;
use stratus_manifest::Runtime;
use stratus_store::{NewVersion, PackageRecord, VersionRecord};

use crate::AppState;
use crate::api::ApiError;

/// Where the unpacked code of a package lives.
pub(crate) fn code_dir(data_dir: &Path, sha256: &str) -> PathBuf {
    data_dir.join("code").join(sha256)
}

/// The prefix of what an upload writes before it is complete: an unpack
/// directory under `code/`, an archive under `packages/`. Renamed into
/// place when done, so a crash leaves only these.
const PARTIAL: &str = ".tmp-";

fn partial_name() -> String {
    format!("{PARTIAL}{}", uuid::Uuid::new_v4().simple())
}

/// Removes what uploads cut short by a crash left under `code/` and
/// `packages/`; returns how many entries went.
pub(crate) fn remove_partial_uploads(data_dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for sub in ["code", "packages"] {
        for entry in std::fs::read_dir(data_dir.join(sub))? {
            let entry = entry?;
            if !entry.file_name().to_string_lossy().starts_with(PARTIAL) {
                continue;
            }
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
            removed += 1;
        }
    }
    Ok(removed)
}

/// A failure to write the package: a full disk (or quota) is said as
/// such, 507; anything else is the server's own failure.
fn stored(context: &str, err: std::io::Error) -> ApiError {
    use std::io::ErrorKind::{QuotaExceeded, StorageFull};
    if matches!(err.kind(), StorageFull | QuotaExceeded) {
        return ApiError::new(
            axum::http::StatusCode::INSUFFICIENT_STORAGE,
            "storage_full",
            format!(
                "{context}: the server's disk is full ({err}); free space in its data directory and deploy again"
            ),
        );
    }
    ApiError::internal(context, err)
}

pub(crate) fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Validates, unpacks and records an uploaded package; on a store that
/// nodes share, keeps its bytes there too, for the nodes that were not
/// given it. Idempotent.
pub(crate) async fn put_package(
    state: &AppState,
    sha256: &str,
    body: Bytes,
) -> Result<PackageRecord, ApiError> {
    if !is_sha256(sha256) {
        return Err(ApiError::bad_request(
            "invalid_package_id",
            "a package id is the lower-case hex SHA-256 of the archive",
        ));
    }
    let record = keep_package(
        state.config.data_dir.clone(),
        unpack_limits(state.config.limits.max_unpacked_bytes),
        sha256.to_owned(),
        body.clone(),
    )
    .await?;
    if let Some(shared) = &state.shared_packages {
        shared.put_package_bytes(sha256, &body).await?;
    }
    state.store.put_package(record.clone()).await?;
    Ok(record)
}

pub(crate) fn unpack_limits(max_unpacked_bytes: u64) -> stratus_archive::Limits {
    stratus_archive::Limits {
        max_unpacked_bytes,
        ..stratus_archive::Limits::default()
    }
}

/// Makes sure the code of package `sha256` is in the data directory: a
/// node that was not given the package takes it from the shared store.
pub(crate) async fn ensure_code(
    data_dir: &Path,
    limits: stratus_archive::Limits,
    shared: &dyn stratus_store::SharedPackages,
    sha256: &str,
) -> Result<(), ApiError> {
    if code_dir(data_dir, sha256).is_dir() {
        return Ok(());
    }
    let Some(bytes) = shared.package_bytes(sha256).await? else {
        return Err(ApiError::internal(
            "fetch a package",
            format!(
                "package {sha256} is in neither this node's data directory nor the shared store"
            ),
        ));
    };
    keep_package(
        data_dir.to_owned(),
        limits,
        sha256.to_owned(),
        Bytes::from(bytes),
    )
    .await?;
    tracing::info!(package = sha256, "took a package from the shared store");
    Ok(())
}

/// Makes sure every package of `version` is in the data directory (see
/// [`ensure_code`]).
pub(crate) async fn ensure_version_code(
    data_dir: &Path,
    limits: stratus_archive::Limits,
    shared: &dyn stratus_store::SharedPackages,
    version: &stratus_store::VersionRecord,
) -> Result<(), ApiError> {
    for sha256 in version.packages.values() {
        ensure_code(data_dir, limits, shared, sha256).await?;
    }
    Ok(())
}

/// Checks `body` against its id, unpacks it under `code/` and keeps the
/// archive under `packages/`, each whole or not at all.
async fn keep_package(
    data_dir: PathBuf,
    limits: stratus_archive::Limits,
    id: String,
    body: Bytes,
) -> Result<PackageRecord, ApiError> {
    tokio::task::spawn_blocking(move || -> Result<PackageRecord, ApiError> {
        let actual = sha256_hex(&body);
        if actual != id {
            return Err(ApiError::bad_request(
                "checksum_mismatch",
                format!("the archive's SHA-256 is {actual}, not {id}; upload it again"),
            ));
        }
        let dest = code_dir(&data_dir, &id);
        let unpacked = if dest.is_dir() {
            None
        } else {
            let tmp = data_dir.join("code").join(partial_name());
            std::fs::create_dir_all(&tmp)
                .map_err(|e| stored("cannot create a package directory", e))?;
            match stratus_archive::unpack(&body, &tmp, limits) {
                Ok(unpacked) => {
                    std::fs::rename(&tmp, &dest)
                        .map_err(|e| stored("cannot store the package", e))?;
                    Some(unpacked)
                }
                Err(err) => {
                    let _ = std::fs::remove_dir_all(&tmp);
                    return Err(match err {
                        stratus_archive::ArchiveError::Write(e) => {
                            stored("cannot unpack the package", e)
                        }
                        other => ApiError::bad_request("invalid_package", other.to_string()),
                    });
                }
            }
        };
        let archive = data_dir.join("packages").join(format!("{id}.tar.gz"));
        if !archive.exists() {
            // Whole or not at all: a crash mid-write must not leave a
            // truncated archive under the final name.
            let tmp = data_dir.join("packages").join(partial_name());
            std::fs::write(&tmp, &body)
                .and_then(|()| std::fs::rename(&tmp, &archive))
                .map_err(|e| {
                    let _ = std::fs::remove_file(&tmp);
                    stored("cannot store the package", e)
                })?;
        }
        Ok(PackageRecord {
            sha256: id,
            size: body.len() as u64,
            unpacked_bytes: unpacked.map(|u| u.bytes).unwrap_or_default(),
            files: unpacked.map(|u| u.files as u64).unwrap_or_default(),
            created_ms: crate::now_ms(),
        })
    })
    .await
    .map_err(|e| ApiError::internal("the package worker failed", e))?
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeployRequest {
    /// The manifest text as written.
    pub manifest: String,
    /// How to name the manifest in error messages.
    #[serde(default)]
    pub file: Option<String>,
    /// Package SHA-256 by code directory.
    pub packages: BTreeMap<String, String>,
    /// Where it came from: a git commit (one the server fetched, or one
    /// pushed to its remote, whose hook deploys it); else an upload, named
    /// by its packages.
    #[serde(default)]
    pub source: Option<String>,
    /// A function to run with a debugger's port open (`stratus dev
    /// --debug`).
    #[serde(default)]
    pub debug: Option<DebugRequest>,
}

/// `{"function", "port"}` of a deploy request.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DebugRequest {
    pub function: String,
    pub port: u16,
}

/// Makes `debug.function` of `spec` debuggable: its runtime's debugger
/// listening on 127.0.0.1:`port` (Node.js's inspector, or debugpy for
/// Python), one instance started at once and kept, one event at a time,
/// and the longest timeout, so that a pause at a breakpoint does not end
/// the invocation.
fn attach_debugger(
    spec: &mut stratus_manifest::AppSpec,
    debug: &DebugRequest,
) -> Result<(), ApiError> {
    use stratus_manifest::{Network, Runtime};
    let names = || {
        spec.functions
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(function) = spec.functions.get(&debug.function) else {
        return Err(ApiError::bad_request(
            "no_such_function",
            format!(
                "app {} has no function {:?} to debug; its functions are {}",
                spec.name,
                debug.function,
                names()
            ),
        ));
    };
    if debug.port < 1024 {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "debug port {} is privileged; pick one from 1024 up",
                debug.port
            ),
        ));
    }
    if function.network == Network::None {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "function {} has `network: none`, so no debugger can reach it; debug it with another network setting",
                debug.function
            ),
        ));
    }
    let function = spec
        .functions
        .get_mut(&debug.function)
        .expect("checked above");
    match function.runtime {
        Runtime::Nodejs | Runtime::Python3 => {
            function.env.insert(
                stratus_manifest::DEBUG_PORT_ENV.to_owned(),
                debug.port.to_string(),
            );
            if function.runtime == Runtime::Python3 {
                // debugpy's warning that the standard library's frozen
                // modules take no breakpoints, on every start.
                function
                    .env
                    .insert("PYDEVD_DISABLE_FILE_VALIDATION".to_owned(), "1".to_owned());
            }
        }
        Runtime::Provided => {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!(
                    "function {} runs its own bootstrap: start a debugger from it (python3 and nodejs functions get one from --debug)",
                    debug.function
                ),
            ));
        }
    }
    function.min_instances = 1;
    function.max_instances = 1;
    function.concurrency = 1;
    function.timeout = stratus_manifest::MAX_TIMEOUT;
    Ok(())
}

/// The longest source a deploy may name.
const MAX_SOURCE_BYTES: usize = 300;

/// An uploaded version's source: its code directories by package hash.
pub(crate) fn upload_source(packages: &BTreeMap<String, String>) -> String {
    let dirs: Vec<String> = packages
        .iter()
        .map(|(dir, sha)| format!("{dir}@{}", &sha[..sha.len().min(12)]))
        .collect();
    format!("upload {}", dirs.join(" "))
}

#[derive(Debug, Serialize)]
pub(crate) struct DeployResponse {
    pub app: String,
    pub version: u32,
    /// False when the deploy matched the active version and changed nothing.
    pub changed: bool,
    pub functions: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// `METHODS URL -> function` for each HTTP route.
    pub routes: Vec<String>,
}

/// Where each HTTP route of `spec` is reached.
fn routes(state: &AppState, spec: &stratus_manifest::AppSpec) -> Vec<String> {
    let mut out = Vec::new();
    let owners = spec
        .functions
        .values()
        .filter_map(|f| Some((&f.name, f.http.as_ref()?)))
        .chain(spec.services.values().map(|s| (&s.name, &s.http)));
    for (name, http) in owners {
        let methods = http.methods_label();
        for path in &http.paths {
            out.push(format!(
                "{methods} {}/{}{path} -> {}{}",
                state.public_url,
                spec.name,
                name,
                if http.auth == stratus_manifest::HttpAuth::Key {
                    " (key)"
                } else {
                    ""
                }
            ));
        }
    }
    out
}

/// Validates a deploy completely, then records and activates it in one step.
pub(crate) async fn deploy(
    state: &AppState,
    app: &str,
    req: DeployRequest,
    sink: &Arc<crate::build::Sink>,
) -> Result<DeployResponse, ApiError> {
    let file = req
        .file
        .as_deref()
        .unwrap_or(stratus_manifest::MANIFEST_FILE);
    // Off the async workers: a hostile manifest must not stall requests.
    let parsed = {
        let (file, manifest) = (file.to_owned(), req.manifest.clone());
        tokio::task::spawn_blocking(move || stratus_manifest::parse(&file, &manifest))
            .await
            .map_err(|e| ApiError::internal("the manifest parser failed", e))?
    };
    let mut spec = parsed.map_err(|errors| {
        ApiError::bad_request(
            "invalid_manifest",
            format!(
                "{file} has {} problem(s); nothing was deployed",
                errors.0.len()
            ),
        )
        .with_details(errors.0.iter().map(ToString::to_string).collect())
    })?;
    if let Some(debug) = &req.debug {
        attach_debugger(&mut spec, debug)?;
    }
    if let Some(source) = &req.source
        && (source.len() > MAX_SOURCE_BYTES || source.contains(['\n', '\r']))
    {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("a version's source is one line of at most {MAX_SOURCE_BYTES} bytes"),
        ));
    }
    if spec.name != app {
        return Err(ApiError::bad_request(
            "app_mismatch",
            format!(
                "the manifest declares app {:?} but the request is for {app:?}",
                spec.name
            ),
        ));
    }
    state.builder.check_runtime_versions(&spec)?;
    let max = state.config.limits.app_max_functions;
    let declared = spec.functions.len() + spec.services.len();
    if declared > max {
        return Err(ApiError::bad_request(
            "too_many_functions",
            format!(
                "app {app} declares {declared} functions and services, more than the {max} one app may have (--app-max-functions); split it into several apps"
            ),
        ));
    }
    let mut packages = BTreeMap::new();
    let mut problems = Vec::new();
    for dir in spec.code_dirs() {
        match req.packages.get(dir) {
            Some(sha) if is_sha256(sha) && code_dir(&state.config.data_dir, sha).is_dir() => {
                touch(&state.config.data_dir, sha);
                packages.insert(dir.to_owned(), sha.clone());
            }
            Some(sha) => problems.push(format!(
                "the package {sha} for code directory {dir:?} was not uploaded"
            )),
            None => problems.push(format!("no package was given for code directory {dir:?}")),
        }
    }
    for function in spec.functions.values() {
        if function.runtime != Runtime::Provided {
            continue;
        }
        let Some(sha) = packages.get(&function.code) else {
            continue;
        };
        let bootstrap = code_dir(&state.config.data_dir, sha).join("bootstrap");
        let executable = std::fs::metadata(&bootstrap)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        if !executable {
            problems.push(format!(
                "function {}: a provided function needs an executable file named `bootstrap` in {:?} (chmod +x it)",
                function.name, function.code
            ));
        }
    }
    for service in spec.services.values() {
        if service.command.is_some() {
            continue;
        }
        let Some(sha) = packages.get(&service.code) else {
            continue;
        };
        let bootstrap = code_dir(&state.config.data_dir, sha).join(stratus_manifest::SCF_BOOTSTRAP);
        let executable = std::fs::metadata(&bootstrap)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        if !executable {
            problems.push(format!(
                "service {}: give it a `command:`, or put an executable `{}` in {:?} (chmod +x it)",
                service.name,
                stratus_manifest::SCF_BOOTSTRAP,
                service.code
            ));
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_deploy",
            "the deploy is incomplete; nothing was deployed",
        )
        .with_details(problems));
    }

    let unchanged = |active: &VersionRecord| DeployResponse {
        app: app.to_owned(),
        version: active.version,
        changed: false,
        functions: spec.functions.keys().cloned().collect(),
        services: spec.services.keys().cloned().collect(),
        routes: routes(state, &spec),
    };
    let same = |active: &VersionRecord| active.spec == spec && active.packages == packages;
    if let Some(active) = state.store.active_version(app).await?
        && same(&active)
    {
        // Nothing to deploy, but a declared bucket removed since comes back.
        let _serial = state.deploy_lock.lock().await;
        let buckets = crate::s3::declared::plan(state, app, &spec).await?;
        crate::s3::declared::apply(state, buckets).await?;
        crate::db::apply_indexes(state, app, &spec).await?;
        return Ok(unchanged(&active));
    }
    require_secrets(state, app, &spec, "nothing was deployed").await?;
    // Outside the deploy lock: a build may take minutes, and other apps'
    // deploys need not wait for it.
    let built = state
        .builder
        .build_app(&*state.store, app, &spec, &packages, sink)
        .await?;

    let _serial = state.deploy_lock.lock().await;
    require_secrets(state, app, &spec, "nothing was deployed").await?;
    let buckets = crate::s3::declared::plan(state, app, &spec).await?;
    if let Some(active) = state.store.active_version(app).await?
        && same(&active)
    {
        crate::s3::declared::apply(state, buckets).await?;
        crate::db::apply_indexes(state, app, &spec).await?;
        return Ok(unchanged(&active));
    }
    // Indexes first: the version about to be served may query with them.
    crate::db::apply_indexes(state, app, &spec).await?;
    let functions = spec.functions.keys().cloned().collect();
    let services = spec.services.keys().cloned().collect();
    let routes = routes(state, &spec);
    let version = state
        .store
        .activate(NewVersion {
            spec,
            manifest: req.manifest,
            source: req.source.unwrap_or_else(|| upload_source(&packages)),
            packages,
            layers: built.layers,
            created_ms: crate::now_ms(),
        })
        .await?;
    crate::cluster::publish(state, &version);
    crate::s3::declared::apply(state, buckets).await?;
    if let Some(id) = &built.id {
        state
            .builder
            .mark_deployed(&*state.store, app, id, version.version)
            .await;
    }
    tracing::info!(app, version = version.version, "deployed");
    Ok(DeployResponse {
        app: app.to_owned(),
        version: version.version,
        changed: true,
        functions,
        services,
        routes,
    })
}

/// Removes from the data directory the packages and unpacked code that
/// no kept version uses: each app's newest `--keep-versions` versions and
/// its active one are kept. Nodes that share a store can take a removed
/// package from it again. Returns how many packages went.
pub(crate) async fn prune(state: &AppState) -> Result<usize, ApiError> {
    let _serial = state.deploy_lock.lock().await;
    let keep = state.config.limits.keep_versions as usize;
    let mut used = std::collections::HashSet::new();
    let mut kept = Vec::new();
    for app in state.store.list_apps().await? {
        for (i, version) in state
            .store
            .list_versions(&app.name)
            .await?
            .into_iter()
            .enumerate()
        {
            if i < keep || app.active_version == Some(version.version) {
                used.extend(version.packages.values().cloned());
                kept.push(version);
            }
        }
    }
    let data_dir = state.config.data_dir.clone();
    let grace = state.config.limits.package_grace;
    let builder = state.builder.clone();
    tokio::task::spawn_blocking(move || {
        let built = builder.prune(&kept, grace);
        prune_unused(&data_dir, &used, grace).map(|packages| packages + built)
    })
    .await
    .map_err(|e| ApiError::internal("pruning old packages", e))?
    .map_err(|e| ApiError::internal("pruning old packages", e))
}

/// Removes each package (archive and unpacked code) of `data_dir` that is
/// not in `used` and was not touched within `grace`.
fn prune_unused(
    data_dir: &Path,
    used: &std::collections::HashSet<String>,
    grace: std::time::Duration,
) -> std::io::Result<usize> {
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    for entry in std::fs::read_dir(data_dir.join("code"))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_sha256(&name) || used.contains(&name) {
            continue;
        }
        let touched = entry.metadata()?.modified()?;
        if now.duration_since(touched).unwrap_or_default() < grace {
            continue;
        }
        std::fs::remove_dir_all(entry.path())?;
        let archive = data_dir.join("packages").join(format!("{name}.tar.gz"));
        match std::fs::remove_file(archive) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        removed += 1;
    }
    Ok(removed)
}

/// Marks package `sha256` as wanted now, so that pruning spares it while a
/// deploy that asked for it is on its way.
pub(crate) fn touch(data_dir: &Path, sha256: &str) {
    let dir = code_dir(data_dir, sha256);
    if let Ok(file) = std::fs::File::open(&dir) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

/// Prunes old packages after a deploy, without holding it up.
pub(crate) fn prune_in_background(state: std::sync::Arc<AppState>) {
    tokio::spawn(async move {
        match prune(&state).await {
            Ok(0) => {}
            Ok(removed) => {
                tracing::info!(removed, "removed the packages of versions no longer kept")
            }
            Err(err) => tracing::warn!(error = err.message, "cannot remove old packages"),
        }
    });
}

/// Refuses `spec` when it names a secret `app` does not have (`what`
/// says what did not happen). Call under the deploy lock.
async fn require_secrets(
    state: &AppState,
    app: &str,
    spec: &stratus_manifest::AppSpec,
    what: &str,
) -> Result<(), ApiError> {
    // The store's word: a secret set through another node a moment ago
    // counts.
    let stored = state.store.list_secrets(Some(app)).await?;
    state.secrets.refresh_app(&state.sealer, app, stored);
    let missing = crate::app_secrets::missing(&state.secrets, app, spec);
    if missing.is_empty() {
        return Ok(());
    }
    Err(ApiError::bad_request(
        "missing_secret",
        format!("app {app} names secrets it does not have; {what}"),
    )
    .with_details(
        missing
            .iter()
            .map(|(var, name)| {
                format!(
                    "env {var} names secret {name:?}: set it with `stratus secret set {app} {name}`"
                )
            })
            .collect(),
    ))
}

/// Makes an earlier version of `app` active again, as it was deployed (its
/// packages are kept): `version`, or else the newest one before the active
/// one. The version that was active stays listed, to go back to.
pub(crate) async fn rollback(
    state: &AppState,
    app: &str,
    version: Option<u32>,
) -> Result<VersionRecord, ApiError> {
    let _serial = state.deploy_lock.lock().await;
    let Some(active) = state.store.active_version(app).await? else {
        return Err(status_for_missing_app(app));
    };
    let versions = state.store.list_versions(app).await?;
    let target = match version {
        Some(wanted) => versions
            .into_iter()
            .find(|v| v.version == wanted)
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "app {app} has no version {wanted}; `stratus versions {app}` lists them"
                ))
            })?,
        None => versions
            .into_iter()
            .find(|v| v.version < active.version)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "no_earlier_version",
                    format!(
                        "version {} is app {app}'s first; there is nothing before it to go back to",
                        active.version
                    ),
                )
            })?,
    };
    if target.version == active.version {
        return Ok(target);
    }
    let gone: Vec<String> = target
        .packages
        .iter()
        .filter(|(_, sha)| !code_dir(&state.config.data_dir, sha).is_dir())
        .map(|(dir, sha)| format!("the package {sha} of code directory {dir:?} is no longer kept"))
        .collect();
    if !gone.is_empty() && state.shared_packages.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "version_not_kept",
            format!(
                "version {} of {app} cannot be made active again; deploy it anew",
                target.version
            ),
        )
        .with_details(gone));
    }
    if let Some(shared) = &state.shared_packages {
        let limits = unpack_limits(state.config.limits.max_unpacked_bytes);
        ensure_version_code(&state.config.data_dir, limits, &**shared, &target).await?;
    }
    // Dependencies pruned since, or built on another node, are built again.
    if let Err(message) = state.builder.ensure(&target).await {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "build_failed",
            format!(
                "version {} of {app} was not made active: {message}",
                target.version
            ),
        ));
    }
    require_secrets(
        state,
        app,
        &target.spec,
        &format!("version {} was not made active", target.version),
    )
    .await?;
    let Some(record) = state
        .store
        .reactivate(app, target.version, crate::now_ms())
        .await?
    else {
        return Err(status_for_missing_app(app));
    };
    crate::cluster::publish(state, &record);
    tracing::info!(
        app,
        version = record.version,
        from = active.version,
        "rolled back"
    );
    Ok(record)
}

pub(crate) fn status_for_missing_app(app: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("application {app:?} does not exist; `stratus ls` lists the deployed ones"),
    )
}

#[cfg(test)]
mod prune_tests {
    use super::*;

    #[test]
    fn only_packages_unused_and_untouched_for_the_grace_go() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        std::fs::create_dir_all(data.join("packages")).unwrap();
        let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        let package = |c: char, old: bool| {
            let sha = c.to_string().repeat(64);
            std::fs::create_dir_all(code_dir(data, &sha).join("sub")).unwrap();
            std::fs::write(data.join("packages").join(format!("{sha}.tar.gz")), b"x").unwrap();
            if old {
                let file = std::fs::File::open(code_dir(data, &sha)).unwrap();
                file.set_modified(long_ago).unwrap();
            }
            sha
        };
        let (used, old, fresh, touched) = (
            package('a', true),
            package('b', true),
            package('c', false),
            package('d', true),
        );
        std::fs::create_dir_all(data.join("code").join("not-a-package")).unwrap();
        touch(data, &touched);
        let used = std::collections::HashSet::from([used]);
        let hour = std::time::Duration::from_secs(3600);
        assert_eq!(prune_unused(data, &used, hour).unwrap(), 1);
        assert!(!code_dir(data, &old).exists());
        assert!(!data.join("packages").join(format!("{old}.tar.gz")).exists());
        for kept in used.iter().chain([&fresh, &touched]) {
            assert!(code_dir(data, kept).is_dir(), "{kept}");
        }
        assert!(data.join("code").join("not-a-package").is_dir());
        // No grace: whatever is unused goes.
        assert_eq!(
            prune_unused(data, &used, std::time::Duration::ZERO).unwrap(),
            2
        );
    }
}
