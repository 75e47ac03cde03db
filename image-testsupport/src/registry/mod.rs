//! The registry fixtures: the real CNCF distribution server (Debian's
//! `docker-registry`) on 127.0.0.1, and a fault-injecting HTTP proxy to
//! put between a client and it.
//!
//! [`Registry::start`] writes a configuration file (storage in a temporary
//! directory, a free port, a fixed `http.secret` so that upload URLs stay
//! valid across [`Registry::restart`]) and waits until `/v2/` answers.
//! Its [`RegistryOptions`] choose the authentication (none, htpasswd
//! Basic auth, or token auth from a [`TokenServer`] in the test process)
//! and TLS (a CA and a server certificate made in the test). The
//! [`FaultProxy`] forwards HTTP/1.1 and injects faults by request path
//! and count: a response or an upload cut after N bytes, a 500 or 429, a
//! flipped byte, a redirect to another host; it counts the body bytes it
//! forwarded each way.
//!
//! A test that needs the registry starts it with
//! [`Registry::start_or_skip`], which skips loudly when `docker-registry`
//! is not installed (and fails under `CI=true`):
//!
//! ```no_run
//! use image_testsupport::registry::{Registry, RegistryOptions};
//!
//! let Some(registry) = Registry::start_or_skip(RegistryOptions::basic()) else {
//!     return;
//! };
//! let creds = registry.credentials().unwrap();
//! println!("push to {} as {}", registry.host_port(), creds.user);
//! ```

mod certs;
pub mod http;
mod proxy;
mod token;

use std::fmt;
use std::fs;
use std::io::{BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use proxy::{Exchange, Fault, FaultKind, FaultProxy, Faults, RedirectHit};
pub use token::{TokenRequest, TokenServer, ISSUER, SERVICE};

use crate::{process, tools};

/// The distribution server's program.
pub const PROGRAM: &str = "docker-registry";

/// How long [`Registry::start`] and [`Registry::restart`] wait for `/v2/`.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`Registry::stop`] waits after SIGTERM before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A user and password (Basic auth, or the token server's account). The
/// password is not shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

impl Credentials {
    /// `user` with `password`.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }

    /// `user:password`, as skopeo's `--creds` takes it.
    pub fn colon(&self) -> String {
        format!("{}:{}", self.user, self.password)
    }

    /// The `Authorization` header value of Basic auth.
    pub fn basic_header(&self) -> String {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(self.colon())
        )
    }

    fn test_user() -> Credentials {
        Credentials::new("tester", format!("pw-{}", token::random_hex(8)))
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How the registry authenticates clients.
#[derive(Clone, Debug, Default)]
pub enum Auth {
    /// Anyone may pull and push.
    #[default]
    None,
    /// htpasswd Basic auth with one user (a bcrypt line made in Rust).
    Basic(Credentials),
    /// Token auth: the registry's challenge names a [`TokenServer`] in
    /// the test process, which issues tokens to `credentials` (to anyone
    /// when `None`), valid for `ttl`.
    Token {
        /// Who may get a token; `None`: anyone, without credentials.
        credentials: Option<Credentials>,
        /// The tokens' lifetime (`expires_in`; distribution adds 60 s of
        /// leeway to `exp`).
        ttl: Duration,
    },
}

/// What kind of registry [`Registry::start`] starts.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Authentication.
    pub auth: Auth,
    /// Whether it serves HTTPS with a server certificate for 127.0.0.1
    /// signed by a CA made in the test ([`Registry::ca_pem`]).
    pub tls: bool,
}

impl RegistryOptions {
    /// No auth, plain HTTP.
    pub fn plain() -> RegistryOptions {
        RegistryOptions::default()
    }

    /// htpasswd Basic auth for a user `tester` with a random password.
    pub fn basic() -> RegistryOptions {
        RegistryOptions {
            auth: Auth::Basic(Credentials::test_user()),
            tls: false,
        }
    }

    /// Token auth; the token server wants user `tester` with a random
    /// password; tokens live 300 s.
    pub fn token() -> RegistryOptions {
        RegistryOptions {
            auth: Auth::Token {
                credentials: Some(Credentials::test_user()),
                ttl: Duration::from_secs(300),
            },
            tls: false,
        }
    }

    /// The same options, with TLS.
    pub fn with_tls(mut self) -> RegistryOptions {
        self.tls = true;
        self
    }
}

/// Whether `docker-registry` is installed; when not, a loud skip (a
/// failure under `CI=true`), as [`tools::have`].
pub fn available() -> bool {
    tools::have(PROGRAM)
}

/// A running distribution server; killed, and its storage removed, on
/// drop.
pub struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    options: RegistryOptions,
    token: Option<TokenServer>,
    child: Option<Child>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("url", &self.url())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// [`available`], then [`Registry::start`]; `None` after a loud skip.
    pub fn start_or_skip(options: RegistryOptions) -> Option<Registry> {
        available().then(|| Registry::start(options))
    }

    /// Starts the registry with `options` on a free port of 127.0.0.1 and
    /// waits until `/v2/` answers.
    ///
    /// # Panics
    /// When `docker-registry` is not installed (call [`available`] or use
    /// [`Registry::start_or_skip`] to skip instead), or it does not start
    /// within [`START_TIMEOUT`] (the panic shows its log).
    pub fn start(options: RegistryOptions) -> Registry {
        assert!(
            tools::which(PROGRAM).is_some(),
            "{PROGRAM} is not installed (scripts/install-deps.sh installs it)"
        );
        let dir = tempfile::tempdir().expect("registry tempdir");
        fs::create_dir(dir.path().join("storage")).expect("registry storage");
        let token = match &options.auth {
            Auth::None => None,
            Auth::Basic(c) => {
                let line = format!(
                    "{}:{}\n",
                    c.user,
                    bcrypt::hash_with_result(&c.password, 4)
                        .expect("bcrypt")
                        .format_for_version(bcrypt::Version::TwoY)
                );
                fs::write(dir.path().join("htpasswd"), line).expect("write htpasswd");
                None
            }
            Auth::Token { credentials, ttl } => {
                let signer = certs::token_signer();
                fs::write(dir.path().join("token-signer.pem"), signer.cert.pem())
                    .expect("write the token signer's certificate");
                Some(TokenServer::start(&signer, credentials.clone(), *ttl))
            }
        };
        if options.tls {
            let ca = certs::ca("image-testsupport CA");
            let server = certs::server(&ca);
            let certs_dir = dir.path().join("certs");
            fs::create_dir(&certs_dir).expect("certs dir");
            fs::write(certs_dir.join("ca.crt"), ca.cert.pem()).expect("write ca.crt");
            fs::write(dir.path().join("server.crt"), server.cert.pem()).expect("server.crt");
            fs::write(dir.path().join("server.key"), server.key.serialize_pem()).expect("key");
        }
        let mut registry = Registry {
            dir,
            port: 0,
            options,
            token,
            child: None,
        };
        let secret = token::random_hex(16);
        // Another process may take the free port before the registry binds
        // it: then it exits, and the next try has another port.
        for _ in 0..5 {
            registry.port = free_port();
            registry.write_config(&secret);
            if registry.spawn() {
                return registry;
            }
        }
        panic!("{PROGRAM} did not start:\n{}", registry.log());
    }

    fn write_config(&self, secret: &str) {
        let d = self.dir.path();
        let mut yaml = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: {secret}\n",
            storage = d.join("storage").display(),
            port = self.port,
        );
        if self.options.tls {
            yaml += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                d.join("server.crt").display(),
                d.join("server.key").display()
            );
        }
        match (&self.options.auth, &self.token) {
            (Auth::Basic(_), _) => {
                yaml += &format!(
                    "auth:\n  htpasswd:\n    realm: image-testsupport\n    path: {}\n",
                    d.join("htpasswd").display()
                );
            }
            (Auth::Token { .. }, Some(token)) => {
                yaml += &format!(
                    "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                    token.realm(),
                    d.join("token-signer.pem").display()
                );
            }
            _ => {}
        }
        fs::write(self.config_path(), yaml).expect("write the registry config");
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    /// Spawns the server and waits until `/v2/` answers: false when it
    /// exited first (the port was taken), a panic on timeout.
    fn spawn(&mut self) -> bool {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the registry log");
        let mut cmd = Command::new(PROGRAM);
        cmd.arg("serve")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .process_group(0);
        // The environment overrides the config file (REGISTRY_HTTP_ADDR...).
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("REGISTRY_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd.spawn().expect("spawn docker-registry");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("child");
            if child.try_wait().expect("wait").is_some() {
                self.child = None;
                return false;
            }
            if self.answers() {
                return true;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "{PROGRAM} did not answer /v2/ within {START_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether `/v2/` answers as this registry should: 200, 401 with
    /// auth, and for TLS the 400 Go's server gives a plain-HTTP request
    /// on an HTTPS port (which proves it serves, without a TLS client).
    fn answers(&self) -> bool {
        let expected = match (self.options.tls, &self.options.auth) {
            (true, _) => 400,
            (false, Auth::None) => 200,
            (false, _) => 401,
        };
        let Ok(s) = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut w = &s;
        let probe = format!(
            "GET /v2/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.host_port()
        );
        if w.write_all(probe.as_bytes()).is_err() {
            return false;
        }
        matches!(http::read_head(&mut BufReader::new(&s)), Ok(Some(h)) if h.status() == expected)
    }

    /// `http://127.0.0.1:<port>`, or `https://` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.host_port())
    }

    /// `127.0.0.1:<port>`, the registry part of a reference.
    pub fn host_port(&self) -> String {
        self.addr().to_string()
    }

    /// The socket address (for [`FaultProxy::start`]).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port))
    }

    /// The options it was started with.
    pub fn options(&self) -> &RegistryOptions {
        &self.options
    }

    /// With TLS, the PEM file of the CA that signed the server's
    /// certificate (`ca.crt` in [`Registry::cert_dir`]).
    pub fn ca_pem(&self) -> Option<PathBuf> {
        self.cert_dir().map(|d| d.join("ca.crt"))
    }

    /// With TLS, a directory holding only `ca.crt`, as skopeo's
    /// `--dest-cert-dir`/`--src-cert-dir` and podman's `--cert-dir` take.
    pub fn cert_dir(&self) -> Option<PathBuf> {
        self.options.tls.then(|| self.dir.path().join("certs"))
    }

    /// The user that may push and pull (Basic auth), or that the token
    /// server issues tokens to.
    pub fn credentials(&self) -> Option<&Credentials> {
        match &self.options.auth {
            Auth::None => None,
            Auth::Basic(c) => Some(c),
            Auth::Token { credentials, .. } => credentials.as_ref(),
        }
    }

    /// With token auth, the token server.
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token.as_ref()
    }

    /// With token auth, every request its token server answered so far.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.token
            .as_ref()
            .map(TokenServer::requests)
            .unwrap_or_default()
    }

    /// The storage directory (`rootdirectory` of the filesystem driver).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// The server's log so far (every run of it, appended).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Stops the server: SIGTERM to its process group, SIGKILL after
    /// [`STOP_TIMEOUT`]; reaps it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = i32::try_from(child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        process::kill_group(&mut child);
    }

    /// Kills the server (SIGKILL to its process group), as a crash would,
    /// and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::kill_group(&mut child);
        }
    }

    /// Stops the server if it runs and starts it again: the same storage,
    /// port, secret and configuration; waits until `/v2/` answers.
    ///
    /// # Panics
    /// When it does not start again (its port taken meanwhile).
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn(),
            "{PROGRAM} did not start again on port {}:\n{}",
            self.port,
            self.log()
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port of 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Accepts connections on `listener` until `stop`, each served by
/// `handle` on a thread of its own with [`http::IO_TIMEOUT`] on it.
fn serve<S: Send + Sync + 'static>(
    listener: &TcpListener,
    stop: &AtomicBool,
    state: Arc<S>,
    handle: fn(TcpStream, Arc<S>),
) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(conn) = conn else { continue };
        if http::set_timeouts(&conn).is_err() {
            continue;
        }
        let state = state.clone();
        std::thread::spawn(move || handle(conn, state));
    }
}

/// Ends a [`serve`] loop: sets `stop`, wakes its `accept` with a
/// connection, and joins it.
fn stop_accepting(addr: SocketAddr, stop: &AtomicBool, accept: Option<JoinHandle<()>>) {
    stop.store(true, Ordering::SeqCst);
    let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    if let Some(t) = accept {
        let _ = t.join();
    }
}

/// Where the filesystem driver under `storage` ([`Registry::storage`])
/// keeps the data of the blob `sha256:<digest_hex>`.
pub fn blob_data_path(storage: &Path, digest_hex: &str) -> PathBuf {
    storage.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{digest_hex}/data",
        &digest_hex[..2]
    ))
}
