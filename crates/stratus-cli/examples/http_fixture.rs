//! An HTTP function built with the `lambda_http` crate, unmodified, used by
//! the tests as a `provided` function. With `STREAM=1` it streams its
//! response through `run_with_streaming_response`.

use lambda_http::{Body, Error, Request, RequestExt, Response, service_fn};

async fn handler(request: Request) -> Result<Response<Body>, Error> {
    let name = request
        .query_string_parameters_ref()
        .and_then(|q| q.first("name").map(str::to_owned))
        .unwrap_or_else(|| "world".to_owned());
    let id = request
        .path_parameters_ref()
        .and_then(|p| p.first("id").map(str::to_owned));
    let body = match request.body() {
        Body::Text(text) => text.clone(),
        Body::Binary(bytes) => format!("{} bytes", bytes.len()),
        Body::Empty => String::new(),
        _ => String::new(),
    };
    let answer = serde_json::json!({
        "hello": name,
        "id": id,
        "method": request.method().as_str(),
        "path": request.uri().path(),
        "body": body,
    });
    Ok(Response::builder()
        .status(201)
        .header("content-type", "application/json")
        .header("x-built-with", "lambda_http")
        .body(Body::Text(answer.to_string()))?)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    if std::env::var("STREAM").as_deref() == Ok("1") {
        lambda_http::run_with_streaming_response(service_fn(|request: Request| async move {
            let response = handler(request).await?;
            let (parts, body) = response.into_parts();
            let text = match body {
                Body::Text(text) => format!("{text}\n"),
                _ => String::new(),
            };
            Ok::<_, Error>(Response::from_parts(parts, Body::Text(text.repeat(3))))
        }))
        .await
    } else {
        lambda_http::run(service_fn(handler)).await
    }
}
