import os

PAGE = open(os.path.join(os.path.dirname(__file__), "index.html")).read()


def handler(event, context):
    return {
        "statusCode": 200,
        "headers": {"content-type": "text/html; charset=utf-8", "cache-control": "no-cache"},
        "body": PAGE,
    }
