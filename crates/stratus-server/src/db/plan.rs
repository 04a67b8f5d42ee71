//! Whether a declared index serves a query, and which one would: a query
//! that no index serves scans its collection, which a large collection
//! refuses unless the query says `allow_scan`.
//!
//! An index serves a conjunction of conditions when its first field has
//! an equality, `in` or range condition there (a `multi` index: a
//! `contains`); a query with `or`s, when every alternative is served; a
//! query without a filter, when it sorts by nothing or by an index's
//! first field (it then reads only its page).

use stratus_store::documents::{Comparison, FieldPath, Filter, IndexSpec, Order};

/// `None` when the indexes serve the query; otherwise the index that
/// would, as the manifest writes it.
pub(crate) fn needed(
    filter: Option<&Filter>,
    order: &[Order],
    indexes: &[IndexSpec],
) -> Option<String> {
    let Some(filter) = filter else {
        return match order.first() {
            None => None,
            Some(first)
                if indexes
                    .iter()
                    .any(|i| !i.multi && i.fields.first() == Some(&first.field)) =>
            {
                None
            }
            Some(_) => Some(suggest(&[], order)),
        };
    };
    let alternatives = filter.alternatives(super::wire::MAX_ALTERNATIVES)?;
    alternatives
        .iter()
        .find(|conditions| !served(conditions, indexes))
        .map(|conditions| suggest(conditions, order))
}

fn served(conditions: &[&Filter], indexes: &[IndexSpec]) -> bool {
    indexes.iter().any(|index| {
        let Some(first) = index.fields.first() else {
            return false;
        };
        conditions.iter().any(|c| match c {
            Filter::Contains { field, .. } => index.multi && field == first,
            Filter::Compare { field, op, .. } => {
                !index.multi && field == first && *op != Comparison::Ne
            }
            Filter::In { field, .. } => !index.multi && field == first,
            _ => false,
        })
    })
}

/// The index a query's conditions and order want: its equality fields,
/// then a range field, then the fields it sorts by.
fn suggest(conditions: &[&Filter], order: &[Order]) -> String {
    let mut fields: Vec<&FieldPath> = Vec::new();
    let equal = conditions.iter().filter_map(|c| match c {
        Filter::Compare {
            field,
            op: Comparison::Eq,
            ..
        }
        | Filter::In { field, .. } => Some(field),
        _ => None,
    });
    let ranges = conditions.iter().filter_map(|c| match c {
        Filter::Compare { field, op, .. } if !matches!(op, Comparison::Eq | Comparison::Ne) => {
            Some(field)
        }
        _ => None,
    });
    for field in equal.chain(ranges).chain(order.iter().map(|o| &o.field)) {
        if !fields.contains(&field) {
            fields.push(field);
        }
    }
    if fields.is_empty() {
        if let Some(field) = conditions.iter().find_map(|c| match c {
            Filter::Contains { field, .. } => Some(field),
            _ => None,
        }) {
            return format!("{{ fields: [{field}], multi: true }}");
        }
        if let Some(field) = conditions.iter().find_map(|c| match c {
            Filter::Compare { field, .. } | Filter::Exists { field, .. } => Some(field),
            _ => None,
        }) {
            fields.push(field);
        }
    }
    format!(
        "{{ fields: [{}] }}",
        fields
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn index(fields: &[&str], multi: bool) -> IndexSpec {
        IndexSpec {
            fields: fields
                .iter()
                .map(|f| FieldPath::parse(f).unwrap())
                .collect(),
            multi,
        }
    }

    fn filter(value: serde_json::Value) -> Filter {
        super::super::wire::filter(&value).unwrap().unwrap()
    }

    #[test]
    fn an_index_serves_equality_and_ranges_on_its_first_field() {
        let indexes = [
            index(&["owner", "created_at"], false),
            index(&["tags"], true),
        ];
        let order = super::super::wire::order(&json!([["created_at", "desc"]])).unwrap();
        assert_eq!(
            needed(Some(&filter(json!(["owner", "==", "u"]))), &order, &indexes),
            None
        );
        assert_eq!(
            needed(Some(&filter(json!(["owner", ">", "u"]))), &[], &indexes),
            None
        );
        assert_eq!(
            needed(
                Some(&filter(json!(["tags", "contains", "x"]))),
                &[],
                &indexes
            ),
            None
        );
        assert_eq!(
            needed(
                Some(&filter(json!([["done", "==", true], ["n", ">", 3]]))),
                &order,
                &indexes
            ),
            Some("{ fields: [done, n, created_at] }".into())
        );
        assert_eq!(
            needed(
                Some(&filter(json!(["labels", "contains", "x"]))),
                &[],
                &indexes
            ),
            Some("{ fields: [labels], multi: true }".into())
        );
        assert_eq!(
            needed(
                Some(&filter(
                    json!({"or": [["owner", "==", "a"], ["done", "==", true]]})
                )),
                &[],
                &indexes
            ),
            Some("{ fields: [done] }".into())
        );
        assert_eq!(needed(None, &[], &indexes), None);
        assert_eq!(
            needed(None, &order, &indexes),
            Some("{ fields: [created_at] }".into())
        );
        let by_owner = super::super::wire::order(&json!(["owner"])).unwrap();
        assert_eq!(needed(None, &by_owner, &indexes), None);
    }
}
