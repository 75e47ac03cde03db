//! The little HTTP/1.1 the registry fixtures speak: a message head read
//! with bounds, a body read as its framing says (length, chunked, until
//! close) and written back in the same framing, and a raw client that
//! shows a test exactly what came over the wire, a cut body included.
//!
//! Every socket has [`IO_TIMEOUT`] on reads and writes, so a stuck peer
//! ends a fixture thread instead of holding it for ever.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The longest a fixture socket waits for one read or write.
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest message head (start line and headers) read.
pub const MAX_HEAD: u64 = 64 * 1024;

/// The largest body [`request`] reads into memory.
pub const MAX_BODY: u64 = 1 << 30;

/// A request or response head: its start line and its headers in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// `GET /v2/ HTTP/1.1` or `HTTP/1.1 200 OK`.
    pub start: String,
    /// The headers as received, names in their own case.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// A head with `start` and no headers.
    pub fn new(start: impl Into<String>) -> Head {
        Head {
            start: start.into(),
            headers: Vec::new(),
        }
    }

    /// A response head `HTTP/1.1 <code> <reason>`.
    pub fn response(code: u16) -> Head {
        Head::new(format!("HTTP/1.1 {code} {}", reason(code)))
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Replaces every header `name` by one with `value`.
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> &mut Head {
        self.remove(name);
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Removes every header `name`.
    pub fn remove(&mut self, name: &str) -> &mut Head {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    /// The request method (the start line's first word).
    pub fn method(&self) -> &str {
        self.start.split(' ').next().unwrap_or("")
    }

    /// The request target (the start line's second word).
    pub fn target(&self) -> &str {
        self.start.split(' ').nth(1).unwrap_or("")
    }

    /// The request target without its query.
    pub fn path(&self) -> &str {
        let t = self.target();
        t.split_once('?').map_or(t, |(p, _)| p)
    }

    /// The response status (the start line's second word), 0 if none.
    pub fn status(&self) -> u16 {
        self.target().parse().unwrap_or(0)
    }

    /// Whether the sender asked to close the connection after this
    /// message (`Connection: close`, or HTTP/1.0 without keep-alive).
    pub fn wants_close(&self) -> bool {
        let conn = self.header("connection").unwrap_or("");
        conn.eq_ignore_ascii_case("close")
            || (self.start.contains("HTTP/1.0") && !conn.eq_ignore_ascii_case("keep-alive"))
    }

    /// Writes the head, ending with the blank line.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(self.start.as_bytes());
        out.extend_from_slice(b"\r\n");
        for (n, v) in &self.headers {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        w.write_all(&out)
    }
}

/// The reason phrase of the status codes the fixtures answer with.
pub fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        206 => "Partial Content",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// Reads one line ending in LF (the LF and a CR before it removed), at
/// most `left` bytes, which it counts down.
fn read_line(r: &mut impl BufRead, left: &mut u64) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let n = r.by_ref().take(*left).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    *left -= n as u64;
    if line.last() != Some(&b'\n') {
        return Err(if *left == 0 {
            invalid("message head too long")
        } else {
            io::ErrorKind::UnexpectedEof.into()
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| invalid("head line not UTF-8"))
}

/// Reads a message head of at most [`MAX_HEAD`] bytes; `None` when the
/// peer closed the connection before its first byte.
pub fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut left = MAX_HEAD;
    let Some(start) = read_line(r, &mut left)? else {
        return Ok(None);
    };
    let mut head = Head::new(start);
    loop {
        let line = read_line(r, &mut left)?.ok_or(io::ErrorKind::UnexpectedEof)?;
        if line.is_empty() {
            return Ok(Some(head));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid("header without ':'"))?;
        head.headers
            .push((name.trim().to_owned(), value.trim().to_owned()));
    }
}

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the sender closes the connection (responses only).
    UntilClose,
}

impl Framing {
    /// The framing of a request's body.
    pub fn of_request(head: &Head) -> io::Result<Framing> {
        Framing::of(head, Framing::Empty)
    }

    /// The framing of the body of a response to a `method` request.
    pub fn of_response(head: &Head, method: &str) -> io::Result<Framing> {
        let code = head.status();
        if method == "HEAD" || (100..200).contains(&code) || code == 204 || code == 304 {
            return Ok(Framing::Empty);
        }
        Framing::of(head, Framing::UntilClose)
    }

    fn of(head: &Head, otherwise: Framing) -> io::Result<Framing> {
        if head
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            return Ok(Framing::Chunked);
        }
        match head.header("content-length") {
            Some(v) => v
                .parse()
                .map(Framing::Length)
                .map_err(|_| invalid("bad Content-Length")),
            None => Ok(otherwise),
        }
    }
}

/// The payload of a body, read as its [`Framing`] says (chunks decoded).
pub struct BodyReader<'a, R> {
    inner: &'a mut R,
    framing: Framing,
    /// Bytes left in the body (`Length`) or in the current chunk.
    left: u64,
    done: bool,
}

impl<'a, R: BufRead> BodyReader<'a, R> {
    /// A reader of the body that follows a head on `inner`.
    pub fn new(inner: &'a mut R, framing: Framing) -> BodyReader<'a, R> {
        let (left, done) = match framing {
            Framing::Empty => (0, true),
            Framing::Length(n) => (n, n == 0),
            Framing::Chunked => (0, false),
            Framing::UntilClose => (u64::MAX, false),
        };
        BodyReader {
            inner,
            framing,
            left,
            done,
        }
    }

    /// Reads the next chunk's size line (and, after the last chunk, the
    /// trailers); false at the body's end.
    fn next_chunk(&mut self) -> io::Result<bool> {
        let mut budget = MAX_HEAD;
        let line = read_line(self.inner, &mut budget)?.ok_or(io::ErrorKind::UnexpectedEof)?;
        let size = line.split(';').next().unwrap_or("").trim();
        self.left = u64::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
        if self.left > 0 {
            return Ok(true);
        }
        while !read_line(self.inner, &mut budget)?
            .ok_or(io::ErrorKind::UnexpectedEof)?
            .is_empty()
        {}
        Ok(false)
    }
}

impl<R: BufRead> Read for BodyReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.framing == Framing::Chunked && self.left == 0 && !self.next_chunk()? {
            self.done = true;
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            if self.framing == Framing::UntilClose {
                self.done = true;
                return Ok(0);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if self.framing != Framing::UntilClose {
            self.left -= n as u64;
        }
        if self.left == 0 {
            match self.framing {
                Framing::Chunked => {
                    let mut budget = 2;
                    if read_line(self.inner, &mut budget)? != Some(String::new()) {
                        return Err(invalid("chunk not followed by CRLF"));
                    }
                }
                _ => self.done = true,
            }
        }
        Ok(n)
    }
}

/// Writes a body's payload in a given [`Framing`] (chunks for
/// `Chunked`, the bytes as they are otherwise); [`BodyWriter::finish`]
/// writes the last chunk.
pub struct BodyWriter<'a, W: Write> {
    inner: &'a mut W,
    chunked: bool,
}

impl<'a, W: Write> BodyWriter<'a, W> {
    /// A writer of a body in `framing` onto `inner`.
    pub fn new(inner: &'a mut W, framing: Framing) -> BodyWriter<'a, W> {
        BodyWriter {
            inner,
            chunked: framing == Framing::Chunked,
        }
    }

    /// Writes `data` (one chunk when chunked; nothing for empty data).
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if self.chunked {
            write!(self.inner, "{:x}\r\n", data.len())?;
            self.inner.write_all(data)?;
            self.inner.write_all(b"\r\n")
        } else {
            self.inner.write_all(data)
        }
    }

    /// Flushes what was written, the body not ended.
    pub fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    /// Ends the body (the last chunk when chunked) and flushes.
    pub fn finish(self) -> io::Result<()> {
        if self.chunked {
            self.inner.write_all(b"0\r\n\r\n")?;
        }
        self.inner.flush()
    }
}

/// Copies a body from `r` to `w` in the same framing, at most `limit`
/// bytes of its payload, and flushes; the body is ended (its last chunk)
/// when it came whole within `limit`. Returns the payload bytes copied.
pub fn copy_body(
    r: &mut impl BufRead,
    w: &mut impl Write,
    framing: Framing,
    limit: u64,
) -> io::Result<u64> {
    let mut body = BodyReader::new(r, framing);
    let mut out = BodyWriter::new(w, framing);
    let mut buf = vec![0; 64 * 1024];
    let mut total = 0;
    while total < limit {
        let want = buf
            .len()
            .min(usize::try_from(limit - total).unwrap_or(usize::MAX));
        let n = body.read(&mut buf[..want])?;
        if n == 0 {
            return out.finish().map(|()| total);
        }
        out.write(&buf[..n])?;
        total += n as u64;
    }
    // At the limit: the body may end right there (a byte past it, if
    // any, is dropped with the rest).
    if body.read(&mut [0])? == 0 {
        return out.finish().map(|()| total);
    }
    out.flush().map(|()| total)
}

/// Writes a whole response: `head` (given a `Content-Length`) and `body`.
pub fn respond(w: &mut impl Write, mut head: Head, body: &[u8]) -> io::Result<()> {
    head.set("Content-Length", body.len().to_string());
    let mut out = Vec::with_capacity(256 + body.len());
    head.write_to(&mut out)?;
    out.extend_from_slice(body);
    w.write_all(&out)?;
    w.flush()
}

/// Connects to `addr` with [`IO_TIMEOUT`] on the socket.
pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    set_timeouts(&s)?;
    Ok(s)
}

/// Sets [`IO_TIMEOUT`] on a socket's reads and writes.
pub fn set_timeouts(s: &TcpStream) -> io::Result<()> {
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)
}

/// What [`request`] received.
#[derive(Clone, Debug)]
pub struct Response {
    /// The response head.
    pub head: Head,
    /// The body's payload as far as it came.
    pub body: Vec<u8>,
    /// Whether the body came whole (false when the connection was cut
    /// before its framing said it ended).
    pub complete: bool,
}

impl Response {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.head.status()
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }
}

/// Sends one request on a new connection to `addr` (`Host` set to it,
/// `Connection: close`, a `Content-Length` when `body` is not empty, and
/// `headers`), and reads the response, keeping a body cut short (see
/// [`Response::complete`]).
///
/// # Errors
/// When connecting, writing or reading the head fails.
pub fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let mut stream = connect(addr)?;
    let mut head = Head::new(format!("{method} {target} HTTP/1.1"));
    head.set("Host", addr.to_string())
        .set("Connection", "close");
    if !body.is_empty() || matches!(method, "PUT" | "POST" | "PATCH") {
        head.set("Content-Length", body.len().to_string());
    }
    for (n, v) in headers {
        head.set(n, *v);
    }
    let mut out = Vec::new();
    head.write_to(&mut out)?;
    out.extend_from_slice(body);
    stream.write_all(&out)?;
    let mut r = BufReader::new(stream);
    let head = loop {
        let head = read_head(&mut r)?.ok_or(io::ErrorKind::UnexpectedEof)?;
        if !(100..200).contains(&head.status()) {
            break head;
        }
    };
    let framing = Framing::of_response(&head, method)?;
    let mut payload = Vec::new();
    let complete = match BodyReader::new(&mut r, framing)
        .take(MAX_BODY)
        .read_to_end(&mut payload)
    {
        Ok(_) => true,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
            ) =>
        {
            false
        }
        Err(e) => return Err(e),
    };
    Ok(Response {
        head,
        body: payload,
        complete,
    })
}

/// Decodes `%XX` escapes and, when `plus` (form encoding), `+` as space.
pub fn percent_decode(s: &str, plus: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The `key=value` pairs of a query or form body, decoded, in order.
pub fn query_pairs(query: &str, plus: bool) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, plus), percent_decode(v, plus))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode_and_reencode() {
        let wire = b"4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\nTrailer: 1\r\n\r\nNEXT";
        let mut r = &wire[..];
        let mut out = Vec::new();
        let n = copy_body(&mut r, &mut out, Framing::Chunked, u64::MAX).unwrap();
        assert_eq!(n, 9);
        assert_eq!(r, b"NEXT", "the body ends where its framing says");
        let mut again = &out[..];
        let mut payload = Vec::new();
        BodyReader::new(&mut again, Framing::Chunked)
            .read_to_end(&mut payload)
            .unwrap();
        assert_eq!(payload, b"Wikipedia");
    }

    /// A reader giving at most a few bytes per read, as a socket may.
    struct Trickle<'a>(&'a [u8], u64);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1 = self
                .1
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let n = (1 + (self.1 >> 60) as usize)
                .min(buf.len())
                .min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn generated_bodies_survive_every_framing_split_and_limit() {
        for seed in 0..300u64 {
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut next = |m: u64| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % m
            };
            let payload: Vec<u8> = (0..next(3000)).map(|_| next(256) as u8).collect();
            let mut chunked = Vec::new();
            let mut rest = &payload[..];
            while !rest.is_empty() {
                let n = (1 + next(700) as usize).min(rest.len());
                chunked.extend_from_slice(format!("{n:X}\r\n").as_bytes());
                chunked.extend_from_slice(&rest[..n]);
                chunked.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            chunked.extend_from_slice(b"0\r\n\r\n");
            let len = payload.len() as u64;
            for (wire, framing) in [
                (&chunked, Framing::Chunked),
                (&payload, Framing::Length(len)),
                (&payload, Framing::UntilClose),
            ] {
                let limit = match seed % 3 {
                    0 => next(len + 1),
                    1 => len,
                    _ => u64::MAX,
                };
                let mut r = io::BufReader::with_capacity(7, Trickle(wire, seed));
                let mut out = Vec::new();
                let n = copy_body(&mut r, &mut out, framing, limit).unwrap();
                assert_eq!(n, len.min(limit), "seed {seed} {framing:?}");
                let mut back = Vec::new();
                let mut again = &out[..];
                let decoded = BodyReader::new(&mut again, framing).read_to_end(&mut back);
                assert_eq!(back, payload[..n as usize], "seed {seed} {framing:?}");
                // Cut short, a length or chunked body cannot read as whole.
                assert_eq!(decoded.is_ok(), n == len || framing == Framing::UntilClose);
            }
        }
    }

    #[test]
    fn a_short_length_body_is_an_unexpected_eof() {
        let mut r = &b"abc"[..];
        let err = BodyReader::new(&mut r, Framing::Length(5))
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn heads_are_bounded() {
        let long = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD as usize)
        );
        let err = read_head(&mut long.as_bytes()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let ok = read_head(&mut &b"HTTP/1.1 429 Too Many\r\nRetry-After: 2\r\n\r\n"[..])
            .unwrap()
            .unwrap();
        assert_eq!((ok.status(), ok.header("retry-after")), (429, Some("2")));
    }

    #[test]
    fn queries_decode() {
        assert_eq!(
            query_pairs("scope=repository%3Aa%2Fb%3Apull&x=a+b", true),
            [
                ("scope".to_owned(), "repository:a/b:pull".to_owned()),
                ("x".to_owned(), "a b".to_owned())
            ]
        );
        assert_eq!(percent_decode("100%", false), "100%");
        assert_eq!(percent_decode("%4", false), "%4");
    }
}
