//! The fault-injecting proxy: HTTP/1.1 in plain TCP in front of a
//! plain-HTTP registry, a thread per client connection and a new upstream
//! connection per request. Each request is matched against the [`Faults`]
//! in order; the first that matches (path, method) and has uses left is
//! applied once. Every exchange is recorded with the request body bytes
//! forwarded and the response body bytes the client got, for "the bytes
//! fetched stayed under 1.2x the image size" and "the retried push
//! skipped what arrived".

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::http::{self, BodyReader, BodyWriter, Framing, Head};

/// What a [`Fault`] does to a request it matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Forwards the response head (its `Content-Length` whole) and the
    /// first `n` bytes of its body, then cuts the connection.
    CutAfter(u64),
    /// Answers `code` (an empty body) without asking the registry, with
    /// `Retry-After: <seconds>` when given; a request body is read and
    /// dropped.
    Status {
        /// The status code (500, 429, 503...).
        code: u16,
        /// The `Retry-After` header's seconds.
        retry_after: Option<u64>,
    },
    /// Forwards the request head and the first `n` bytes of its body to
    /// the registry, then cuts both connections, the client's without an
    /// answer (a push interrupted mid-upload). distribution 2.8 keeps
    /// the bytes but then refuses the session's URL (its signed state
    /// holds the old offset): 404 `BLOB_UPLOAD_INVALID`.
    CutRequestAfter(u64),
    /// Holds the request (nothing forwarded) until [`FaultProxy::release`],
    /// then forwards it: a test waits for it with
    /// [`FaultProxy::wait_held`] and does something meanwhile (kills the
    /// registry in the middle of a push).
    Hold,
    /// Forwards the response with the body byte at this offset flipped
    /// (all bits; the last byte when the body is shorter and its length
    /// known).
    FlipByte(u64),
    /// A GET answered 200 by the registry is answered `307` to the
    /// proxy's redirect server on another host (127.0.0.2), which serves
    /// the same body (ranges too) and records each request's
    /// `Authorization` ([`FaultProxy::redirect_hits`]). Other methods do
    /// not match.
    Redirect,
    /// Forwards the request and the registry's answer with the response
    /// header `.0` set to `.1` (a registry's lie in a header: another
    /// `Docker-Content-Digest`, an upload `Range` it never acknowledged).
    SetHeader(String, String),
}

/// A fault, the requests it applies to and how many times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// What it does.
    pub kind: FaultKind,
    /// A substring of the request target (path and query) it matches;
    /// empty: every request.
    pub path: String,
    /// The method it matches (any when `None`).
    pub method: Option<String>,
    /// How many more matching requests it applies to.
    pub times: usize,
}

impl Fault {
    fn new(kind: FaultKind) -> Fault {
        Fault {
            kind,
            path: String::new(),
            method: None,
            times: 1,
        }
    }

    /// [`FaultKind::CutAfter`]`(bytes)`, once, on any request.
    pub fn cut_after(bytes: u64) -> Fault {
        Fault::new(FaultKind::CutAfter(bytes))
    }

    /// [`FaultKind::CutRequestAfter`]`(bytes)`, once, on any request.
    pub fn cut_request_after(bytes: u64) -> Fault {
        Fault::new(FaultKind::CutRequestAfter(bytes))
    }

    /// [`FaultKind::Hold`], once, on any request.
    pub fn hold() -> Fault {
        Fault::new(FaultKind::Hold)
    }

    /// [`FaultKind::Status`] without `Retry-After`, once, on any request.
    pub fn status(code: u16) -> Fault {
        Fault::new(FaultKind::Status {
            code,
            retry_after: None,
        })
    }

    /// [`FaultKind::FlipByte`]`(offset)`, once, on any request.
    pub fn flip_byte(offset: u64) -> Fault {
        Fault::new(FaultKind::FlipByte(offset))
    }

    /// [`FaultKind::Redirect`], once, on any GET.
    pub fn redirect() -> Fault {
        Fault::new(FaultKind::Redirect)
    }

    /// [`FaultKind::SetHeader`]`(name, value)`, once, on any request.
    pub fn set_header(name: impl Into<String>, value: impl Into<String>) -> Fault {
        Fault::new(FaultKind::SetHeader(name.into(), value.into()))
    }

    /// With `Retry-After: seconds` (a [`FaultKind::Status`] only).
    pub fn retry_after(mut self, seconds: u64) -> Fault {
        if let FaultKind::Status { retry_after, .. } = &mut self.kind {
            *retry_after = Some(seconds);
        }
        self
    }

    /// Only on requests whose target contains `pattern`.
    pub fn on(mut self, pattern: impl Into<String>) -> Fault {
        self.path = pattern.into();
        self
    }

    /// Only on `method` requests.
    pub fn method(mut self, method: impl Into<String>) -> Fault {
        self.method = Some(method.into());
        self
    }

    /// On the first `n` matching requests.
    pub fn times(mut self, n: usize) -> Fault {
        self.times = n;
        self
    }

    /// On every matching request.
    pub fn always(self) -> Fault {
        self.times(usize::MAX)
    }

    fn matches(&self, head: &Head) -> bool {
        self.times > 0
            && head.target().contains(&self.path)
            && self.method.as_deref().is_none_or(|m| m == head.method())
            && (self.kind != FaultKind::Redirect || head.method() == "GET")
    }
}

/// The faults a [`FaultProxy`] injects, tried in order.
#[derive(Clone, Debug, Default)]
pub struct Faults(pub Vec<Fault>);

impl Faults {
    /// No fault: the proxy only forwards and counts.
    pub fn none() -> Faults {
        Faults::default()
    }

    /// These faults and `fault`.
    pub fn with(mut self, fault: Fault) -> Faults {
        self.0.push(fault);
        self
    }
}

/// One request the proxy answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    /// The method.
    pub method: String,
    /// The target (path and query).
    pub target: String,
    /// The request's `Range` header.
    pub range: Option<String>,
    /// Whether the request had an `Authorization` header.
    pub authorization: bool,
    /// The request body bytes forwarded to the registry.
    pub request_bytes: u64,
    /// The status the client got (0 when none came).
    pub status: u16,
    /// The response body bytes the client got.
    pub body_bytes: u64,
    /// The fault applied, if any.
    pub fault: Option<FaultKind>,
    /// When its head had come (for a test to see the backoff between a
    /// 429 and the retry).
    pub started: Instant,
}

/// One request the redirect server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedirectHit {
    /// The target.
    pub target: String,
    /// The `Authorization` header it came with (none is right: a client
    /// must not send credentials to another host).
    pub authorization: Option<String>,
    /// The request's `Range` header.
    pub range: Option<String>,
    /// The status it got.
    pub status: u16,
    /// The body bytes it got.
    pub body_bytes: u64,
}

/// The requests held by [`FaultKind::Hold`]: how many came, whether they
/// may go on.
#[derive(Default)]
struct Held {
    count: usize,
    released: bool,
}

struct Shared {
    upstream: SocketAddr,
    held: Mutex<Held>,
    wake: Condvar,
    faults: Mutex<Vec<Fault>>,
    exchanges: Mutex<Vec<Exchange>>,
    redirect: Arc<Redirects>,
}

/// What the redirect server serves, and its log.
struct Redirects {
    base: String,
    blobs: Mutex<HashMap<String, Arc<Vec<u8>>>>,
    hits: Mutex<Vec<RedirectHit>>,
}

/// A listener and its accept thread, stopped on drop.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    fn start<S: Send + Sync + 'static>(
        listener: TcpListener,
        state: Arc<S>,
        handle: fn(TcpStream, Arc<S>),
    ) -> Server {
        let addr = listener.local_addr().expect("listener address");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let accept = std::thread::spawn(move || super::serve(&listener, &s, state, handle));
        Server {
            addr,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        super::stop_accepting(self.addr, &self.stop, self.accept.take());
    }
}

/// An HTTP/1.1 proxy on 127.0.0.1 that forwards to a registry and injects
/// [`Faults`]; stopped on drop.
pub struct FaultProxy {
    shared: Arc<Shared>,
    proxy: Server,
    redirect: Server,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (a plain-HTTP server) injecting
    /// `faults`, and its redirect server on 127.0.0.2 (127.0.0.1 where
    /// that cannot be bound).
    pub fn start(upstream: SocketAddr, faults: Faults) -> FaultProxy {
        let other = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 2), 0))
            .or_else(|_| TcpListener::bind("127.0.0.1:0"))
            .expect("bind the redirect server");
        let redirects = Arc::new(Redirects {
            base: format!("http://{}", other.local_addr().expect("address")),
            blobs: Mutex::new(HashMap::new()),
            hits: Mutex::new(Vec::new()),
        });
        let redirect = Server::start(other, redirects.clone(), serve_redirect);
        let shared = Arc::new(Shared {
            upstream,
            held: Mutex::new(Held::default()),
            wake: Condvar::new(),
            faults: Mutex::new(faults.0),
            exchanges: Mutex::new(Vec::new()),
            redirect: redirects,
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let proxy = Server::start(listener, shared.clone(), serve_client);
        FaultProxy {
            shared,
            proxy,
            redirect,
        }
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.proxy.addr
    }

    /// `127.0.0.1:<port>`, the registry part of a reference through it.
    pub fn host_port(&self) -> String {
        self.proxy.addr.to_string()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.proxy.addr)
    }

    /// The redirect server's address.
    pub fn redirect_addr(&self) -> SocketAddr {
        self.redirect.addr
    }

    /// Adds `fault` after the others (a test may arm a fault between steps).
    pub fn add(&self, fault: Fault) {
        self.shared.faults.lock().expect("faults").push(fault);
    }

    /// The faults with their uses left.
    pub fn faults(&self) -> Vec<Fault> {
        self.shared.faults.lock().expect("faults").clone()
    }

    /// Waits until `n` requests in all have been held by
    /// [`FaultKind::Hold`], at most `timeout`; whether they were.
    pub fn wait_held(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut held = self.shared.held.lock().expect("held");
        while held.count < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            held = self.shared.wake.wait_timeout(held, left).expect("held").0;
        }
        true
    }

    /// Lets every held request, and every later one a hold matches, go
    /// on.
    pub fn release(&self) {
        self.shared.held.lock().expect("held").released = true;
        self.shared.wake.notify_all();
    }

    /// Every exchange so far, in the order they started.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.shared.exchanges.lock().expect("exchanges").clone()
    }

    /// The response body bytes forwarded to clients for requests whose
    /// path (without the query) contains `pattern`.
    pub fn bytes_forwarded(&self, pattern: &str) -> u64 {
        self.sum(pattern, |e| e.body_bytes)
    }

    /// The request body bytes forwarded to the registry for requests
    /// whose path (without the query) contains `pattern` (what a push
    /// uploaded).
    pub fn bytes_uploaded(&self, pattern: &str) -> u64 {
        self.sum(pattern, |e| e.request_bytes)
    }

    fn sum(&self, pattern: &str, bytes: fn(&Exchange) -> u64) -> u64 {
        self.exchanges()
            .iter()
            .filter(|e| e.target.split('?').next().unwrap_or("").contains(pattern))
            .map(bytes)
            .sum()
    }

    /// Every request the redirect server answered.
    pub fn redirect_hits(&self) -> Vec<RedirectHit> {
        self.shared.redirect.hits.lock().expect("hits").clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.release();
    }
}

impl Shared {
    /// The first fault matching `head` with uses left, one use taken.
    fn take_fault(&self, head: &Head) -> Option<FaultKind> {
        let mut faults = self.faults.lock().expect("faults");
        let f = faults.iter_mut().find(|f| f.matches(head))?;
        f.times -= 1;
        Some(f.kind.clone())
    }

    /// Logs `e` and returns a handle to update it with.
    /// Counts a held request and waits for [`FaultProxy::release`] (or
    /// the proxy's drop).
    fn hold(&self) {
        let mut held = self.held.lock().expect("held");
        held.count += 1;
        self.wake.notify_all();
        while !held.released {
            held = self.wake.wait(held).expect("held");
        }
    }

    fn record(&self, e: Exchange) -> Entry<'_> {
        let mut log = self.exchanges.lock().expect("exchanges");
        log.push(e);
        Entry {
            shared: self,
            index: log.len() - 1,
        }
    }
}

/// An exchange in the log, updated before each byte reaches the client,
/// so that a client that has its answer finds it counted.
struct Entry<'a> {
    shared: &'a Shared,
    index: usize,
}

impl Entry<'_> {
    fn update<T>(&self, f: impl FnOnce(&mut Exchange) -> T) -> T {
        f(&mut self.shared.exchanges.lock().expect("exchanges")[self.index])
    }

    fn status(&self, code: u16) {
        self.update(|e| e.status = code);
    }

    /// Counts `n` more body bytes; returns the count before them.
    fn add(&self, n: u64) -> u64 {
        self.update(|e| {
            e.body_bytes += n;
            e.body_bytes - n
        })
    }
}

fn serve_client(client: TcpStream, shared: Arc<Shared>) {
    let Ok(mut w) = client.try_clone() else {
        return;
    };
    let mut r = BufReader::new(client);
    while let Ok(Some(head)) = http::read_head(&mut r) {
        let fault = shared.take_fault(&head);
        let e = shared.record(Exchange {
            method: head.method().to_owned(),
            target: head.target().to_owned(),
            range: head.header("range").map(str::to_owned),
            authorization: head.header("authorization").is_some(),
            request_bytes: 0,
            status: 0,
            body_bytes: 0,
            fault: fault.clone(),
            started: Instant::now(),
        });
        let keep = exchange(&shared, &head, &mut r, &mut w, fault, &e);
        if !matches!(keep, Ok(true)) || head.wants_close() {
            break;
        }
    }
    let _ = w.shutdown(Shutdown::Both);
}

/// Answers one request; `Ok(true)` when the connection may serve another.
fn exchange(
    shared: &Shared,
    head: &Head,
    r: &mut BufReader<TcpStream>,
    w: &mut TcpStream,
    fault: Option<FaultKind>,
    e: &Entry<'_>,
) -> io::Result<bool> {
    if fault == Some(FaultKind::Hold) {
        shared.hold();
    }
    if let Some(FaultKind::Status { code, retry_after }) = fault {
        io::copy(
            &mut BodyReader::new(r, Framing::of_request(head)?),
            &mut io::sink(),
        )?;
        let mut reply = Head::response(code);
        if let Some(s) = retry_after {
            reply.set("Retry-After", s.to_string());
        }
        e.status(code);
        http::respond(w, reply, b"")?;
        return Ok(true);
    }
    let up = http::connect(shared.upstream)?;
    let mut up_w = BufWriter::new(up.try_clone()?);
    let mut req = head.clone();
    req.remove("Expect").set("Connection", "close");
    req.write_to(&mut up_w)?;
    if let Some(FaultKind::CutRequestAfter(n)) = fault {
        let sent = http::copy_body(r, &mut up_w, Framing::of_request(head)?, n)?;
        e.update(|e| e.request_bytes = sent);
        let _ = up.shutdown(Shutdown::Both);
        return Ok(false);
    }
    let sent = http::copy_body(r, &mut up_w, Framing::of_request(head)?, u64::MAX)?;
    e.update(|e| e.request_bytes = sent);
    let mut up_r = BufReader::new(up);
    let reply = loop {
        let h = http::read_head(&mut up_r)?.ok_or(io::ErrorKind::UnexpectedEof)?;
        if !(100..200).contains(&h.status()) {
            break h;
        }
    };
    let framing = Framing::of_response(&reply, head.method())?;
    if fault == Some(FaultKind::Redirect) && reply.status() == 200 {
        let mut body = Vec::new();
        BodyReader::new(&mut up_r, framing)
            .take(http::MAX_BODY)
            .read_to_end(&mut body)?;
        let location = shared.redirect.stash(head.path(), body);
        let mut to = Head::response(307);
        to.set("Location", location);
        e.status(307);
        http::respond(w, to, b"")?;
        return Ok(true);
    }
    relay(reply, &mut up_r, framing, w, head.wants_close(), fault, e)
}

/// Forwards a response (head and body, the body in its own framing) and
/// applies a body fault; `Ok(true)` when the connection stays usable.
fn relay(
    mut reply: Head,
    up: &mut BufReader<TcpStream>,
    framing: Framing,
    w: &mut TcpStream,
    client_closes: bool,
    fault: Option<FaultKind>,
    e: &Entry<'_>,
) -> io::Result<bool> {
    let close = client_closes || framing == Framing::UntilClose;
    if let Some(FaultKind::SetHeader(name, value)) = &fault {
        reply.set(name, value.clone());
    }
    if close {
        reply.set("Connection", "close");
    } else {
        reply.remove("Connection");
    }
    e.status(reply.status());
    let mut out = BufWriter::new(&*w);
    reply.write_to(&mut out)?;
    let (cut, flip) = match fault {
        Some(FaultKind::CutAfter(n)) => (Some(n), None),
        Some(FaultKind::FlipByte(o)) => (
            None,
            Some(match framing {
                Framing::Length(n) => o.min(n.saturating_sub(1)),
                _ => o,
            }),
        ),
        _ => (None, None),
    };
    let mut body = BodyReader::new(up, framing);
    let mut writer = BodyWriter::new(&mut out, framing);
    let mut buf = vec![0; 64 * 1024];
    let mut sent = 0;
    loop {
        let mut n = body.read(&mut buf)?;
        if n == 0 {
            writer.finish()?;
            return Ok(!close);
        }
        if let Some(o) = flip.and_then(|o| o.checked_sub(sent)) {
            if let Some(b) = usize::try_from(o).ok().and_then(|o| buf[..n].get_mut(o)) {
                *b ^= 0xff;
            }
        }
        if let Some(limit) = cut {
            n = n.min(usize::try_from(limit - sent).unwrap_or(usize::MAX));
        }
        sent = e.add(n as u64) + n as u64;
        writer.write(&buf[..n])?;
        if cut == Some(sent) {
            out.flush()?;
            let _ = w.shutdown(Shutdown::Both);
            return Ok(false);
        }
    }
}

impl Redirects {
    /// Keeps `body` and returns the URL it is served at.
    fn stash(&self, path: &str, body: Vec<u8>) -> String {
        let mut blobs = self.blobs.lock().expect("blobs");
        let id = format!("/r/{}{path}", blobs.len());
        blobs.insert(id.clone(), Arc::new(body));
        format!("{}{id}", self.base)
    }

    /// The response to a GET or HEAD of `target` with `range`.
    fn answer(&self, head: &Head) -> (Head, Vec<u8>) {
        let blob = self.blobs.lock().expect("blobs").get(head.path()).cloned();
        let Some(blob) = blob.filter(|_| matches!(head.method(), "GET" | "HEAD")) else {
            return (Head::response(404), Vec::new());
        };
        let len = blob.len() as u64;
        let (mut reply, from, to) = match head.header("range").map(parse_range) {
            None => (Head::response(200), 0, len),
            Some(Some((a, b))) if a < len => {
                let to = b.map_or(len, |b| (b + 1).min(len));
                let mut h = Head::response(206);
                h.set("Content-Range", format!("bytes {a}-{}/{len}", to - 1));
                (h, a, to)
            }
            Some(_) => {
                let mut h = Head::response(416);
                h.set("Content-Range", format!("bytes */{len}"));
                return (h, Vec::new());
            }
        };
        reply.set("Content-Type", "application/octet-stream");
        let body = &blob[usize::try_from(from).unwrap_or(0)..usize::try_from(to).unwrap_or(0)];
        (reply, body.to_vec())
    }
}

/// `bytes=a-` or `bytes=a-b`.
fn parse_range(v: &str) -> Option<(u64, Option<u64>)> {
    let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
    let a = a.trim().parse().ok()?;
    let b = match b.trim() {
        "" => None,
        b => Some(b.parse().ok()?),
    };
    Some((a, b)).filter(|(a, b)| b.is_none_or(|b| b >= *a))
}

fn serve_redirect(conn: TcpStream, redirects: Arc<Redirects>) {
    let Ok(mut w) = conn.try_clone() else { return };
    let mut r = BufReader::new(conn);
    while let Ok(Some(head)) = http::read_head(&mut r) {
        let (reply, body) = redirects.answer(&head);
        let sent = if head.method() == "HEAD" {
            0
        } else {
            body.len()
        };
        redirects.hits.lock().expect("hits").push(RedirectHit {
            target: head.target().to_owned(),
            authorization: head.header("authorization").map(str::to_owned),
            range: head.header("range").map(str::to_owned),
            status: reply.status(),
            body_bytes: sent as u64,
        });
        let ok = if head.method() == "HEAD" {
            let mut reply = reply;
            reply.set("Content-Length", body.len().to_string());
            reply.write_to(&mut w).and_then(|()| w.flush())
        } else {
            http::respond(&mut w, reply, &body)
        };
        if ok.is_err() || head.wants_close() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse() {
        assert_eq!(parse_range("bytes=10-"), Some((10, None)));
        assert_eq!(parse_range("bytes=0-9"), Some((0, Some(9))));
        assert_eq!(parse_range("bytes=9-0"), None);
        assert_eq!(parse_range("items=0-1"), None);
    }

    #[test]
    fn a_fault_applies_its_count_of_times_to_matching_requests_only() {
        let shared = Shared {
            upstream: "127.0.0.1:1".parse().unwrap(),
            held: Mutex::new(Held::default()),
            wake: Condvar::new(),
            faults: Mutex::new(vec![
                Fault::status(429).on("/manifests/").times(2),
                Fault::redirect().on("/blobs/"),
            ]),
            exchanges: Mutex::new(Vec::new()),
            redirect: Arc::new(Redirects {
                base: String::new(),
                blobs: Mutex::new(HashMap::new()),
                hits: Mutex::new(Vec::new()),
            }),
        };
        let get = |t: &str| Head::new(format!("GET {t} HTTP/1.1"));
        let m = get("/v2/a/manifests/1");
        assert!(shared.take_fault(&m).is_some());
        assert!(shared.take_fault(&m).is_some());
        assert_eq!(shared.take_fault(&m), None, "only the first 2 times");
        let head_blob = Head::new("HEAD /v2/a/blobs/sha256:00 HTTP/1.1");
        assert_eq!(
            shared.take_fault(&head_blob),
            None,
            "a redirect is for GETs"
        );
        assert_eq!(
            shared.take_fault(&get("/v2/a/blobs/sha256:00")),
            Some(FaultKind::Redirect)
        );
    }
}
