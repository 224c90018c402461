//! gRPC checks: `grpc.health.v1.Health/Check` through tonic.

use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::output::Outcome;
use crate::instance::{HealthStatus, ServiceInstance};

/// A lazily connecting channel to the instance, kept between rounds.
pub(crate) fn channel(instance: &ServiceInstance) -> Result<Channel, String> {
    let url = format!("http://{}", instance.authority());
    Endpoint::from_shared(url.clone())
        .map(|e| e.connect_lazy())
        .map_err(|e| format!("{url}: {e}"))
}

pub(crate) async fn probe(channel: Channel, service: &str, authority: &str) -> Outcome {
    let mut client = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    match client.check(request).await {
        Ok(response) => {
            let status = response.into_inner().status();
            let health = if status == ServingStatus::Serving {
                HealthStatus::Passing
            } else {
                HealthStatus::Critical
            };
            Outcome {
                status: health,
                output: format!(
                    "gRPC health {authority} service {service:?}: {}",
                    status.as_str_name()
                ),
            }
        }
        Err(status) => Outcome::critical(format!(
            "gRPC health {authority} service {service:?}: {:?}: {}",
            status.code(),
            status.message()
        )),
    }
}
