//! Whether a starting service instance is ready: its port accepts
//! connections, or its readiness path answers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use stratus_manifest::Readiness;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::instance::{Phase, ServiceInstance};

/// Longest one readiness request may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Polls the instance until it is ready, or says why it is not.
pub(crate) async fn wait_ready(
    instance: &ServiceInstance,
    readiness: &Readiness,
) -> Result<(), String> {
    let deadline = Instant::now() + readiness.timeout;
    // Apps start in milliseconds: look often at first, then less.
    let mut pause = Duration::from_millis(1);
    loop {
        if instance.phase() != Phase::Starting {
            return Err("stopped before it was ready".to_owned());
        }
        match check(instance.addr, readiness.path.as_deref()).await {
            Ok(()) => return Ok(()),
            Err(last) if Instant::now() >= deadline => {
                return Err(format!(
                    "not ready within {}s: {last}",
                    readiness.timeout.as_secs()
                ));
            }
            Err(_) => {}
        }
        tokio::time::sleep(pause).await;
        pause = (pause + Duration::from_millis(1)).min(Duration::from_millis(20));
    }
}

/// One look at the instance at `addr`.
async fn check(addr: SocketAddr, path: Option<&str>) -> Result<(), String> {
    let own = match addr {
        // With no listener at its own address, a connection there
        // would reach any wildcard listener on the port, another
        // tenant's included: only the instance can bind its address.
        SocketAddr::V4(v4) if *v4.ip() != Ipv4Addr::LOCALHOST => {
            stratus_sandbox::service_listening(v4)
        }
        _ => true,
    };
    match path {
        _ if !own => Err(format!("nothing listens on {addr}")),
        // Its own address is listening: connections are accepted.
        None if addr.ip() != IpAddr::V4(Ipv4Addr::LOCALHOST) => Ok(()),
        None => tokio::net::TcpStream::connect(addr)
            .await
            .map(drop)
            .map_err(|e| format!("port {}: {e}", addr.port())),
        Some(path) => probe(addr, path).await,
    }
}

/// One readiness request: ready on a 2xx or 3xx status.
async fn probe(addr: SocketAddr, path: &str) -> Result<(), String> {
    let attempt = async {
        let mut tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("port {}: {e}", addr.port()))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: stratus-readiness\r\nConnection: close\r\n\r\n"
        );
        tcp.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("readiness {path}: {e}"))?;
        let mut head = [0u8; 12];
        tcp.read_exact(&mut head)
            .await
            .map_err(|e| format!("readiness {path}: {e}"))?;
        match std::str::from_utf8(&head[9..12])
            .ok()
            .and_then(|s| s.parse::<u16>().ok())
        {
            Some(status) if (200..400).contains(&status) => Ok(()),
            Some(status) => Err(format!("readiness {path} answered {status}")),
            None => Err(format!("readiness {path}: not an HTTP answer")),
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("readiness {path}: no answer within 2s")))
}
