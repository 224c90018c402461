//! What a request tells the balancer: client address, session, hash key, and
//! the endpoints already tried.

use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use http::HeaderName;

use super::hash::stable_hash;

/// The request context of the imperative API
/// ([`LoadBalancer::select_instance`](crate::LoadBalancer::select_instance)):
/// the client's address (for ip-hash), a session id (for sticky sessions)
/// and an explicit hash key (which takes precedence over the address).
///
/// ```
/// use fluxor_registry::RequestContext;
///
/// let ctx = RequestContext::default()
///     .client_ip("203.0.113.7".parse().unwrap())
///     .session_id("user-42");
/// assert_eq!(ctx.session_id.as_deref(), Some("user-42"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestContext {
    /// The client's IP address.
    pub client_ip: Option<IpAddr>,
    /// The session the request belongs to.
    pub session_id: Option<String>,
    /// A key to hash instead of the client address.
    pub hash_key: Option<String>,
}

impl RequestContext {
    /// Sets the client address.
    pub fn client_ip(mut self, ip: IpAddr) -> Self {
        self.client_ip = Some(ip);
        self
    }

    /// Sets the session id.
    pub fn session_id(mut self, id: impl Into<String>) -> Self {
        self.session_id = Some(id.into());
        self
    }

    /// Sets the hash key.
    pub fn hash_key(mut self, key: impl Into<String>) -> Self {
        self.hash_key = Some(key.into());
        self
    }

    /// The keys a balancer uses.
    pub fn keys(&self) -> RequestKeys {
        let mut keys = RequestKeys::new();
        if let Some(ip) = self.client_ip {
            keys = keys.client_ip(ip);
        }
        if let Some(s) = &self.session_id {
            keys = keys.session(s.as_str());
        }
        if let Some(k) = &self.hash_key {
            keys = keys.hash_key(k.as_str());
        }
        keys
    }
}

/// What a request contributes to the choice of endpoint, as hashes (so that
/// extracting it allocates nothing): from an [`ExtractContext`].
#[derive(Debug, Clone, Default)]
pub struct RequestKeys {
    client: Option<u64>,
    key: Option<u64>,
    session: Option<u64>,
    tried: Option<TriedEndpoints>,
}

impl RequestKeys {
    /// No keys: ip-hash then picks at random.
    pub fn new() -> Self {
        Self::default()
    }

    /// The client's address, for ip-hash.
    pub fn client_ip(mut self, ip: IpAddr) -> Self {
        self.client = Some(stable_hash(&ip));
        self
    }

    /// A key hashed instead of the client address.
    pub fn hash_key<K: Hash + ?Sized>(mut self, key: &K) -> Self {
        self.key = Some(stable_hash(key));
        self
    }

    /// The session, for sticky sessions.
    pub fn session<S: Hash + ?Sized>(mut self, session: &S) -> Self {
        self.session = Some(stable_hash(session));
        self
    }

    /// Endpoints to avoid, and to record the chosen one in.
    pub fn tried(mut self, tried: TriedEndpoints) -> Self {
        self.tried = Some(tried);
        self
    }

    pub(crate) fn hash(&self) -> Option<u64> {
        self.key.or(self.client)
    }

    pub(crate) fn session_hash(&self) -> Option<u64> {
        self.session
    }

    pub(crate) fn tried_list(&self) -> Option<&TriedEndpoints> {
        self.tried.as_ref()
    }
}

/// The endpoints a request has been sent to, shared by every clone of the
/// request (Envoy's `previous_hosts`).
///
/// Put one in an `http::Request`'s extensions before a retry layer: the
/// balancer records each endpoint it sends the request to, and avoids those
/// on the next attempt while others are ready. `tower::retry` clones the
/// request for each attempt, and the clones share this list.
#[derive(Debug, Clone, Default)]
pub struct TriedEndpoints {
    inner: Arc<Mutex<Vec<u64>>>,
}

impl TriedEndpoints {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many endpoints were tried.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the endpoint with this key was tried.
    pub fn contains_key<K: Hash + ?Sized>(&self, key: &K) -> bool {
        self.contains(stable_hash(key))
    }

    pub(crate) fn contains(&self, endpoint: u64) -> bool {
        self.inner.lock().is_ok_and(|v| v.contains(&endpoint))
    }

    pub(crate) fn push(&self, endpoint: u64) {
        if let Ok(mut v) = self.inner.lock() {
            v.push(endpoint);
        }
    }
}

/// Extracts [`RequestKeys`] from a request, for the strategies that need
/// them (ip-hash, sticky sessions) and for [`TriedEndpoints`].
///
/// Implemented by [`NoContext`], [`HttpContext`] (for `http::Request`) and
/// every `Fn(&Req) -> RequestKeys`.
pub trait ExtractContext<Req> {
    /// The keys of `req`.
    fn extract(&self, req: &Req) -> RequestKeys;
}

/// Extracts nothing: the default for requests of any type.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoContext;

impl<Req> ExtractContext<Req> for NoContext {
    fn extract(&self, _: &Req) -> RequestKeys {
        RequestKeys::default()
    }
}

impl<Req, F> ExtractContext<Req> for F
where
    F: Fn(&Req) -> RequestKeys,
{
    fn extract(&self, req: &Req) -> RequestKeys {
        self(req)
    }
}

/// Extracts keys from an `http::Request`.
///
/// * client address: the `SocketAddr` in the request's extensions (put
///   there by a hyper server), or, with the `axum` feature, axum's
///   `ConnectInfo<SocketAddr>` (from
///   `into_make_service_with_connect_info::<SocketAddr>()`); when that peer is a
///   trusted proxy, the right-most address of `X-Forwarded-For` that is not
///   a trusted proxy. `X-Forwarded-For` from anyone else is ignored: it is
///   whatever the client wrote.
/// * session: a cookie or a header, when configured.
/// * hash key: a header, when configured.
/// * [`TriedEndpoints`] from the extensions.
///
/// ```
/// use fluxor_registry::balance::{ExtractContext, HttpContext};
///
/// let ctx = HttpContext::new().trusted_proxy("10.0.0.1".parse().unwrap()).session_cookie("sid");
/// let mut req = http::Request::get("/")
///     .header("x-forwarded-for", "198.51.100.9, 10.0.0.1")
///     .header("cookie", "theme=dark; sid=abc123")
///     .body(())
///     .unwrap();
/// req.extensions_mut().insert(std::net::SocketAddr::from(([10, 0, 0, 1], 4000)));
/// let keys = ctx.extract(&req);
/// # let _ = keys;
/// ```
#[derive(Debug, Clone, Default)]
pub struct HttpContext {
    trusted: Vec<IpAddr>,
    session_cookie: Option<String>,
    session_header: Option<HeaderName>,
    hash_header: Option<HeaderName>,
}

impl HttpContext {
    /// Client address from the connection only; no session, no hash header.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts `X-Forwarded-For` from this proxy.
    pub fn trusted_proxy(mut self, ip: IpAddr) -> Self {
        self.trusted.push(ip);
        self
    }

    /// Reads the session id from this cookie.
    pub fn session_cookie(mut self, name: impl Into<String>) -> Self {
        self.session_cookie = Some(name.into());
        self
    }

    /// Reads the session id from this header.
    pub fn session_header(mut self, name: HeaderName) -> Self {
        self.session_header = Some(name);
        self
    }

    /// Hashes this header's value instead of the client address.
    pub fn hash_header(mut self, name: HeaderName) -> Self {
        self.hash_header = Some(name);
        self
    }

    /// The client address of `req`, by the rules above.
    pub fn client_ip<B>(&self, req: &http::Request<B>) -> Option<IpAddr> {
        let peer = peer_addr(req)?.ip();
        if !self.trusted.contains(&peer) {
            return Some(peer);
        }
        let mut leftmost = None;
        for value in req.headers().get_all("x-forwarded-for").iter().rev() {
            let Ok(text) = value.to_str() else { continue };
            for hop in text.rsplit(',') {
                let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                    continue;
                };
                if !self.trusted.contains(&ip) {
                    return Some(ip);
                }
                leftmost = Some(ip);
            }
        }
        Some(leftmost.unwrap_or(peer))
    }

    fn session<'a, B>(&self, req: &'a http::Request<B>) -> Option<&'a str> {
        if let Some(name) = &self.session_header
            && let Some(v) = req.headers().get(name).and_then(|v| v.to_str().ok())
        {
            return Some(v);
        }
        let cookie = self.session_cookie.as_deref()?;
        req.headers()
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == cookie)
            .map(|(_, value)| value)
    }
}

/// The connection's peer: a `SocketAddr` extension (as a hyper server puts
/// it), else axum's `ConnectInfo<SocketAddr>` (feature `axum`).
fn peer_addr<B>(req: &http::Request<B>) -> Option<SocketAddr> {
    let ext = req.extensions();
    let direct = ext.get::<SocketAddr>().copied();
    #[cfg(feature = "axum")]
    let direct = direct.or_else(|| {
        ext.get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|info| info.0)
    });
    direct
}

impl<B> ExtractContext<http::Request<B>> for HttpContext {
    fn extract(&self, req: &http::Request<B>) -> RequestKeys {
        let mut keys = RequestKeys::new();
        if let Some(ip) = self.client_ip(req) {
            keys = keys.client_ip(ip);
        }
        if let Some(session) = self.session(req) {
            keys = keys.session(session);
        }
        if let Some(name) = &self.hash_header
            && let Some(v) = req.headers().get(name)
        {
            // Hash text as text, as `RequestContext::hash_key` does, so both
            // faces map one key to the same endpoint.
            keys = match v.to_str() {
                Ok(text) => keys.hash_key(text),
                Err(_) => keys.hash_key(v.as_bytes()),
            };
        }
        if let Some(tried) = req.extensions().get::<TriedEndpoints>() {
            keys = keys.tried(tried.clone());
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(peer: [u8; 4], xff: Option<&str>) -> http::Request<()> {
        let mut b = http::Request::get("/");
        if let Some(x) = xff {
            b = b.header("x-forwarded-for", x);
        }
        let mut r = b.body(()).unwrap();
        r.extensions_mut().insert(SocketAddr::from((peer, 1)));
        r
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let ctx = HttpContext::new()
            .trusted_proxy("10.0.0.1".parse().unwrap())
            .trusted_proxy("10.0.0.2".parse().unwrap());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            ctx.client_ip(&req([192, 0, 2, 1], Some("1.1.1.1"))),
            Some(ip("192.0.2.1")),
            "untrusted peer: XFF ignored"
        );
        assert_eq!(
            ctx.client_ip(&req([10, 0, 0, 1], Some("6.6.6.6, 198.51.100.9, 10.0.0.2"))),
            Some(ip("198.51.100.9")),
            "right-most untrusted"
        );
        assert_eq!(
            ctx.client_ip(&req([10, 0, 0, 1], None)),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(
            ctx.client_ip(&http::Request::get("/").body(()).unwrap()),
            None
        );
    }

    #[cfg(feature = "axum")]
    #[test]
    fn client_address_from_axum_connect_info() {
        let ctx = HttpContext::new().trusted_proxy("10.0.0.1".parse().unwrap());
        let mut r = http::Request::get("/")
            .header("x-forwarded-for", "198.51.100.9")
            .body(())
            .unwrap();
        r.extensions_mut()
            .insert(axum::extract::ConnectInfo(SocketAddr::from((
                [192, 0, 2, 7],
                1,
            ))));
        assert_eq!(ctx.client_ip(&r), Some("192.0.2.7".parse().unwrap()));
        // The same rules apply: a trusted proxy's X-Forwarded-For counts.
        r.extensions_mut()
            .insert(axum::extract::ConnectInfo(SocketAddr::from((
                [10, 0, 0, 1],
                1,
            ))));
        assert_eq!(ctx.client_ip(&r), Some("198.51.100.9".parse().unwrap()));
        // A plain SocketAddr extension still comes first.
        r.extensions_mut()
            .insert(SocketAddr::from(([192, 0, 2, 8], 1)));
        assert_eq!(ctx.client_ip(&r), Some("192.0.2.8".parse().unwrap()));
    }

    #[test]
    fn session_from_cookie_or_header() {
        let ctx = HttpContext::new()
            .session_cookie("sid")
            .session_header(HeaderName::from_static("x-session"));
        let r = http::Request::get("/")
            .header("cookie", "a=1; sid=xyz")
            .body(())
            .unwrap();
        assert_eq!(ctx.session(&r), Some("xyz"));
        let r = http::Request::get("/")
            .header("x-session", "hdr")
            .header("cookie", "sid=xyz")
            .body(())
            .unwrap();
        assert_eq!(ctx.session(&r), Some("hdr"));
        let r = http::Request::get("/")
            .header("cookie", "sidx=1")
            .body(())
            .unwrap();
        assert_eq!(ctx.session(&r), None);
    }
}
