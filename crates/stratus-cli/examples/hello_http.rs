//! A hello-world HTTP function for the `http` benchmark, built with the
//! `lambda_runtime` crate: every event gets a 200 `text/plain` "hello".
//! With `--direct PORT` it serves the same response over plain HTTP/1.1
//! on 127.0.0.1 instead, as the benchmark's reference without the platform.

use std::convert::Infallible;

use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, port] = args.as_slice()
        && flag == "--direct"
    {
        return direct(port.parse()?).await;
    }
    lambda_runtime::run(service_fn(|_: LambdaEvent<serde_json::Value>| async {
        Ok::<_, lambda_runtime::Error>(serde_json::json!({
            "statusCode": 200,
            "headers": { "content-type": "text/plain" },
            "body": "hello",
        }))
    }))
    .await
}

async fn direct(port: u16) -> Result<(), lambda_runtime::Error> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|_request| async {
                Ok::<_, Infallible>(
                    hyper::Response::builder()
                        .header("content-type", "text/plain")
                        .body(http_body_util::Full::new(bytes::Bytes::from_static(
                            b"hello",
                        )))
                        .expect("a valid response"),
                )
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
