//! HTTP checks through one shared hyper client.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::config::HttpProbe;
use super::output::{Outcome, truncate};
use crate::instance::{HealthStatus, ServiceInstance};

/// How much of a body is kept to look for an expected substring.
const MAX_BODY: usize = 64 * 1024;

/// The client every HTTP check shares: its pool keeps connections to each
/// instance alive between rounds. It never follows redirects.
pub(crate) type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub(crate) fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// `http://host:port{path}`: checks speak plain HTTP whatever the
/// instance's protocol (`https` instances are refused up front).
pub(crate) fn url(instance: &ServiceInstance, spec: &HttpProbe) -> String {
    format!("http://{}{}", instance.authority(), spec.path)
}

/// Consul's rule: 2xx passing, 429 warning, anything else critical.
pub(crate) fn classify(status: StatusCode) -> HealthStatus {
    if status.is_success() {
        HealthStatus::Passing
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        HealthStatus::Warning
    } else {
        HealthStatus::Critical
    }
}

/// Runs one HTTP check; `uri` is the cached request URI, if built.
pub(crate) async fn probe(
    client: &HttpClient,
    spec: &HttpProbe,
    instance: &ServiceInstance,
    uri: Option<&Uri>,
    max_output: usize,
) -> Outcome {
    let uri = match uri {
        Some(uri) => uri.clone(),
        None => {
            let url = url(instance, spec);
            match url.parse::<Uri>() {
                Ok(uri) => uri,
                Err(e) => return Outcome::critical(format!("{} {url}: {e}", spec.method)),
            }
        }
    };
    let url = &uri;
    let request = match build(spec, uri.clone()) {
        Ok(request) => request,
        Err(e) => return Outcome::critical(format!("{} {url}: {e}", spec.method)),
    };
    let response = match client.request(request).await {
        Ok(response) => response,
        Err(e) => {
            let source = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            return Outcome::critical(format!("{} {url}: {e}{source}", spec.method));
        }
    };
    let status = response.status();
    let mut body = response.into_body();
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    let room = MAX_BODY.saturating_sub(kept.len());
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Err(e) => {
                return Outcome::critical(format!(
                    "{} {url}: {status}, reading the body failed: {e}",
                    spec.method
                ));
            }
        }
    }
    let text = String::from_utf8_lossy(&kept);
    let mut result = match spec.expect_status {
        Some(expected) if status.as_u16() == expected => HealthStatus::Passing,
        Some(_) => HealthStatus::Critical,
        None => classify(status),
    };
    let mut note = String::new();
    if let Some(needle) = &spec.expect_body
        && !text.contains(needle.as_str())
    {
        result = HealthStatus::Critical;
        note = format!(" (body lacks {needle:?})");
    }
    let output = format!("{} {url}: {status}{note}\n{text}", spec.method);
    Outcome {
        status: result,
        output: truncate(output, max_output),
    }
}

fn build(spec: &HttpProbe, uri: Uri) -> Result<Request<Empty<Bytes>>, http::Error> {
    let mut request = Request::builder()
        .method(Method::from_bytes(spec.method.as_bytes())?)
        .uri(uri)
        .header(
            header::USER_AGENT,
            HeaderValue::from_static("fluxor-registry health check"),
        )
        .body(Empty::new())?;
    for (name, value) in &spec.headers {
        request.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes())?,
            HeaderValue::from_str(value)?,
        );
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consul_status_rule() {
        for (code, want) in [
            (200, HealthStatus::Passing),
            (204, HealthStatus::Passing),
            (299, HealthStatus::Passing),
            (301, HealthStatus::Critical),
            (404, HealthStatus::Critical),
            (429, HealthStatus::Warning),
            (500, HealthStatus::Critical),
            (503, HealthStatus::Critical),
        ] {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT);
            assert_eq!(classify(status), want, "{code}");
        }
    }
}
