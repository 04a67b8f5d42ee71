//! A no-op `provided` runtime built with the `lambda_runtime` crate: it answers
//! every event with the event itself. The `invoke` benchmark deploys it as a
//! function's `bootstrap`.

use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(service_fn(|e: LambdaEvent<serde_json::Value>| async move {
        Ok::<_, lambda_runtime::Error>(e.payload)
    }))
    .await
}
