//! A function built with the `lambda_runtime` crate, unmodified, used by the
//! tests as a `provided` function: `{"op":"ok"}` answers, `{"op":"err"}`
//! returns an error, `{"op":"panic"}` panics.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, context) = event.into_parts();
    match payload["op"].as_str() {
        Some("err") => Err("the handler refused the event".into()),
        Some("panic") => panic!("the handler panicked"),
        _ => Ok(json!({
            "echo": payload,
            "request_id": context.request_id,
            "function": context.env_config.function_name,
            "memory": context.env_config.memory,
            "deadline": context.deadline,
        })),
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
