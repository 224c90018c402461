//! TCP checks: a connection within the timeout.

use tokio::net::TcpStream;

use super::output::Outcome;
use crate::instance::{HealthStatus, ServiceInstance};

pub(crate) async fn probe(instance: &ServiceInstance) -> Outcome {
    let target = (instance.host(), instance.port());
    match TcpStream::connect(target).await {
        Ok(stream) => {
            let peer = stream
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| instance.authority());
            Outcome {
                status: HealthStatus::Passing,
                output: format!("TCP connect {}: success ({peer})", instance.authority()),
            }
        }
        Err(e) => Outcome::critical(format!("TCP connect {}: {e}", instance.authority())),
    }
}
