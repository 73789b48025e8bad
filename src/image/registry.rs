//! The OCI distribution protocol, client side: endpoints (mirrors, then the
//! registry itself unless the mirrors replace it), token and basic auth, and
//! the two GETs a pull needs (manifests, blobs).
//!
//! Written on reqwest rather than `oci-client` because a pull needs control
//! the crate does not give: mirror endpoints tried in order with the original
//! name kept, a guarantee that upstream is never contacted when the mirrors
//! replace it, plain HTTP chosen per registry, and blob bodies streamed through
//! our own verifier into the content store (oci-client buffers or hands back
//! an unverified stream, and resolves endpoints itself).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};

use super::error::ImageError;
use crate::config::Config;

/// Credentials kubelet passes with a pull (CRI `AuthConfig`), already decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    pub username: String,
    pub password: String,
    /// An OAuth2 refresh token, exchanged at the registry's token endpoint.
    pub identity_token: String,
    /// A bearer token sent to the registry as is.
    pub registry_token: String,
}

/// Where a registry's content can be fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `scheme://host[:port]`, without `/v2`.
    pub base: String,
}

fn is_loopback(host: &str) -> bool {
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.is_empty() => h,
        _ => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The endpoints to try for `registry`, in order.
pub(crate) fn endpoints(config: &Config, registry: &str) -> Vec<Endpoint> {
    let settings = config.registries.get(registry);
    let mut out: Vec<Endpoint> = settings
        .map(|s| {
            s.mirrors
                .iter()
                .map(|m| Endpoint {
                    base: m.trim_end_matches('/').trim_end_matches("/v2").to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    if !settings.is_some_and(|s| s.mirrors_replace_upstream) {
        let plain = settings.is_some_and(|s| s.plain_http) || is_loopback(registry);
        let host = if registry == super::reference::DEFAULT_REGISTRY {
            "registry-1.docker.io"
        } else {
            registry
        };
        out.push(Endpoint {
            base: format!("{}://{host}", if plain { "http" } else { "https" }),
        });
    }
    out
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(120))
        .user_agent(concat!("yonggi/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// One repository on one endpoint, with the authorization it earned.
pub(crate) struct Session {
    client: reqwest::Client,
    pub endpoint: Endpoint,
    registry: String,
    repository: String,
    auth: Auth,
    header: tokio::sync::Mutex<Option<HeaderValue>>,
}

/// A failure that may be specific to one endpoint (try the next one).
pub(crate) fn is_not_found(err: &ImageError) -> bool {
    matches!(err, ImageError::Status { status: 404, .. })
}

impl Session {
    pub(crate) fn new(
        client: reqwest::Client,
        endpoint: Endpoint,
        registry: &str,
        repository: &str,
        auth: Auth,
    ) -> Session {
        let header = (!auth.registry_token.is_empty())
            .then(|| HeaderValue::from_str(&format!("Bearer {}", auth.registry_token)).ok())
            .flatten();
        Session {
            client,
            endpoint,
            registry: registry.to_string(),
            repository: repository.to_string(),
            auth,
            header: tokio::sync::Mutex::new(header),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.endpoint.base, self.repository)
    }

    /// GETs `manifests/<ref>` or `blobs/<digest>`, answering an auth challenge once.
    pub(crate) async fn get(
        &self,
        path: &str,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, ImageError> {
        let url = self.url(path);
        let mut challenged = false;
        loop {
            let mut request = self.client.get(&url);
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some(auth) = self.header.lock().await.clone() {
                request = request.header(AUTHORIZATION, auth);
            }
            let response = request.send().await.map_err(|source| ImageError::Http {
                url: url.clone(),
                source,
            })?;
            match response.status().as_u16() {
                200..=299 => return Ok(response),
                401 if !challenged => {
                    challenged = true;
                    let challenge = response
                        .headers()
                        .get(WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let header = self.authorize(&url, &challenge).await?;
                    *self.header.lock().await = Some(header);
                }
                401 => return Err(self.unauthorized()),
                403 => {
                    return Err(ImageError::Forbidden {
                        registry: self.registry.clone(),
                        repository: self.repository.clone(),
                    });
                }
                status => return Err(ImageError::Status { url, status }),
            }
        }
    }

    fn unauthorized(&self) -> ImageError {
        ImageError::Unauthorized {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
        }
    }

    fn basic(&self) -> Option<String> {
        (!self.auth.username.is_empty()).then(|| {
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", self.auth.username, self.auth.password))
        })
    }

    async fn authorize(&self, url: &str, challenge: &str) -> Result<HeaderValue, ImageError> {
        let bad = |reason: &str| ImageError::Auth {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, params) =
            parse_challenge(challenge).ok_or_else(|| bad("no WWW-Authenticate challenge"))?;
        let value = if scheme.eq_ignore_ascii_case("basic") {
            format!("Basic {}", self.basic().ok_or_else(|| self.unauthorized())?)
        } else if scheme.eq_ignore_ascii_case("bearer") {
            format!("Bearer {}", self.token(&params).await?)
        } else {
            return Err(bad("unsupported authentication scheme"));
        };
        HeaderValue::from_str(&value).map_err(|_| bad("credentials are not a valid header"))
    }

    /// Asks the challenge's realm for a pull token for this repository.
    async fn token(&self, params: &BTreeMap<String, String>) -> Result<String, ImageError> {
        let realm = params.get("realm").cloned().unwrap_or_default();
        let bad = |reason: &str| ImageError::Auth {
            url: realm.clone(),
            reason: reason.to_string(),
        };
        if !(realm.starts_with("https://") || realm.starts_with("http://")) {
            return Err(bad("bearer challenge without an http(s) realm"));
        }
        let scope = params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
        let service = params.get("service").cloned().unwrap_or_default();
        let request = if self.auth.identity_token.is_empty() {
            let mut request = self
                .client
                .get(&realm)
                .query(&[("service", service.as_str()), ("scope", scope.as_str())]);
            if let Some(basic) = self.basic() {
                request = request.header(AUTHORIZATION, format!("Basic {basic}"));
            }
            request
        } else {
            let mut form = reqwest::Url::parse("http://form.invalid/")
                .map_err(|_| bad("cannot encode the token request"))?;
            form.query_pairs_mut().extend_pairs([
                ("grant_type", "refresh_token"),
                ("refresh_token", self.auth.identity_token.as_str()),
                ("service", service.as_str()),
                ("scope", scope.as_str()),
                ("client_id", "yonggi"),
            ]);
            self.client
                .post(&realm)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(form.query().unwrap_or_default().to_string())
        };
        let response = request.send().await.map_err(|source| ImageError::Http {
            url: realm.clone(),
            source,
        })?;
        match response.status().as_u16() {
            200..=299 => {}
            401 => return Err(self.unauthorized()),
            403 => {
                return Err(ImageError::Forbidden {
                    registry: self.registry.clone(),
                    repository: self.repository.clone(),
                });
            }
            status => return Err(ImageError::Status { url: realm, status }),
        }
        let body = read_limited(response, 1 << 20, &realm).await?;
        let parsed: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| bad("token response is not JSON"))?;
        parsed
            .get("token")
            .or_else(|| parsed.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| bad("token response has no token"))
    }
}

/// Reads a whole (small) body, refusing more than `limit` bytes.
pub(crate) async fn read_limited(
    response: reqwest::Response,
    limit: u64,
    url: &str,
) -> Result<Vec<u8>, ImageError> {
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(ImageError::BadManifest {
            what: url.to_string(),
            reason: format!("larger than {limit} bytes"),
        });
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| ImageError::Http {
            url: url.to_string(),
            source,
        })?;
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(ImageError::BadManifest {
                what: url.to_string(),
                reason: format!("larger than {limit} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `Bearer realm="https://x/token",service="y",scope="a:b:pull"` → ("Bearer", params).
pub(crate) fn parse_challenge(header: &str) -> Option<(String, BTreeMap<String, String>)> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.is_empty() {
        return None;
    }
    let mut params = BTreeMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            after.split_once(',').map_or((after, ""), |(v, t)| (v, t))
        };
        params.insert(key, value.trim().to_string());
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    Some((scheme.to_string(), params))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RegistryConfig;

    #[test]
    fn challenges_are_parsed() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        )
        .expect("challenge");
        assert_eq!(scheme, "Bearer");
        assert_eq!(params["realm"], "https://auth.docker.io/token");
        assert_eq!(params["scope"], "repository:library/busybox:pull,push");
        let (scheme, params) = parse_challenge(r#"Basic realm="Registry Realm""#).expect("basic");
        assert_eq!(scheme, "Basic");
        assert_eq!(params["realm"], "Registry Realm");
        assert!(parse_challenge("").is_none());
        assert!(parse_challenge(r#"Bearer realm="unterminated"#).is_none());
    }

    #[test]
    fn endpoints_follow_the_config() {
        let mut config = Config::default();
        let bases = |c: &Config, r: &str| {
            endpoints(c, r)
                .into_iter()
                .map(|e| e.base)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            bases(&config, "docker.io"),
            vec!["https://registry-1.docker.io"]
        );
        assert_eq!(
            bases(&config, "127.0.0.1:5000"),
            vec!["http://127.0.0.1:5000"]
        );
        assert_eq!(
            bases(&config, "localhost:5000"),
            vec!["http://localhost:5000"]
        );
        assert_eq!(bases(&config, "quay.io"), vec!["https://quay.io"]);
        config.registries.insert(
            "registry.k8s.io".to_string(),
            RegistryConfig {
                mirrors: vec![
                    "http://127.0.0.1:1/".to_string(),
                    "https://m.example/v2".to_string(),
                ],
                mirrors_replace_upstream: false,
                plain_http: true,
            },
        );
        assert_eq!(
            bases(&config, "registry.k8s.io"),
            vec![
                "http://127.0.0.1:1",
                "https://m.example",
                "http://registry.k8s.io"
            ]
        );
        config.registries.insert(
            "docker.io".to_string(),
            RegistryConfig {
                mirrors: vec!["http://127.0.0.1:2".to_string()],
                mirrors_replace_upstream: true,
                plain_http: false,
            },
        );
        assert_eq!(
            bases(&config, "docker.io"),
            vec!["http://127.0.0.1:2"],
            "upstream never contacted"
        );
    }
}
