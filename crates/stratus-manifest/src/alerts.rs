//! `alerts:`: conditions on the platform's metrics or on log lines, held
//! for a while, and what to do when they start and stop holding.
//!
//! ```yaml
//! alerts:
//!   checkout-errors:
//!     metric: error_rate        # of function checkout, over the window
//!     function: checkout
//!     above: 0.05
//!     window: 1m
//!     for: 2m                   # true this long before it fires
//!     actions:
//!       - invoke: page          # a CloudEvent stratus.alert.firing / .resolved
//!       - webhook: { url: "https://hooks.example.com/a", secret: hook_key }
//!       - queue: incidents
//!   payment-failures:
//!     logs: { pattern: "payment failed", from: [checkout] }
//!     above: 3                  # matching lines in the window
//!     window: 5m
//!     actions: [ { invoke: page } ]
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::raw::{OneOrMany, RawAlert};
use crate::resolve::{Checker, duration};
use crate::spec::{FunctionSpec, QueueSpec};

/// The window a metric is taken over, unless given.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
/// The shortest and longest windows.
const WINDOWS: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(24 * 3600));
/// The longest `for:`.
const MAX_FOR: Duration = Duration::from_secs(24 * 3600);

/// One alert of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertSpec {
    pub name: String,
    pub condition: AlertCondition,
    pub threshold: Threshold,
    /// What a metric or a count is taken over.
    #[serde(with = "crate::spec::millis")]
    pub window: Duration,
    /// How long the condition holds before the alert fires.
    #[serde(with = "crate::spec::millis", rename = "for")]
    pub hold: Duration,
    pub actions: Vec<AlertAction>,
}

/// What an alert watches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum AlertCondition {
    /// One of the platform's metrics, of a function or a queue.
    Metric {
        metric: AlertMetric,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        function: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        queue: Option<String>,
    },
    /// Log lines of the app that contain `pattern`, counted over the
    /// window; of the functions and services `from` names (all when
    /// empty).
    Logs { pattern: String, from: Vec<String> },
}

/// The metrics an alert can watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertMetric {
    /// Failed invocations (error, timeout, crash, out of memory) over all
    /// that ran in the window, 0 to 1.
    ErrorRate,
    /// Failed invocations in the window.
    Errors,
    /// Invocations that ran in the window (`below: 1` watches for none).
    Invocations,
    /// Invocations turned away in the window.
    Throttles,
    /// The 99th percentile of the invocations' total time in the window,
    /// in milliseconds.
    P99Duration,
    /// The function's dead letters now.
    DeadLetters,
    /// The age of the function's oldest queued asynchronous event, in
    /// seconds.
    EventAge,
    /// The age of the queue's oldest message, in seconds.
    QueueAge,
}

impl AlertMetric {
    pub const ALL: [(&'static str, AlertMetric); 8] = [
        ("error_rate", AlertMetric::ErrorRate),
        ("errors", AlertMetric::Errors),
        ("invocations", AlertMetric::Invocations),
        ("throttles", AlertMetric::Throttles),
        ("p99_duration", AlertMetric::P99Duration),
        ("dead_letters", AlertMetric::DeadLetters),
        ("event_age", AlertMetric::EventAge),
        ("queue_age", AlertMetric::QueueAge),
    ];

    pub fn as_str(self) -> &'static str {
        AlertMetric::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map(|(name, _)| *name)
            .unwrap_or("")
    }

    /// Taken from the invocations of the window (rather than the state
    /// now).
    pub fn windowed(self) -> bool {
        !matches!(
            self,
            AlertMetric::DeadLetters | AlertMetric::EventAge | AlertMetric::QueueAge
        )
    }
}

/// Above or below a value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// True: the condition holds above `value`; false: below it.
    pub above: bool,
    pub value: f64,
}

// Thresholds are finite (checked when the manifest is read).
impl Eq for Threshold {}

impl Threshold {
    pub fn holds(&self, observed: f64) -> bool {
        if self.above {
            observed > self.value
        } else {
            observed < self.value
        }
    }
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", if self.above { ">" } else { "<" }, self.value)
    }
}

/// What is done when an alert fires and when it resolves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertAction {
    /// Queue a CloudEvent for a function of the app.
    Invoke(String),
    /// POST the CloudEvent to a URL, signed with HMAC-SHA256 under the
    /// app's secret `secret`.
    Webhook { url: String, secret: String },
    /// Send the CloudEvent to one of the app's queues.
    Queue(String),
}

pub(crate) fn resolve_alerts(
    c: &mut Checker<'_>,
    raw: BTreeMap<String, RawAlert>,
    functions: &BTreeMap<String, FunctionSpec>,
    services: &[&str],
    queues: &BTreeMap<String, QueueSpec>,
) -> BTreeMap<String, AlertSpec> {
    let mut alerts = BTreeMap::new();
    for (name, a) in raw {
        if let Some(alert) = resolve_alert(c, &name, a, functions, services, queues) {
            alerts.insert(name, alert);
        }
    }
    alerts
}

fn resolve_alert(
    c: &mut Checker<'_>,
    name: &str,
    a: RawAlert,
    functions: &BTreeMap<String, FunctionSpec>,
    services: &[&str],
    queues: &BTreeMap<String, QueueSpec>,
) -> Option<AlertSpec> {
    let key = |field: &str| format!("alerts.{name}.{field}");
    let before = c.errors.len();
    if !crate::is_valid_name(name) {
        c.error(
            format!("alerts.{name}"),
            format!("invalid alert name {name:?}"),
            Some(crate::resolve::NAME_HINT.into()),
        );
    }
    let function_names = || functions.keys().cloned().collect::<Vec<_>>().join(", ");
    let condition = match (a.metric, a.logs) {
        (Some(metric), None) => {
            let known = AlertMetric::ALL.iter().find(|(n, _)| *n == metric);
            let Some(&(_, metric)) = known else {
                c.error(
                    key("metric"),
                    format!("unknown metric {metric:?}"),
                    Some(format!(
                        "metrics are {}",
                        AlertMetric::ALL.map(|(n, _)| n).join(", ")
                    )),
                );
                return None;
            };
            let queue_metric = metric == AlertMetric::QueueAge;
            match (&a.function, &a.queue, queue_metric) {
                (Some(function), None, false) if !functions.contains_key(function) => c.error(
                    key("function"),
                    format!("the app has no function {function:?}"),
                    Some(format!("its functions: {}", function_names())),
                ),
                (Some(_), None, false) => {}
                (None, Some(queue), true) if !queues.contains_key(queue) => c.error(
                    key("queue"),
                    format!("the app declares no queue {queue:?}"),
                    Some("name one of its `queues:`".into()),
                ),
                (None, Some(_), true) => {}
                (_, _, true) => c.error(
                    key("queue"),
                    "queue_age watches one queue".into(),
                    Some("give `queue: NAME` (and no `function:`)".into()),
                ),
                (_, _, false) => c.error(
                    key("function"),
                    format!("{} watches one function", metric.as_str()),
                    Some("give `function: NAME` (and no `queue:`)".into()),
                ),
            }
            AlertCondition::Metric {
                metric,
                function: a.function,
                queue: a.queue,
            }
        }
        (None, Some(logs)) => {
            if a.function.is_some() || a.queue.is_some() {
                c.error(
                    key("logs"),
                    "a log alert names its functions in `logs.from`".into(),
                    Some("move `function:` into `logs: { from: [...] }`".into()),
                );
            }
            if logs.pattern.is_empty() {
                c.error(
                    key("logs.pattern"),
                    "the pattern is empty".into(),
                    Some("give the text the lines contain, such as `ERROR`".into()),
                );
            }
            let from = logs.from.map(OneOrMany::into_vec).unwrap_or_default();
            for source in &from {
                if !functions.contains_key(source) && !services.contains(&source.as_str()) {
                    c.error(
                        key("logs.from"),
                        format!("the app has no function or service {source:?}"),
                        Some(format!("its functions: {}", function_names())),
                    );
                }
            }
            AlertCondition::Logs {
                pattern: logs.pattern,
                from,
            }
        }
        _ => {
            c.error(
                format!("alerts.{name}"),
                "an alert watches one thing".into(),
                Some(
                    "give either `metric:` (with `function:` or `queue:`) or `logs: { pattern, from }`"
                        .into(),
                ),
            );
            return None;
        }
    };
    let threshold = match (a.above, a.below) {
        (Some(value), None) if value.is_finite() => Threshold { above: true, value },
        (None, Some(value)) if value.is_finite() => Threshold {
            above: false,
            value,
        },
        _ => {
            c.error(
                format!("alerts.{name}"),
                "an alert holds above or below one value".into(),
                Some("give either `above: N` or `below: N`".into()),
            );
            return None;
        }
    };
    let window = duration(
        c,
        &key("window"),
        a.window.as_deref(),
        DEFAULT_WINDOW,
        WINDOWS,
    );
    let hold = duration(
        c,
        &key("for"),
        a.hold.as_deref(),
        Duration::ZERO,
        (Duration::ZERO, MAX_FOR),
    );
    if a.actions.is_empty() {
        c.error(
            key("actions"),
            "the alert does nothing".into(),
            Some(
                "add an action: `- invoke: FN`, `- webhook: { url, secret }` or `- queue: Q`"
                    .into(),
            ),
        );
    }
    let mut actions = Vec::new();
    for (i, action) in a.actions.into_iter().enumerate() {
        let key = key(&format!("actions.{i}"));
        match (action.invoke, action.webhook, action.queue) {
            (Some(function), None, None) => {
                if !functions.contains_key(&function) {
                    c.error(
                        key,
                        format!("the app has no function {function:?} to invoke"),
                        Some(format!("its functions: {}", function_names())),
                    );
                }
                actions.push(AlertAction::Invoke(function));
            }
            (None, Some(hook), None) => {
                let scheme_ok = hook.url.split_once("://").is_some_and(|(scheme, rest)| {
                    matches!(scheme, "http" | "https") && !rest.is_empty()
                });
                if !scheme_ok {
                    c.error(
                        key.clone(),
                        format!("the webhook's url {:?} is not an http(s) address", hook.url),
                        Some("give the full address: https://hooks.example.com/alert".into()),
                    );
                }
                if !crate::valid_secret_name(&hook.secret) {
                    c.error(
                        key,
                        format!("invalid secret name {:?}", hook.secret),
                        Some("name the app secret that holds the signing key (`stratus secret set APP NAME`)".into()),
                    );
                }
                actions.push(AlertAction::Webhook {
                    url: hook.url,
                    secret: hook.secret,
                });
            }
            (None, None, Some(queue)) => {
                if !queues.contains_key(&queue) {
                    c.error(
                        key,
                        format!("the app declares no queue {queue:?}"),
                        Some("name one of its `queues:`".into()),
                    );
                }
                actions.push(AlertAction::Queue(queue));
            }
            _ => c.error(
                key,
                "an action does one thing".into(),
                Some("give one of `invoke: FN`, `webhook: { url, secret }` or `queue: Q`".into()),
            ),
        }
    }
    (c.errors.len() == before).then(|| AlertSpec {
        name: name.to_owned(),
        condition,
        threshold,
        window,
        hold,
        actions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "app: shop\nfunctions:\n  checkout:\n    runtime: python3\n    handler: m.h\n  page:\n    runtime: python3\n    handler: m.h\nqueues:\n  incidents:\n";

    fn parse(alerts: &str) -> Result<crate::AppSpec, String> {
        crate::parse("stratus.yaml", &format!("{BASE}alerts:\n{alerts}")).map_err(|e| e.to_string())
    }

    #[test]
    fn metric_and_log_alerts_resolve_with_their_defaults() {
        let spec = parse(
            "  errors:\n    metric: error_rate\n    function: checkout\n    above: 0.05\n    window: 1m\n    for: 2m\n    actions:\n      - invoke: page\n      - webhook: { url: \"https://hooks.example.com/a\", secret: hook_key }\n      - queue: incidents\n  quiet:\n    metric: invocations\n    function: checkout\n    below: 1\n    actions: [ { invoke: page } ]\n  payments:\n    logs: { pattern: payment failed, from: checkout }\n    above: 3\n    actions: [ { queue: incidents } ]\n",
        )
        .unwrap();
        let errors = &spec.alerts["errors"];
        assert_eq!(
            errors.condition,
            AlertCondition::Metric {
                metric: AlertMetric::ErrorRate,
                function: Some("checkout".into()),
                queue: None
            }
        );
        assert!(errors.threshold.holds(0.06) && !errors.threshold.holds(0.05));
        assert_eq!(
            (errors.window, errors.hold),
            (Duration::from_secs(60), Duration::from_secs(120))
        );
        assert_eq!(errors.actions.len(), 3);
        let quiet = &spec.alerts["quiet"];
        assert!(quiet.threshold.holds(0.0) && !quiet.threshold.holds(1.0));
        assert_eq!((quiet.window, quiet.hold), (DEFAULT_WINDOW, Duration::ZERO));
        assert_eq!(
            spec.alerts["payments"].condition,
            AlertCondition::Logs {
                pattern: "payment failed".into(),
                from: vec!["checkout".into()]
            }
        );
    }

    #[test]
    fn mistakes_are_named_with_what_to_do() {
        for (alerts, said) in [
            (
                "  a:\n    metric: latency\n    function: checkout\n    above: 1\n    actions: [ { invoke: page } ]\n",
                "unknown metric \"latency\"",
            ),
            (
                "  a:\n    metric: errors\n    function: nope\n    above: 1\n    actions: [ { invoke: page } ]\n",
                "the app has no function \"nope\"",
            ),
            (
                "  a:\n    metric: errors\n    above: 1\n    actions: [ { invoke: page } ]\n",
                "errors watches one function",
            ),
            (
                "  a:\n    metric: queue_age\n    function: checkout\n    above: 1\n    actions: [ { invoke: page } ]\n",
                "queue_age watches one queue",
            ),
            (
                "  a:\n    metric: errors\n    function: checkout\n    actions: [ { invoke: page } ]\n",
                "above or below one value",
            ),
            (
                "  a:\n    metric: errors\n    function: checkout\n    above: 1\n    below: 2\n    actions: [ { invoke: page } ]\n",
                "above or below one value",
            ),
            (
                "  a:\n    metric: errors\n    function: checkout\n    above: 1\n",
                "the alert does nothing",
            ),
            (
                "  a:\n    metric: errors\n    function: checkout\n    above: 1\n    actions: [ { invoke: gone } ]\n",
                "no function \"gone\" to invoke",
            ),
            (
                "  a:\n    metric: errors\n    function: checkout\n    above: 1\n    actions: [ { webhook: { url: ftp://x, secret: k } } ]\n",
                "not an http(s) address",
            ),
            (
                "  a:\n    metric: errors\n    function: checkout\n    above: 1\n    actions: [ { invoke: page, queue: incidents } ]\n",
                "an action does one thing",
            ),
            (
                "  a:\n    logs: { pattern: x, from: [nope] }\n    above: 1\n    actions: [ { invoke: page } ]\n",
                "no function or service \"nope\"",
            ),
            (
                "  a:\n    metric: errors\n    function: checkout\n    logs: { pattern: x }\n    above: 1\n    actions: [ { invoke: page } ]\n",
                "an alert watches one thing",
            ),
            (
                "  a:\n    metric: errors\n    function: checkout\n    above: 1\n    window: 0s\n    actions: [ { invoke: page } ]\n",
                "0s is out of range",
            ),
        ] {
            let error = parse(alerts).unwrap_err();
            assert!(error.contains(said), "{alerts}: {error}");
        }
    }
}
