//! The event shapes other platforms' handlers expect, for triggers that
//! ask for them with `format:`: a schedule's slot as EventBridge's
//! "Scheduled Event" or Tencent SCF's timer event, a queue's messages as
//! SQS records. CloudEvents (`cloudevent.rs`) is the default.

use md5::Digest;
use serde_json::{Value, json};
use stratus_store::MessageRecord;

/// The account every ARN names: one platform, one account.
const ACCOUNT: &str = "000000000000";

/// Seconds-precision UTC time, as EventBridge and SCF write it.
fn seconds(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// EventBridge's "Scheduled Event" for `slot` of `app`'s `function`.
pub(crate) fn eventbridge_scheduled(
    id: &str,
    slot_ms: i64,
    region: &str,
    app: &str,
    function: &str,
) -> Value {
    json!({
        "version": "0",
        "id": id,
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": seconds(slot_ms),
        "region": region,
        "resources": [format!("arn:aws:events:{region}:{ACCOUNT}:rule/{app}-{function}")],
        "detail": {},
    })
}

/// Tencent SCF's timer event for `slot` of `function`.
pub(crate) fn scf_timer(slot_ms: i64, function: &str) -> Value {
    json!({
        "Type": "Timer",
        "TriggerName": format!("{function}-schedule"),
        "Time": seconds(slot_ms),
        "Message": "",
    })
}

/// One SQS record of a message of `app`'s `queue`, as Lambda's SQS
/// integration delivers it: the body as text.
pub(crate) fn sqs_record(m: &MessageRecord, region: &str, app: &str, queue: &str) -> Value {
    let body = String::from_utf8_lossy(&m.body);
    let md5: String = md5::Md5::digest(body.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    json!({
        "messageId": m.message_id,
        "receiptHandle": m.message_id,
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": m.receives.to_string(),
            "SentTimestamp": m.sent_ms.to_string(),
            "SenderId": app,
            "ApproximateFirstReceiveTimestamp": m.sent_ms.to_string(),
        },
        "messageAttributes": {},
        "md5OfBody": md5,
        "eventSource": "aws:sqs",
        "eventSourceARN": format!("arn:aws:sqs:{region}:{ACCOUNT}:{app}-{queue}"),
        "awsRegion": region,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_carry_what_handlers_read() {
        let event = eventbridge_scheduled("e1", 1_767_225_600_000, "eu-west-1", "shop", "tick");
        assert_eq!(event["detail-type"], "Scheduled Event");
        assert_eq!(event["time"], "2026-01-01T00:00:00Z");
        assert_eq!(
            event["resources"][0],
            "arn:aws:events:eu-west-1:000000000000:rule/shop-tick"
        );
        let timer = scf_timer(1_767_225_600_000, "tick");
        assert_eq!(timer["Type"], "Timer");
        assert_eq!(timer["Time"], "2026-01-01T00:00:00Z");
    }
}
