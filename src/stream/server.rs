//! The HTTP side: accept connections, find the request a token stands for,
//! negotiate SPDY/3.1 or WebSocket and the subprotocol, answer 101 and hand
//! the upgraded connection to the protocol's session.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::{Kind, SessionGuard, Shared, StreamRequest, portforward, remotecommand, websocket};

const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
const ACCEPTED_PROTOCOLS_HEADER: &str = "x-accepted-stream-protocol-versions";
/// A connection must send its request line and headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off, don't spin.
                tracing::warn!(error = %e, "streaming server cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(shared.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "streaming HTTP connection ended");
            }
        });
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn handle(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut parts = req.uri().path().trim_start_matches('/').split('/');
    let kind = match parts.next() {
        Some("exec") => Kind::Exec,
        Some("attach") => Kind::Attach,
        Some("portforward") => Kind::PortForward,
        _ => return Ok(plain(StatusCode::NOT_FOUND, "not found")),
    };
    let (Some(token), None) = (parts.next(), parts.next()) else {
        return Ok(plain(StatusCode::NOT_FOUND, "not found"));
    };
    if req.method() != Method::GET && req.method() != Method::POST {
        return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST"));
    }
    // The token goes first: without a valid one nothing else is looked at,
    // and with one it is spent whatever happens next.
    let Some(request) = shared.tokens.take(kind, token) else {
        tracing::info!(
            kind = kind.path(),
            "streaming request with an unknown, used or expired token"
        );
        return Ok(plain(StatusCode::NOT_FOUND, "not found"));
    };
    let headers = req.headers().clone();
    let on_upgrade = hyper::upgrade::on(&mut req);
    if websocket::is_upgrade(&headers) {
        let supported: &[&str] = match kind {
            Kind::PortForward => &portforward::WS_PROTOCOLS,
            Kind::Exec | Kind::Attach => &remotecommand::WS_PROTOCOLS,
        };
        let offered = websocket::offered_protocols(&headers);
        // No subprotocol offered means the original binary channel protocol.
        let protocol = if offered.is_empty() {
            None
        } else {
            match negotiate(&offered, supported) {
                Some(p) => Some(p),
                None => return Ok(refuse_protocols(&offered, supported)),
            }
        };
        let tunnel = protocol == Some(portforward::WS_TUNNEL_PROTOCOL);
        let ws_ports = match &request {
            StreamRequest::PortForward(pf) if !tunnel => {
                match ws_ports(req.uri().query(), &pf.ports) {
                    Ok(ports) => ports,
                    Err(message) => return Ok(plain(StatusCode::BAD_REQUEST, &message)),
                }
            }
            _ => Vec::new(),
        };
        let response = match websocket::accept(&headers, protocol) {
            Ok(response) => response,
            Err(message) => return Ok(plain(StatusCode::BAD_REQUEST, message)),
        };
        let protocol = protocol.unwrap_or_default();
        tokio::spawn(async move {
            let _guard = SessionGuard::new(shared.clone());
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => {
                    tracing::info!(error = %e, "WebSocket upgrade failed");
                    return;
                }
            };
            let ws = websocket::wrap(upgraded).await;
            match request {
                StreamRequest::PortForward(pf) if tunnel => {
                    portforward::serve_tunnel(ws, shared, pf).await;
                }
                StreamRequest::PortForward(pf) => {
                    portforward::serve_websocket(ws, shared, pf, ws_ports).await;
                }
                other => remotecommand::serve_websocket(ws, shared, other, protocol).await,
            }
        });
        return Ok(response);
    }
    if !wants_spdy(&headers) {
        return Ok(plain(
            StatusCode::BAD_REQUEST,
            "upgrade to SPDY/3.1 or websocket required",
        ));
    }
    let offered: Vec<String> = headers
        .get_all(PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() {
        return Ok(plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: X-Stream-Protocol-Version is required",
        ));
    }
    let supported: &[&str] = match kind {
        Kind::PortForward => &portforward::SPDY_PROTOCOLS,
        Kind::Exec | Kind::Attach => &remotecommand::SPDY_PROTOCOLS,
    };
    let Some(protocol) = negotiate(&offered, supported) else {
        return Ok(refuse_protocols(&offered, supported));
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert(PROTOCOL_HEADER, HeaderValue::from_static(protocol));
    tokio::spawn(async move {
        let _guard = SessionGuard::new(shared.clone());
        let io = match on_upgrade.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(e) => {
                tracing::info!(error = %e, "SPDY upgrade failed");
                return;
            }
        };
        match request {
            StreamRequest::PortForward(pf) => portforward::serve_spdy(io, shared, pf).await,
            other => remotecommand::serve_spdy(io, shared, other, protocol).await,
        }
    });
    Ok(response)
}

fn wants_spdy(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    let spdy = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("SPDY/3.1"))
        });
    connection_upgrade && spdy
}

/// The first protocol the client offers that the server supports: the
/// client's preference wins, as in Kubernetes' handshake.
fn negotiate(offered: &[String], supported: &[&'static str]) -> Option<&'static str> {
    offered
        .iter()
        .find_map(|o| supported.iter().find(|s| **s == o.as_str()).copied())
}

fn refuse_protocols(offered: &[String], supported: &[&str]) -> Response<Full<Bytes>> {
    let mut response = plain(
        StatusCode::FORBIDDEN,
        &format!(
            "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}"
        ),
    );
    for protocol in supported {
        if let Ok(value) = HeaderValue::from_str(protocol) {
            response
                .headers_mut()
                .append(ACCEPTED_PROTOCOLS_HEADER, value);
        }
    }
    response
}

/// The ports of a WebSocket port forward: the `port` query parameters (one
/// or more, each may list several separated by commas), else the ports of
/// the CRI request, which must include every one asked for.
fn ws_ports(query: Option<&str>, allowed: &[u16]) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for pair in query.unwrap_or_default().split('&') {
        let Some(("port", value)) = pair.split_once('=') else {
            continue;
        };
        for part in value.split(',').filter(|p| !p.is_empty()) {
            match part.parse::<u16>() {
                Ok(port) if port != 0 => ports.push(port),
                _ => return Err(format!("invalid port {part:?}")),
            }
        }
    }
    if ports.is_empty() {
        ports = allowed.to_vec();
    }
    if ports.is_empty() {
        return Err("at least one port is required".to_string());
    }
    if ports.len() > portforward::MAX_WS_PORTS {
        return Err(format!("at most {} ports", portforward::MAX_WS_PORTS));
    }
    if let Some(port) = ports
        .iter()
        .find(|p| !allowed.is_empty() && !allowed.contains(p))
    {
        return Err(format!("port {port} was not requested"));
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_preference_wins_negotiation() {
        let offered = vec![
            "v3.channel.k8s.io".to_string(),
            "v4.channel.k8s.io".to_string(),
        ];
        assert_eq!(
            negotiate(&offered, &remotecommand::SPDY_PROTOCOLS),
            Some("v3.channel.k8s.io")
        );
        let offered = vec!["v9.channel.k8s.io".to_string()];
        assert_eq!(negotiate(&offered, &remotecommand::SPDY_PROTOCOLS), None);
    }

    #[test]
    fn websocket_port_query() {
        assert_eq!(ws_ports(Some("port=80&port=8080"), &[]), Ok(vec![80, 8080]));
        assert_eq!(ws_ports(Some("port=80,81"), &[]), Ok(vec![80, 81]));
        assert_eq!(ws_ports(None, &[443]), Ok(vec![443]));
        assert!(ws_ports(None, &[]).is_err());
        assert!(ws_ports(Some("port=0"), &[]).is_err());
        assert!(ws_ports(Some("port=http"), &[]).is_err());
        assert!(ws_ports(Some("port=22"), &[80]).is_err());
    }
}
