import json


def handler(event, context):
    """An HTTP function: the request arrives as an API Gateway payload 2.0
    event and the returned dict becomes the HTTP response."""
    name = (event.get("pathParameters") or {}).get("name", "world")
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({
            "message": f"Hello, {name}!",
            "method": event["requestContext"]["http"]["method"],
            "path": event["rawPath"],
        }),
    }
