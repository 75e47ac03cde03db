//! The token server of token auth: the `realm` a registry's `Bearer`
//! challenge names. It answers `GET <realm>?service=..&scope=..` (Basic
//! credentials in `Authorization`) and the OAuth2 form `POST <realm>`
//! (`grant_type=password` or `refresh_token`), as Docker's token
//! specification describes, with a JWT distribution trusts: ES256, signed
//! by the key of a self-signed certificate that is the registry's
//! `rootcertbundle` and the token's `x5c`. It grants every scope asked
//! for to a caller with the right credentials (to anyone when it has
//! none), and records each request for the test.

use std::io::{BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

use super::certs::Issued;
use super::http::{self, Head};
use super::Credentials;

/// The `service` the registry names and tokens are issued for.
pub const SERVICE: &str = "image-testsupport-registry";

/// The `issuer` of the tokens, which the registry trusts.
pub const ISSUER: &str = "image-testsupport-token-server";

/// The largest form body read.
const MAX_FORM: u64 = 64 * 1024;

/// One request the token server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// The `service` asked for.
    pub service: Option<String>,
    /// The scopes asked for, in order (`repository:x:pull,push`), each
    /// `scope` parameter of a GET, or the space-separated ones of a POST.
    pub scopes: Vec<String>,
    /// The user the caller authenticated as, if any.
    pub account: Option<String>,
    /// The OAuth2 `grant_type` of a POST.
    pub grant_type: Option<String>,
    /// Whether a token was issued (false: 401).
    pub granted: bool,
}

struct State {
    signer: EcdsaKeyPair,
    x5c: String,
    credentials: Option<Credentials>,
    ttl: Duration,
    refresh_token: String,
    requests: Mutex<Vec<TokenRequest>>,
}

/// A token server on 127.0.0.1, a thread per connection; stopped on drop.
pub struct TokenServer {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl TokenServer {
    /// Starts a token server signing with `signer`, requiring
    /// `credentials` when given, issuing tokens valid for `ttl`
    /// (distribution adds 60 s of leeway to `exp`).
    pub(crate) fn start(signer: &Issued, credentials: Option<Credentials>, ttl: Duration) -> Self {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &signer.key.serialize_der(),
            &rng,
        )
        .expect("the token key as ring's ECDSA key");
        let state = Arc::new(State {
            signer: key,
            x5c: STANDARD.encode(signer.cert.der()),
            credentials,
            ttl,
            refresh_token: format!("refresh-{}", random_hex(16)),
            requests: Mutex::new(Vec::new()),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the token server");
        let addr = listener.local_addr().expect("token server address");
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || super::serve(&listener, &stop, state, serve_connection))
        };
        TokenServer {
            addr,
            state,
            stop,
            accept: Some(accept),
        }
    }

    /// The realm URL (`http://127.0.0.1:<port>/token`).
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.requests.lock().expect("token log").clone()
    }

    /// A token granting `scopes`, signed as the server signs them, without
    /// a request (for a raw client in a test).
    pub fn issue(&self, scopes: &[&str]) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        self.state.jwt(None, &scopes)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        super::stop_accepting(self.addr, &self.stop, self.accept.take());
    }
}

/// Random bytes as lowercase hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut b = vec![0; bytes];
    SystemRandom::new().fill(&mut b).expect("random bytes");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `access` claim entry of a scope `type:name:actions` (the name may
/// hold colons: the type ends at the first, the actions start after the
/// last).
fn access(scope: &str) -> Option<serde_json::Value> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    let actions: Vec<&str> = actions.split(',').filter(|a| !a.is_empty()).collect();
    Some(serde_json::json!({ "type": kind, "name": name, "actions": actions }))
}

impl State {
    fn jwt(&self, account: Option<&str>, scopes: &[String]) -> String {
        let now = now();
        let header = serde_json::json!({ "typ": "JWT", "alg": "ES256", "x5c": [self.x5c] });
        let claims = serde_json::json!({
            "iss": ISSUER,
            "sub": account.unwrap_or(""),
            "aud": SERVICE,
            "exp": now + self.ttl.as_secs(),
            "nbf": now,
            "iat": now,
            "jti": random_hex(12),
            "access": scopes.iter().filter_map(|s| access(s)).collect::<Vec<_>>(),
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .signer
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .expect("sign the token");
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// Who the Basic `Authorization` header names, if its password is
    /// right.
    fn basic_user(&self, head: &Head) -> Option<String> {
        let value = head.header("authorization")?;
        let (scheme, b64) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = String::from_utf8(STANDARD.decode(b64.trim()).ok()?).ok()?;
        let (user, password) = decoded.split_once(':')?;
        self.check(user, password)
    }

    fn check(&self, user: &str, password: &str) -> Option<String> {
        match &self.credentials {
            Some(c) if c.user == user && c.password == password => Some(user.to_owned()),
            _ => None,
        }
    }

    /// Answers one request: the record of it, and the response.
    fn answer(&self, head: &Head, form: &str) -> (TokenRequest, Head, Vec<u8>) {
        let query = head.target().split_once('?').map_or("", |(_, q)| q);
        let post = head.method() == "POST";
        let pairs = http::query_pairs(if post { form } else { query }, post);
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let scopes: Vec<String> = if post {
            get("scope")
                .map(|s| {
                    s.split(' ')
                        .filter(|x| !x.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        } else {
            pairs
                .iter()
                .filter(|(k, _)| k == "scope")
                .map(|(_, v)| v.clone())
                .collect()
        };
        let grant_type = post.then(|| get("grant_type")).flatten();
        let account = if post {
            match grant_type.as_deref() {
                Some("password") => self.check(
                    &get("username").unwrap_or_default(),
                    &get("password").unwrap_or_default(),
                ),
                Some("refresh_token") => self.credentials.as_ref().and_then(|c| {
                    (get("refresh_token").as_deref() == Some(&self.refresh_token))
                        .then(|| c.user.clone())
                }),
                _ => None,
            }
        } else {
            self.basic_user(head)
        };
        let granted = account.is_some() || self.credentials.is_none();
        let record = TokenRequest {
            method: head.method().to_owned(),
            service: get("service"),
            scopes: scopes.clone(),
            account: account.clone(),
            grant_type,
            granted,
        };
        if head.path() != "/token" || !matches!(head.method(), "GET" | "POST") {
            return (record, Head::response(404), Vec::new());
        }
        if !granted {
            let mut h = Head::response(401);
            h.set(
                "WWW-Authenticate",
                "Basic realm=\"image-testsupport token server\"",
            );
            return (record, h, br#"{"details":"wrong credentials"}"#.to_vec());
        }
        let token = self.jwt(account.as_deref(), &scopes);
        let mut body = serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": self.ttl.as_secs(),
        });
        if post && account.is_some() {
            body["refresh_token"] = self.refresh_token.clone().into();
        }
        let mut h = Head::response(200);
        h.set("Content-Type", "application/json");
        (record, h, body.to_string().into_bytes())
    }
}

fn serve_connection(stream: TcpStream, state: Arc<State>) {
    let Ok(mut w) = stream.try_clone() else {
        return;
    };
    let mut r = BufReader::new(stream);
    while let Ok(Some(head)) = http::read_head(&mut r) {
        let mut form = String::new();
        let framing = http::Framing::of_request(&head);
        let read = framing.and_then(|f| {
            http::BodyReader::new(&mut r, f)
                .take(MAX_FORM)
                .read_to_string(&mut form)
        });
        if read.is_err() {
            return;
        }
        let (record, reply, body) = state.answer(&head, &form);
        state.requests.lock().expect("token log").push(record);
        if http::respond(&mut w, reply, &body).is_err() || head.wants_close() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_split_at_the_first_and_last_colon() {
        assert_eq!(
            access("repository:127.0.0.1:5000/a:pull,push").unwrap(),
            serde_json::json!({"type": "repository", "name": "127.0.0.1:5000/a", "actions": ["pull", "push"]})
        );
        assert_eq!(
            access("registry:catalog:*").unwrap()["actions"],
            serde_json::json!(["*"])
        );
        assert!(access("nonsense").is_none());
    }
}
