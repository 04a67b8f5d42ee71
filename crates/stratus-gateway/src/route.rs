//! An app's routes: exact paths, `{param}` segments and a trailing `*`.
//!
//! The most specific route wins. Routes are compared segment by segment,
//! left to right: a literal beats a parameter, a parameter beats `*`, and
//! a route that ends beats `*` (so `/api` wins over `/api/*` for `/api`).
//! Two routes of the same shape (the same literals, parameters and `*` in
//! the same places) whose methods overlap would be ambiguous: a table
//! refuses them, naming both.

use std::fmt;

use http::Method;
use percent_encoding::percent_decode_str;

/// The path parameter that holds what a trailing `*` matched, as API
/// Gateway's greedy `{proxy+}` does.
pub const REST_PARAM: &str = "proxy";
/// The longest route pattern accepted.
pub const MAX_PATTERN_LEN: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    /// A trailing `*`: any number of segments, none included.
    Rest,
}

/// A parsed route path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    raw: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("route {pattern:?}: {reason}")]
    Invalid { pattern: String, reason: String },
    #[error(
        "routes {first} and {second} overlap: both match the same requests; change one of them"
    )]
    Overlap { first: String, second: String },
}

impl Pattern {
    pub fn parse(raw: &str) -> Result<Pattern, RouteError> {
        let invalid = |reason: &str| RouteError::Invalid {
            pattern: raw.to_owned(),
            reason: reason.to_owned(),
        };
        if raw.len() > MAX_PATTERN_LEN {
            return Err(invalid(&format!(
                "is longer than {MAX_PATTERN_LEN} characters"
            )));
        }
        let Some(rest) = raw.strip_prefix('/') else {
            return Err(invalid("must start with /"));
        };
        let mut segments = Vec::new();
        if !rest.is_empty() {
            let parts: Vec<&str> = rest.split('/').collect();
            for (i, part) in parts.iter().enumerate() {
                let last = i + 1 == parts.len();
                let segment = match *part {
                    "" if last => {
                        return Err(invalid("must not end with /; write /path or /path/*"));
                    }
                    "" => return Err(invalid("has an empty segment (//)")),
                    "*" if last => Segment::Rest,
                    "*" => return Err(invalid("may have * only as its last segment")),
                    p if p.starts_with('{') && p.ends_with('}') => {
                        let name = &p[1..p.len() - 1];
                        let valid = name
                            .chars()
                            .next()
                            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                        if !valid {
                            return Err(invalid(&format!(
                                "parameter {p} must be a name of letters, digits and _"
                            )));
                        }
                        if segments.contains(&Segment::Param(name.to_owned())) {
                            return Err(invalid(&format!("names parameter {p} twice")));
                        }
                        Segment::Param(name.to_owned())
                    }
                    p if p.contains(['{', '}', '*', '?', '#']) => {
                        return Err(invalid(&format!(
                            "segment {p:?} mixes text with {{, }}, *, ? or #; a parameter is a whole segment"
                        )));
                    }
                    p => Segment::Literal(
                        percent_decode_str(p)
                            .decode_utf8()
                            .map_err(|_| invalid("is not valid UTF-8 once decoded"))?
                            .into_owned(),
                    ),
                };
                segments.push(segment);
            }
        }
        Ok(Pattern {
            raw: raw.to_owned(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Matches a request path (as sent, percent-encoded); the parameters'
    /// values come back decoded.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let path = path.strip_prefix('/')?;
        let mut parts = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect::<Vec<_>>()
        };
        // One trailing slash is not a segment of its own.
        if parts.last() == Some(&"") {
            parts.pop();
        }
        let mut params = Vec::new();
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Rest => {
                    params.push((
                        REST_PARAM.to_owned(),
                        decode(&parts[i.min(parts.len())..].join("/")),
                    ));
                    return Some(params);
                }
                Segment::Literal(literal) => {
                    if decode(parts.get(i)?) != *literal {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    let value = parts.get(i).filter(|p| !p.is_empty())?;
                    params.push((name.clone(), decode(value)));
                }
            }
        }
        (parts.len() == self.segments.len()).then_some(params)
    }

    /// The order of specificity: lower ranks first, segment by segment.
    fn ranks(&self) -> impl Iterator<Item = u8> + '_ {
        // Literal 0, parameter 1, the end of the route 2, `*` 3.
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(_) => 0,
                Segment::Param(_) => 1,
                Segment::Rest => 3,
            })
            .chain(std::iter::once(2))
    }

    /// Whether two patterns match exactly the same paths.
    fn same_shape(&self, other: &Pattern) -> bool {
        self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|(a, b)| match (a, b) {
                    (Segment::Literal(a), Segment::Literal(b)) => a == b,
                    (Segment::Param(_), Segment::Param(_)) | (Segment::Rest, Segment::Rest) => true,
                    _ => false,
                })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// One route: a pattern, the methods it takes (all when `None`) and what
/// it leads to.
#[derive(Debug, Clone)]
pub struct Route<T> {
    pub pattern: Pattern,
    pub methods: Option<Vec<Method>>,
    pub target: T,
}

impl<T: fmt::Display> Route<T> {
    fn describe(&self) -> String {
        match &self.methods {
            None => format!("{} (any method) {}", self.pattern, self.target),
            Some(methods) => {
                let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
                format!("{} ({}) {}", self.pattern, names.join(", "), self.target)
            }
        }
    }
}

impl<T> Route<T> {
    fn takes(&self, method: &Method) -> bool {
        match &self.methods {
            None => true,
            Some(methods) => {
                methods.contains(method)
                    || (method == Method::HEAD && methods.contains(&Method::GET))
            }
        }
    }

    fn overlaps(&self, other: &Route<T>) -> bool {
        self.pattern.same_shape(&other.pattern)
            && match (&self.methods, &other.methods) {
                (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
                _ => true,
            }
    }

    /// API Gateway's route key: `GET /pets/{id}`, or `ANY /pets/{id}` for
    /// a route that takes every method.
    pub fn key(&self, method: &Method) -> String {
        match &self.methods {
            None => format!("ANY {}", self.pattern),
            Some(_) => format!("{method} {}", self.pattern),
        }
    }
}

/// The methods a route takes, from their names: `None` (any method) for
/// none; names that are not methods are left out.
pub fn methods_from(names: &[String]) -> Option<Vec<Method>> {
    (!names.is_empty()).then(|| names.iter().filter_map(|m| m.parse().ok()).collect())
}

/// What a table says about a request.
#[derive(Debug)]
pub enum Lookup<'a, T> {
    Found {
        route: &'a Route<T>,
        params: Vec<(String, String)>,
    },
    /// Routes match the path, but none takes the method.
    MethodNotAllowed {
        allowed: Vec<Method>,
    },
    NotFound,
}

/// An app's routes, most specific first. Immutable once built: a deploy
/// builds a new table.
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    routes: Vec<Route<T>>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        RouteTable { routes: Vec::new() }
    }
}

impl<T: fmt::Display> RouteTable<T> {
    /// Builds a table, refusing routes that overlap; the error names both
    /// routes and their targets.
    pub fn new(mut routes: Vec<Route<T>>) -> Result<RouteTable<T>, RouteError> {
        for (i, a) in routes.iter().enumerate() {
            if let Some(b) = routes[i + 1..].iter().find(|b| a.overlaps(b)) {
                return Err(RouteError::Overlap {
                    first: a.describe(),
                    second: b.describe(),
                });
            }
        }
        routes.sort_by(|a, b| a.pattern.ranks().cmp(b.pattern.ranks()));
        Ok(RouteTable { routes })
    }
}

impl<T> RouteTable<T> {
    pub fn routes(&self) -> &[Route<T>] {
        &self.routes
    }

    pub fn lookup(&self, method: &Method, path: &str) -> Lookup<'_, T> {
        let mut allowed: Vec<Method> = Vec::new();
        for route in &self.routes {
            let Some(params) = route.pattern.matches(path) else {
                continue;
            };
            if route.takes(method) {
                return Lookup::Found { route, params };
            }
            for m in route.methods.iter().flatten() {
                if !allowed.contains(m) {
                    allowed.push(m.clone());
                }
            }
        }
        if allowed.is_empty() {
            Lookup::NotFound
        } else {
            Lookup::MethodNotAllowed { allowed }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[(&str, Option<&[&str]>)]) -> Result<RouteTable<String>, RouteError> {
        RouteTable::new(
            routes
                .iter()
                .map(|(p, methods)| Route {
                    pattern: Pattern::parse(p).unwrap(),
                    methods: methods.map(|ms| ms.iter().map(|m| m.parse().unwrap()).collect()),
                    target: p.to_string(),
                })
                .collect(),
        )
    }

    fn found(
        t: &RouteTable<String>,
        method: &str,
        path: &str,
    ) -> Option<(String, Vec<(String, String)>)> {
        match t.lookup(&method.parse().unwrap(), path) {
            Lookup::Found { route, params } => Some((route.target.clone(), params)),
            _ => None,
        }
    }

    #[test]
    fn the_most_specific_route_wins() {
        let t = table(&[
            ("/*", None),
            ("/api/*", None),
            ("/api/{id}", None),
            ("/api/me", None),
            ("/api", None),
            ("/", None),
        ])
        .unwrap();
        let target = |p| found(&t, "GET", p).map(|(target, _)| target);
        assert_eq!(target("/api/me").as_deref(), Some("/api/me"));
        assert_eq!(target("/api/42").as_deref(), Some("/api/{id}"));
        assert_eq!(target("/api/42/x").as_deref(), Some("/api/*"));
        assert_eq!(target("/api").as_deref(), Some("/api"));
        assert_eq!(target("/api/").as_deref(), Some("/api"));
        assert_eq!(target("/").as_deref(), Some("/"));
        assert_eq!(target("/other/deep").as_deref(), Some("/*"));
    }

    #[test]
    fn parameters_and_the_rest_come_back_decoded() {
        let t = table(&[("/users/{id}/files/*", None)]).unwrap();
        let (_, params) = found(&t, "GET", "/users/a%20b/files/x/y%2Fz").unwrap();
        assert_eq!(
            params,
            vec![
                ("id".to_owned(), "a b".to_owned()),
                ("proxy".to_owned(), "x/y/z".to_owned())
            ]
        );
        let (_, params) = found(&t, "GET", "/users/7/files").unwrap();
        assert_eq!(params[1], ("proxy".to_owned(), String::new()));
        assert!(found(&t, "GET", "/users//files/x").is_none());
    }

    #[test]
    fn methods_narrow_a_route_and_head_follows_get() {
        let t = table(&[("/a", Some(&["GET", "POST"])), ("/a/*", Some(&["DELETE"]))]).unwrap();
        assert!(found(&t, "HEAD", "/a").is_some());
        match t.lookup(&Method::PUT, "/a") {
            Lookup::MethodNotAllowed { allowed } => {
                assert_eq!(allowed, vec![Method::GET, Method::POST, Method::DELETE])
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(t.lookup(&Method::GET, "/b"), Lookup::NotFound));
    }

    #[test]
    fn overlapping_routes_are_refused_by_name() {
        let err = table(&[("/users/{id}", None), ("/users/{name}", Some(&["GET"]))]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "routes /users/{id} (any method) /users/{id} and /users/{name} (GET) /users/{name} overlap: both match the same requests; change one of them"
        );
        assert!(table(&[("/a", Some(&["GET"])), ("/a", Some(&["POST"]))]).is_ok());
        assert!(table(&[("/a/*", None), ("/a/{x}", None)]).is_ok());
    }

    #[test]
    fn bad_patterns_say_what_is_wrong() {
        for (pattern, reason) in [
            ("api", "must start with /"),
            ("/a//b", "empty segment"),
            ("/a/", "must not end with /"),
            ("/*/a", "only as its last segment"),
            ("/{a-b}", "must be a name"),
            ("/{a}/{a}", "twice"),
            ("/x{a}", "a parameter is a whole segment"),
        ] {
            let err = Pattern::parse(pattern).unwrap_err().to_string();
            assert!(err.contains(reason), "{pattern}: {err}");
        }
    }
}
