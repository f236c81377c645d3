//! The native module of the `indigo` Python package: an embedded Indigo database
//! and the gateway's router over it, in-process. Python's side (`python/indigo`)
//! runs chromadb's own client machinery and sends each of its API requests here
//! instead of over a socket, so the embedded client behaves exactly as the
//! server does (validation, errors, limits) with no server.
//!
//! Every call releases the GIL while Indigo works. Writes and `get`s, which can
//! be long, run on the runtime while the caller checks for signals every 100 ms,
//! so Ctrl-C interrupts them (the request itself, once accepted, completes or not
//! as one atomic write); queries, searches and GETs run on the caller's thread.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tower::ServiceExt;

/// An API answer: status, headers, body.
type Response<'py> = (u16, Vec<(String, String)>, Bound<'py, PyBytes>);

/// One open database (a data directory, or a temporary one for an ephemeral
/// client) and the API over it.
#[pyclass(frozen)]
struct Core {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
    db: Arc<indigo::Indigo>,
    path: PathBuf,
    /// An ephemeral database's directory, removed when the core is dropped.
    _temp: Option<tempfile::TempDir>,
}

#[pymethods]
impl Core {
    /// Opens `path` (created if missing), or a temporary directory when `None`.
    /// A directory another process holds open is refused at once.
    #[new]
    #[pyo3(signature = (path=None, allow_reset=false))]
    fn new(py: Python<'_>, path: Option<String>, allow_reset: bool) -> PyResult<Core> {
        let (path, temp) = match path {
            Some(p) => (PathBuf::from(p), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("indigo-ephemeral-")
                    .tempdir()
                    .map_err(|e| {
                        PyOSError::new_err(format!("cannot make a temporary directory: {e}"))
                    })?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let settings = indigo_frontend::settings::Settings {
            path: path.clone(),
            allow_reset,
            ..Default::default()
        };
        let options = indigo::Options {
            limits: settings.limits(),
            backlog: settings.backlog(),
            memory: settings.memory(),
            ..Default::default()
        };
        let db = py
            .detach(|| indigo::Indigo::open_with(&path, options))
            .map_err(|e| match e {
                indigo::Error::InUse(p) => PyRuntimeError::new_err(format!(
                    "{} is in use by another process (an Indigo server or client); close it, \
                     or open another path",
                    p.display()
                )),
                e => PyRuntimeError::new_err(format!("cannot open {}: {e}", path.display())),
            })?;
        let db = Arc::new(db);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("indigo-py")
            .enable_all()
            .build()
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start Indigo's runtime: {e}")))?;
        let app = indigo_frontend::router(db.clone(), settings);
        Ok(Core {
            rt,
            app,
            db,
            path,
            _temp: temp,
        })
    }

    /// The data directory.
    #[getter]
    fn path(&self) -> String {
        self.path.display().to_string()
    }

    /// One API request (`method`, the path with its query string, a JSON
    /// body): returns the status, headers and body, as the server would.
    fn request<'py>(
        &self,
        py: Python<'py>,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> PyResult<Response<'py>> {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .map_err(|e| PyRuntimeError::new_err(format!("bad request {method} {path}: {e}")))?;
        let app = self.app.clone();
        let call = async move {
            let resp = app.oneshot(req).await.unwrap_or_else(|e| match e {});
            let status = resp.status().as_u16();
            let headers: Vec<(String, String)> = resp
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
                .collect();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await;
            (status, headers, bytes)
        };
        if is_quick(method, path) {
            // Short reads run on this thread, start to end: a query is a
            // fraction of a millisecond of work, and handing it to the
            // runtime's threads and back cost more than that. A panic is an
            // error here, as a failed task is below, not a PanicException.
            let (status, headers, bytes) = py
                .detach(|| {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        self.rt.block_on(indigo_frontend::INLINE.scope(true, call))
                    }))
                })
                .map_err(|p| {
                    let why = p
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| p.downcast_ref::<&str>().copied())
                        .unwrap_or("a panic");
                    PyRuntimeError::new_err(format!("Indigo failed: {why}"))
                })?;
            let bytes =
                bytes.map_err(|e| PyRuntimeError::new_err(format!("reading a response: {e}")))?;
            return Ok((status, headers, PyBytes::new(py, &bytes)));
        }
        // Writes may wait on the backlog for long: they run on the runtime,
        // and this thread checks for Ctrl-C while it waits.
        let mut task = self.rt.spawn(call);
        let (status, headers, bytes) = loop {
            let done = py.detach(|| {
                self.rt.block_on(async {
                    tokio::time::timeout(Duration::from_millis(100), &mut task).await
                })
            });
            match done {
                Ok(r) => {
                    break r.map_err(|e| PyRuntimeError::new_err(format!("Indigo failed: {e}")))?
                }
                // Ctrl-C raises KeyboardInterrupt here; the request runs on.
                Err(_) => py.check_signals()?,
            }
        };
        let bytes =
            bytes.map_err(|e| PyRuntimeError::new_err(format!("reading a response: {e}")))?;
        Ok((status, headers, PyBytes::new(py, &bytes)))
    }

    /// Folds every collection's log into its indexes now.
    fn compact(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.db.compact())
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }
}

/// Reads with bounded work: queries, searches (k results each) and the GETs
/// (counts, collections, heartbeats). Not `get`: without a limit it returns a
/// whole collection, and must stay interruptible.
fn is_quick(method: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    method == "GET" || (method == "POST" && (path.ends_with("/query") || path.ends_with("/search")))
}

#[pymodule]
fn _indigo(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Core>()?;
    Ok(())
}
