//! A small HTTP/1.1 server on 127.0.0.1 for the download tests: serves
//! in-memory files (with `Range: bytes=N-`), or a folder under a prefix, and
//! can ignore Range, cut the connection once, fail with 500, redirect, stall
//! or dribble. It counts requests and body bytes sent, bodies sent whole,
//! and bodies whose connection the client closed before their end. One
//! request per connection (`Connection: close`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How a path is answered.
#[derive(Clone, Default)]
pub struct Route {
    /// The file's content.
    pub body: Arc<Vec<u8>>,
    /// Answer 200 with the whole body even to a Range request.
    pub ignore_range: bool,
    /// Close the connection after this many body bytes, once.
    pub cut_once_after: Option<usize>,
    /// Answer 500 this many times first.
    pub fail_times: usize,
    /// Answer 302 to this location.
    pub redirect: Option<String>,
    /// Send headers, then nothing.
    pub stall: bool,
    /// Pause between 64 KiB chunks.
    pub chunk_delay: Option<Duration>,
}

impl Route {
    pub fn file(body: Vec<u8>) -> Self {
        Route {
            body: Arc::new(body),
            ..Route::default()
        }
    }
}

/// A logged request.
#[derive(Clone, Debug)]
pub struct Logged {
    pub path: String,
    pub range: Option<String>,
    pub status: u16,
}

#[derive(Default)]
struct State {
    routes: Mutex<HashMap<String, Route>>,
    dir: Mutex<Option<(String, PathBuf)>>,
    requests: AtomicUsize,
    bytes: AtomicU64,
    completed: AtomicUsize,
    abandoned: AtomicUsize,
    log: Mutex<Vec<Logged>>,
}

/// The running server; stops when dropped.
pub struct Server {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(handle(st.clone(), sock));
            }
        });
        Server { addr, state, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn route(&self, path: &str, route: Route) {
        self.state.routes.lock().unwrap().insert(path.into(), route);
    }

    /// Serves files of `dir` at `prefix/<relative path>`.
    pub fn serve_dir(&self, prefix: &str, dir: PathBuf) {
        *self.state.dir.lock().unwrap() = Some((prefix.into(), dir));
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub fn bytes_sent(&self) -> u64 {
        self.state.bytes.load(Ordering::SeqCst)
    }

    /// Bodies sent to their end.
    pub fn completed(&self) -> usize {
        self.state.completed.load(Ordering::SeqCst)
    }

    /// Bodies whose connection the client closed before their end.
    pub fn abandoned(&self) -> usize {
        self.state.abandoned.load(Ordering::SeqCst)
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.log.lock().unwrap().clone()
    }

    pub fn reset_counters(&self) {
        self.state.requests.store(0, Ordering::SeqCst);
        self.state.bytes.store(0, Ordering::SeqCst);
        self.state.log.lock().unwrap().clear();
    }
}

enum Answer {
    Status(u16, Option<String>),
    Body(Route),
}

async fn handle(state: Arc<State>, mut sock: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16384 {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("/")
        .to_owned();
    let range = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("range"))
        .map(|(_, v)| v.trim().to_owned());
    state.requests.fetch_add(1, Ordering::SeqCst);

    let answer = answer(&state, &path);
    let offset = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let status = match &answer {
        Answer::Status(s, _) => *s,
        Answer::Body(r) if offset.is_some() && !r.ignore_range => 206,
        Answer::Body(_) => 200,
    };
    state.log.lock().unwrap().push(Logged {
        path,
        range: range.clone(),
        status,
    });
    let _ = respond(&state, &mut sock, answer, offset).await;
}

fn answer(state: &State, path: &str) -> Answer {
    let mut routes = state.routes.lock().unwrap();
    if let Some(route) = routes.get_mut(path) {
        if let Some(to) = &route.redirect {
            return Answer::Status(302, Some(to.clone()));
        }
        if route.fail_times > 0 {
            route.fail_times -= 1;
            return Answer::Status(500, None);
        }
        let served = route.clone();
        route.cut_once_after = None;
        return Answer::Body(served);
    }
    drop(routes);
    if let Some((prefix, dir)) = state.dir.lock().unwrap().clone() {
        if let Some(rel) = path.strip_prefix(&format!("{prefix}/")) {
            let rel = lab::download::checksum::percent_decode(rel);
            if !rel.split('/').any(|s| s == "..") {
                if let Ok(body) = std::fs::read(dir.join(rel)) {
                    return Answer::Body(Route::file(body));
                }
            }
        }
    }
    Answer::Status(404, None)
}

async fn respond(
    state: &State,
    sock: &mut TcpStream,
    answer: Answer,
    offset: Option<usize>,
) -> std::io::Result<()> {
    let route = match answer {
        Answer::Status(code, location) => {
            let loc = location.map_or(String::new(), |l| format!("Location: {l}\r\n"));
            let head = format!(
                "HTTP/1.1 {code} X\r\n{loc}Content-Length: 5\r\nConnection: close\r\n\r\nerror"
            );
            return sock.write_all(head.as_bytes()).await;
        }
        Answer::Body(route) => route,
    };
    let len = route.body.len();
    let (status, start) = match offset {
        Some(o) if !route.ignore_range && o >= len => {
            let head = format!("HTTP/1.1 416 X\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return sock.write_all(head.as_bytes()).await;
        }
        Some(o) if !route.ignore_range => (206, o),
        _ => (200, 0),
    };
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n",
        len - start
    );
    if status == 206 {
        head.push_str(&format!(
            "Content-Range: bytes {start}-{}/{len}\r\n",
            len - 1
        ));
    }
    head.push_str("\r\n");
    sock.write_all(head.as_bytes()).await?;
    if route.stall {
        tokio::time::sleep(Duration::from_secs(20)).await;
        return Ok(());
    }
    let end = route.cut_once_after.map_or(len, |k| (start + k).min(len));
    for piece in route.body[start..end].chunks(64 * 1024) {
        if let Err(e) = sock.write_all(piece).await {
            state.abandoned.fetch_add(1, Ordering::SeqCst);
            return Err(e);
        }
        state.bytes.fetch_add(piece.len() as u64, Ordering::SeqCst);
        if let Some(d) = route.chunk_delay {
            tokio::time::sleep(d).await;
        }
    }
    sock.flush().await?;
    state.completed.fetch_add(1, Ordering::SeqCst);
    sock.shutdown().await
}
