//! `GET /api/v1/export/{EntitySet}.csv|.parquet`: a whole entity set for BI tools,
//! streamed as it is read so memory stays flat for any size.

use std::io::Write;

use axum::extract::{ConnectInfo, OriginalUri, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chatvault_catalog::Scope;
use chatvault_odata::export::ExportFormat;
use chatvault_odata::{model, Access, QueryError, QueryOptions};
use futures::StreamExt as _;

use crate::auth;
use crate::error::ApiError;
use crate::odata::query_error;
use crate::AppState;

/// Bytes gathered before a chunk is handed to the connection.
const CHUNK_BYTES: usize = 256 * 1024;
const CHUNKS_IN_FLIGHT: usize = 4;

type Chunk = Result<Vec<u8>, QueryError>;

/// An `io::Write` that hands full chunks to the response; a client that went away makes
/// the next write fail, which stops the export.
struct ChannelWriter {
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Chunk>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A whole entity set as CSV or Parquet, filtered and ordered in the OData language.
#[utoipa::path(get, path = "/api/v1/export/{file}", tag = "export",
    params(
        ("file" = String, Path, description = "Entity set and format: Chats.csv, ChatLines.parquet, …"),
        ("$filter" = Option<String>, Query, description = "OData $filter"),
        ("$select" = Option<String>, Query, description = "Comma-separated properties"),
        ("$orderby" = Option<String>, Query, description = "OData $orderby"),
        ("bom" = Option<bool>, Query, description = "Start the CSV with a UTF-8 byte-order mark (Excel)"),
    ),
    responses(
        (status = 200, description = "The rows, streamed (gzip with Accept-Encoding: gzip)", content_type = "text/csv"),
        (status = 400, description = "A bad query option, naming the token and position", body = crate::openapi::ErrorBody),
        (status = 401, description = "No or unknown API key", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such entity set or format", body = crate::openapi::ErrorBody),
        (status = 501, description = "A query feature exports do not support", body = crate::openapi::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []), ("basic" = []), ("api_key_query" = [])))]
pub async fn export(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    let query = uri.query().unwrap_or("");
    // An unknown set or format is named before the key is asked for.
    file_format(&file, query)?;
    let key = auth::require(&state, &headers, Scope::Read).await?;
    export_as(&state, &key, peer, &file, query).await
}

/// The entity set and format a file name such as `Chats.csv` asks for.
fn file_format(
    file: &str,
    query: &str,
) -> Result<(&'static model::EntitySet, ExportFormat, &'static str), ApiError> {
    let (set_name, extension) = file.rsplit_once('.').unwrap_or((file, ""));
    let bom = form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k == "bom" && v == "true");
    let format = match extension {
        "csv" => ExportFormat::Csv { bom },
        "parquet" => ExportFormat::Parquet,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("exports are .csv or .parquet, not '.{other}'"),
            ))
        }
    };
    let set = model::entity_set(set_name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no entity set named '{set_name}'"),
        )
    })?;
    Ok((set, format, format.extension()))
}

/// Streams the export `file` (`Chats.csv`, …) with `query`'s OData options, as `key`
/// may see it, and records it in the audit log. The console's exports come this way too.
pub async fn export_as(
    state: &AppState,
    key: &auth::Principal,
    peer: std::net::SocketAddr,
    file: &str,
    query: &str,
) -> Result<Response, ApiError> {
    let Some(service) = state.odata.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ExportUnavailable",
            "exports are not enabled on this node",
        ));
    };
    let (set, format, extension) = file_format(file, query)?;
    let options = QueryOptions::parse(query).map_err(query_error)?;
    // Which options shaped the export, not their values: a filter may name a person.
    let shaped_by: Vec<String> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, _)| k.into_owned())
        .filter(|k| k.starts_with('$'))
        .collect();
    crate::admin::record(
        state,
        key,
        peer,
        "export.run",
        set.name,
        serde_json::json!({"format": extension, "options": shaped_by}),
    )
    .await?;
    let access = Access {
        sites: key.sites.clone(),
    };

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(CHUNKS_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let now = chrono::Utc::now().naive_utc();
        let sink = ChannelWriter {
            buf: Vec::with_capacity(CHUNK_BYTES),
            tx: tx.clone(),
        };
        let engine = service.engine();
        // Compressed, when the client accepts it, by the router's compression layer.
        let result = chatvault_odata::export::export(
            engine,
            set,
            &options,
            &access,
            format,
            now,
            sink,
            &mut |_| {},
        );
        match result {
            Ok(rows) => tracing::info!(entity_set = set.name, rows, "export finished"),
            Err(e) => {
                tracing::warn!(entity_set = set.name, error = %e, "export stopped");
                let _ = tx.blocking_send(Err(e));
            }
        }
    });

    // The first chunk (or the error that came instead) decides the status.
    let first = match rx.recv().await {
        Some(Err(e)) => return Err(query_error(e)),
        Some(Ok(chunk)) => Some(chunk),
        None => None,
    };
    let rest = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (chunk.map_err(|e| std::io::Error::other(e.to_string())), rx))
    });
    // Fused: the compression layer polls once more after the end, which `unfold` forbids.
    let body = futures::stream::iter(first.map(Ok::<_, std::io::Error>))
        .chain(rest)
        .fuse();
    let mut response = (StatusCode::OK, axum::body::Body::from_stream(body)).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}.{}\"",
        set.name,
        format.extension()
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}
