import os
import platform


def handler(event, context):
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    print(f"greeting {name} from {context.function_name}")
    return {
        "message": f"{os.environ['GREETING']}, {name}!",
        "python": platform.python_version(),
        "request_id": context.aws_request_id,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }
