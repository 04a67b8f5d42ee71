def handler(event, context):
    """Called by clients: `context.auth` is the caller, verified."""
    auth = context.auth
    return {"uid": auth and auth["uid"], "provider": auth and auth["provider"], "echo": event}
