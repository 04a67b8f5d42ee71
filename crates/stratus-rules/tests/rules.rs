//! The rules language end to end: parse, evaluate, lookups, query
//! implication and the bounds. Every test asserts the verdict, and for a
//! denial what its reason says.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};
use stratus_rules::{
    BUCKET_ROOTS, COLLECTION_ROOTS, Env, Looked, Lookup, MAX_SOURCE_BYTES, NoLookup, ParseError,
    Request, Rule, Verdict,
};

fn alice() -> Value {
    json!({"uid": "alice", "provider": "password", "claims": {"admin": false, "tier": "pro"}})
}

fn stored() -> Value {
    json!({
        "owner": "alice",
        "title": "Hello",
        "tags": ["a", "b"],
        "address": {"city": "Paris", "zip": "75001"},
        "count": 3,
        "score": 2.5,
        "nothing": null,
        "items": [{"qty": 2}, {"qty": 12}],
    })
}

/// What one evaluation sees; `Case::new()` is alice reading her own
/// document.
struct Case {
    auth: Option<Value>,
    doc: Option<Value>,
    new: Option<Value>,
    time: i64,
    size: Option<u64>,
    id: Option<String>,
    resource: Option<Value>,
    roots: &'static [&'static str],
}

impl Case {
    fn new() -> Case {
        Case {
            auth: Some(alice()),
            doc: Some(stored()),
            new: None,
            time: 1_700_000_000_000,
            size: None,
            id: None,
            resource: None,
            roots: COLLECTION_ROOTS,
        }
    }

    fn env(&self) -> Env<'_> {
        Env {
            auth: self.auth.as_ref(),
            doc: self.doc.as_ref(),
            request: Request {
                doc: self.new.as_ref(),
                time: self.time,
                size: self.size,
                id: self.id.as_deref(),
            },
            resource: self.resource.as_ref(),
        }
    }

    fn rule(&self, src: &str) -> Rule {
        Rule::parse(src, self.roots).unwrap_or_else(|e| panic!("{src:?} does not parse: {e}"))
    }

    fn run(&self, src: &str) -> Verdict {
        self.run_with(src, &NoLookup)
    }

    fn run_with(&self, src: &str, lookup: &dyn Lookup) -> Verdict {
        self.rule(src).evaluate(&self.env(), lookup)
    }

    fn allows(&self, src: &str) {
        assert_eq!(self.run(src), Verdict::Allow, "{src}");
    }

    fn denies(&self, src: &str, because: &str) -> String {
        deny_reason(src, self.run(src), because)
    }
}

fn deny_reason(src: &str, verdict: Verdict, because: &str) -> String {
    match verdict {
        Verdict::Deny(why) => {
            assert!(
                why.contains(because),
                "{src}: the reason {why:?} does not say {because:?}"
            );
            why
        }
        other => panic!("{src}: expected a denial ({because}), got {other:?}"),
    }
}

fn allows(src: &str) {
    Case::new().allows(src);
}

fn denies(src: &str, because: &str) -> String {
    Case::new().denies(src, because)
}

fn parse_fails(src: &str, because: &str) -> ParseError {
    match Rule::parse(src, COLLECTION_ROOTS) {
        Ok(rule) => panic!("{src:?} parsed: {rule:?}"),
        Err(e) => {
            assert!(
                e.message().contains(because),
                "{src:?}: the error {:?} does not say {because:?}",
                e.to_string()
            );
            e
        }
    }
}

fn lookups(entries: &[(&str, Option<Value>)]) -> HashMap<String, Option<Value>> {
    entries
        .iter()
        .map(|(p, v)| ((*p).to_owned(), v.clone()))
        .collect()
}

fn fixed(entries: &[(&str, Vec<Value>)]) -> BTreeMap<String, Vec<Value>> {
    entries
        .iter()
        .map(|(p, v)| ((*p).to_owned(), v.clone()))
        .collect()
}

fn implied(src: &str, fixed: &BTreeMap<String, Vec<Value>>) -> Verdict {
    let case = Case::new();
    case.rule(src).implied(&case.env(), fixed, &NoLookup)
}

// ---------------------------------------------------------------- values

#[test]
fn literals_compare_equal() {
    for src in [
        "null == null",
        "true == true",
        "false != true",
        "'a' == \"a\"",
        "[] == []",
        "{} == {}",
        "[1, 'x', null, true] == [1, 'x', null, true]",
        "{'a': 1, 'b': [2]} == {'a': 1, 'b': [2]}",
        "[1, 2,] == [1, 2]",
    ] {
        allows(src);
    }
}

#[test]
fn numbers_are_one_type_whether_written_whole_or_decimal() {
    for src in [
        "1 == 1.0",
        "2.5 * 2 == 5",
        "1e3 == 1000",
        "1.5e-1 == 0.15",
        "-0.0 == 0",
        "0.1 + 0.2 > 0.3",
        "9007199254740993 > 9007199254740992.0",
        "doc.count == 3.0",
        "[1] == [1.0]",
    ] {
        allows(src);
    }
}

#[test]
fn values_of_different_types_are_unequal_not_errors() {
    denies("1 == '1'", "`1 == '1'` is false");
    allows("null != false");
    allows("[] != {}");
    allows("doc.nothing == null");
    denies("doc.tags == 'a'", "is false");
}

#[test]
fn string_escapes() {
    for src in [
        r#"'it\'s' == "it's""#,
        r#""say \"hi\"" == 'say "hi"'"#,
        r"'\u00e9' == 'é'",
        r"'\uD83D\uDE00' == '😀'",
        r"size('\uD83D\uDE00') == 1",
        r"'a\nb' != 'a b'",
        r"size('a\tb\\') == 4",
    ] {
        allows(src);
    }
}

#[test]
fn deep_equality_of_lists_and_maps() {
    allows("[1, [2, {'a': null}]] == [1.0, [2, {'a': null}]]");
    allows("{'a': 1, 'b': 2} == {'b': 2, 'a': 1}");
    allows("doc.address == {'city': 'Paris', 'zip': '75001'}");
    allows("doc.tags == ['a', 'b']");
    allows("doc.tags != ['b', 'a']");
    allows("doc.address != {'city': 'Paris'}");
    allows("doc.items[1] == {'qty': 12.0}");
}

// ------------------------------------------------------------- operators

#[test]
fn arithmetic_and_precedence() {
    for src in [
        "1 + 2 * 3 == 7",
        "(1 + 2) * 3 == 9",
        "10 - 2 - 3 == 5",
        "2 * 3 % 4 == 2",
        "doc.count * doc.score == 7.5",
        "1 + 2 == 3 && 2 * 2 == 4",
    ] {
        allows(src);
    }
}

#[test]
fn division_is_exact_when_it_can_be_and_decimal_otherwise() {
    allows("7 / 2 == 3.5");
    allows("6 / 3 == 2");
    allows("string(6 / 3) == '2'");
    allows("-7 % 3 == -1");
    allows("7.5 % 2 == 1.5");
    allows("1 / 3 > 0.333 && 1 / 3 < 0.334");
}

#[test]
fn division_by_zero_denies() {
    denies("1 / 0 == 1", "division by zero in `1 / 0`");
    denies("5 % 0 == 0", "division by zero");
    denies("1.5 / 0.0 > 0", "division by zero");
    denies("doc.count / (doc.count - 3) > 0", "division by zero");
}

#[test]
fn integer_overflow_denies() {
    denies("9223372036854775807 + 1 > 0", "integer overflow");
    denies("9223372036854775807 * 2 > 0", "integer overflow");
    denies("1e308 * 10 > 0", "out of range");
}

#[test]
fn unary_minus() {
    allows("-doc.count == -3");
    allows("-(1 - 3) == 2");
    allows("- -3 == 3");
    allows("-doc.score == -2.5");
    denies("-'a' == 1", "'-' needs a number, but `'a'` is a string");
    denies("-doc.nothing == 1", "`doc.nothing` is null");
}

#[test]
fn not_operator() {
    allows("!false");
    allows("!!true");
    allows("!(doc.count > 5)");
    denies("!true", "`!true` is false");
    denies(
        "!doc.count",
        "'!' needs true or false, but `doc.count` is a number",
    );
    denies("!null", "'!' needs true or false, but `null` is null");
}

#[test]
fn string_concatenation() {
    allows("'a' + 'b' == 'ab'");
    allows("'users/' + auth.uid + '/' == 'users/alice/'");
    allows("doc.title + '!' == 'Hello!'");
    allows("'' + '' == ''");
}

#[test]
fn list_concatenation() {
    allows("[1] + [2] == [1, 2]");
    allows("doc.tags + ['c'] == ['a', 'b', 'c']");
    allows("size(doc.tags + doc.tags) == 4");
    allows("[] + [] == []");
}

#[test]
fn plus_of_a_string_and_a_number_is_an_error_that_suggests_string() {
    let why = denies(
        "'n' + 1 == 'n1'",
        "'+' adds two numbers or joins two strings or two lists",
    );
    assert!(why.contains("string(…)"), "{why}");
    allows("'n' + string(1) == 'n1'");
    denies("[1] + 1 == [1, 1]", "`[1]` is a list and `1` is a number");
}

#[test]
fn ordering_of_numbers_and_strings() {
    allows("1 < 2 && 2 <= 2 && 3 > 2 && 3 >= 3");
    allows("1.5 < 2 && 2 > 1.5");
    allows("'a' < 'b' && 'abc' < 'abd' && 'ab' < 'abc' && 'Z' < 'a'");
    allows("doc.title >= 'Hello' && doc.title <= 'Hello'");
    denies("2 < 1", "`2 < 1` is false");
}

#[test]
fn ordering_other_types_is_an_error() {
    denies(
        "1 < 'a'",
        "'<' orders two numbers or two strings, but `1` is a number and `'a'` is a string",
    );
    denies("null < 1", "'<' orders two numbers or two strings");
    denies("[1] >= [0]", "'>=' orders two numbers or two strings");
    denies("true > false", "'>' orders two numbers or two strings");
}

#[test]
fn in_operator() {
    allows("'a' in doc.tags");
    allows("1.0 in [1, 2]");
    allows("[1] in [[1], [2]]");
    allows("'city' in doc.address");
    allows("'ell' in doc.title");
    allows("'' in 'abc'");
    allows("!('z' in doc.tags)");
    allows("!('country' in doc.address)");
}

#[test]
fn in_that_is_false_names_itself() {
    denies("'z' in doc.tags", "`'z' in doc.tags` is false");
}

#[test]
fn in_needs_a_container() {
    denies(
        "1 in 5",
        "look in a list, a map or a string, but `5` is a number",
    );
    denies(
        "1 in doc.address",
        "a map's keys are strings, but `1` is a number",
    );
    denies("1 in 'abc'", "only a string can be found in a string");
    denies("'a' in doc.nothing", "`doc.nothing` is null");
}

#[test]
fn ternary() {
    allows("auth.uid == 'alice' ? true : false");
    allows("(doc.count > 2 ? 'big' : 'small') == 'big'");
    allows("(false ? 1 : true ? 2 : 3) == 2");
    allows("(doc.count > 5 ? doc.missing : doc.count) == 3");
    denies("auth.uid == 'bob' ? true : false", "is false");
}

#[test]
fn ternary_needs_a_bool_condition() {
    denies(
        "doc.count ? true : false",
        "the condition before '?' must be true or false, but `doc.count` is a number",
    );
    denies("doc.missing ? true : false", "`doc` has no field `missing`");
}

// --------------------------------------------------------- fields, index

#[test]
fn nested_fields_and_indexes() {
    for src in [
        "doc.address.city == 'Paris'",
        "doc['address']['zip'] == '75001'",
        "doc.tags[1] == 'b'",
        "doc.tags[1.0] == 'b'",
        "doc.items[1].qty == 12",
        "doc.items[0]['qty'] < doc.items[1].qty",
        "auth.claims.tier == 'pro'",
        "doc[auth.uid == 'alice' ? 'owner' : 'title'] == 'alice'",
        "{'a': {'b': [10, 20]}}.a.b[1] == 20",
        "['x', 'y'][doc.count - 2] == 'y'",
    ] {
        allows(src);
    }
}

#[test]
fn a_missing_field_denies_naming_it() {
    denies("doc.missing == 1", "`doc` has no field `missing`");
    denies(
        "doc.address.country == 'FR'",
        "`doc.address` has no field `country`",
    );
    denies("doc['no such'] == 1", "`doc` has no field `no such`");
    denies("auth.claims.admin2", "`auth.claims` has no field `admin2`");
}

#[test]
fn a_field_of_null_denies() {
    let case = Case {
        doc: None,
        ..Case::new()
    };
    case.denies(
        "doc.owner == auth.uid",
        "`doc` is null, so it has no field `owner`",
    );
    case.allows("doc == null");
    denies(
        "doc.nothing.x == 1",
        "`doc.nothing` is null, so it has no field `x`",
    );
}

#[test]
fn a_field_of_a_non_map_denies() {
    denies(
        "doc.count.x == 1",
        "`doc.count` is a number, not a map, so it has no field `x`",
    );
    denies("doc.tags.first == 'a'", "`doc.tags` is a list, not a map");
}

#[test]
fn signed_out_clients() {
    let case = Case {
        auth: None,
        ..Case::new()
    };
    case.denies(
        "auth.uid == doc.owner",
        "`auth` is null (not signed in), so it has no field `uid`",
    );
    case.denies(
        "auth != null && doc.owner == auth.uid",
        "`auth != null` is false",
    );
    case.allows("auth == null");
    // JSON null counts as signed out too.
    let case = Case {
        auth: Some(Value::Null),
        ..Case::new()
    };
    case.denies("auth.uid == 'x'", "(not signed in)");
}

#[test]
fn index_errors() {
    denies(
        "doc.tags[2] == 'c'",
        "index 2 is out of range for `doc.tags`, which has 2 elements",
    );
    denies("doc.tags[-1] == 'b'", "index -1 is out of range");
    denies(
        "doc.tags[0.5] == 'a'",
        "a list index must be a whole number, but `0.5` is 0.5",
    );
    denies(
        "doc.tags['a'] == 'a'",
        "a list index must be a number, but `'a'` is a string",
    );
    denies(
        "doc.count[0] == 3",
        "`doc.count` is a number; only lists and maps can be indexed",
    );
    denies(
        "doc[1] == 1",
        "a map key must be a string, but `1` is a number",
    );
    denies("doc.title[0] == 'H'", "only lists and maps can be indexed");
}

#[test]
fn list_and_map_literals_hold_expressions() {
    allows("{'a': 1 + 1}['a'] == 2");
    allows("[auth.uid, 'x'][0] == 'alice'");
    allows("{auth.uid: true}[auth.uid]");
    allows("size({'a': 1, 'b': 2}) == 2");
    allows("keys({'k': doc.count}) == ['k']");
}

#[test]
fn a_key_given_twice_denies() {
    denies(
        "{'a': 1, 'a': 2} == {}",
        "the key 'a' appears twice in a map",
    );
    denies("{auth.uid: 1, 'alice': 2} == {}", "appears twice");
    denies(
        "{1: 2} == {}",
        "map keys must be strings, but `1` is a number",
    );
}

#[test]
fn keywords_can_be_field_names() {
    allows("{'in': 1}.in == 1");
    allows("{'null': 2}.null == 2");
    allows("{'size': 3}.size == 3");
}

// ------------------------------------------------------------- functions

#[test]
fn size_of_strings_lists_and_maps() {
    allows("size(doc.title) == 5");
    allows("size('héllo') == 5");
    allows("size('') == 0");
    allows("size(doc.tags) == 2");
    allows("size(doc.address) == 2");
    allows("doc.title.size() == 5");
    allows("doc.tags.size() == 2");
    denies(
        "size(doc.count) == 1",
        "size(…) measures a string, a list or a map, but `doc.count` is a number",
    );
    denies("size(null) == 0", "but `null` is null");
}

#[test]
fn starts_with_and_ends_with() {
    allows("starts_with(doc.title, 'He')");
    allows("doc.title.starts_with('Hell')");
    allows("ends_with(doc.title, 'llo')");
    allows("doc.title.ends_with('')");
    allows("!doc.title.starts_with('hello')");
    denies(
        "starts_with(doc.count, '3')",
        "starts_with(…) needs two strings, but `doc.count` is a number",
    );
    denies("doc.title.ends_with(1)", "ends_with(…) needs two strings");
}

#[test]
fn contains_on_strings_lists_and_maps() {
    allows("contains(doc.title, 'ell')");
    allows("contains(doc.tags, 'b')");
    allows("doc.tags.contains('a')");
    allows("doc.address.contains('zip')");
    allows("!contains(doc.tags, 'z')");
    denies("contains(3, 3)", "but `3` is a number");
}

#[test]
fn lower_and_upper() {
    allows("lower(doc.title) == 'hello'");
    allows("upper(doc.title) == 'HELLO'");
    allows("'ÉTÉ'.lower() == 'été'");
    allows("'abc'.upper() == 'ABC'");
    denies(
        "lower(1) == '1'",
        "lower(…) needs a string, but `1` is a number",
    );
}

#[test]
fn type_names() {
    for src in [
        "type(null) == 'null'",
        "type(true) == 'bool'",
        "type(1) == 'number'",
        "type(1.5) == 'number'",
        "type('s') == 'string'",
        "type(doc.tags) == 'list'",
        "type(doc) == 'map'",
        "type([]) == 'list' && type({}) == 'map'",
        "doc.address.type() == 'map'",
    ] {
        allows(src);
    }
}

#[test]
fn has_keys_of_maps() {
    allows("has(doc, 'owner')");
    allows("!has(doc, 'missing')");
    allows("has(doc, 'nothing')");
    allows("doc.address.has('city')");
    allows("has(doc, 'missing') ? doc.missing == 1 : true");
    denies(
        "has(doc.tags, 'a')",
        "has(…) looks in a map, but `doc.tags` is a list",
    );
    denies(
        "has(doc, 1)",
        "has(…) needs a string key, but `1` is a number",
    );
}

#[test]
fn keys_of_maps() {
    allows("size(keys(doc.address)) == 2");
    allows("'city' in keys(doc.address) && 'zip' in doc.address.keys()");
    allows("keys({}) == []");
    denies(
        "keys(doc.tags) == []",
        "keys(…) needs a map, but `doc.tags` is a list",
    );
}

#[test]
fn int_conversion() {
    allows("int(3.7) == 3");
    allows("int(-3.7) == -3");
    allows("int('42') == 42");
    allows("int('-7') == -7");
    allows("int(doc.count) == 3");
    allows("type(int(2.0)) == 'number'");
    denies("int('x') == 0", "int(…) cannot read 'x' as an integer");
    denies("int('3.5') == 3", "cannot read '3.5' as an integer");
    denies(
        "int(true) == 1",
        "int(…) converts a number or a string, but `true` is a bool",
    );
    denies("int(1e300) == 0", "too large for an integer");
}

#[test]
fn string_conversion() {
    for src in [
        "string(5) == '5'",
        "string(-5) == '-5'",
        "string(2.5) == '2.5'",
        "string(5.0) == '5'",
        "string(true) == 'true'",
        "string(null) == 'null'",
        "string('x') == 'x'",
        "string([1, 'a', null]) == '[1,\"a\",null]'",
        "string({'k': [true]}) == '{\"k\":[true]}'",
        "string(doc.address) == '{\"city\":\"Paris\",\"zip\":\"75001\"}'",
        "doc.count.string() == '3'",
    ] {
        allows(src);
    }
}

// ------------------------------------------------ errors and absorption

#[test]
fn the_result_must_be_a_bool() {
    denies(
        "1 + 1",
        "the rule must come out true or false, but it gave a number",
    );
    denies("null", "but it gave null");
    denies("'true'", "but it gave a string");
    denies("doc.tags", "but it gave a list");
    denies("false", "`false` is false");
}

#[test]
fn or_is_true_if_either_side_is_true_even_if_the_other_errored() {
    allows("doc.missing == 1 || true");
    allows("true || doc.missing == 1");
    allows("doc.missing == 1 || doc.count == 3");
    allows("1 / 0 == 1 || auth.uid == 'alice'");
    allows("doc.missing || true");
}

#[test]
fn or_without_a_true_side_keeps_the_error() {
    denies("doc.missing == 1 || false", "`doc` has no field `missing`");
    denies("false || doc.missing == 1", "`doc` has no field `missing`");
    denies(
        "false || 1",
        "'||' needs true or false on each side, but `1` is a number",
    );
    denies("false || false", "`false || false` is false");
}

#[test]
fn and_is_false_if_either_side_is_false_even_if_the_other_errored() {
    denies("doc.missing == 1 && false", "`false` is false");
    denies("false && doc.missing == 1", "`false` is false");
    // The absorbed error is a real false: negating it allows.
    allows("!(doc.missing == 1 && false)");
    allows("(doc.missing == 1 && false) || true");
    denies("1 && false", "`false` is false");
}

#[test]
fn and_without_a_false_side_keeps_the_error() {
    denies("doc.missing == 1 && true", "`doc` has no field `missing`");
    denies(
        "true && 1",
        "'&&' needs true or false on each side, but `1` is a number",
    );
    allows("1 || true");
}

#[test]
fn other_operators_propagate_errors() {
    denies("!(doc.missing == 1)", "`doc` has no field `missing`");
    denies(
        "(doc.missing == 1) == false",
        "`doc` has no field `missing`",
    );
    denies("size(doc.missing) > 0", "`doc` has no field `missing`");
    denies("[doc.missing] == []", "`doc` has no field `missing`");
}

#[test]
fn the_reason_names_the_conjunct_that_failed() {
    denies(
        "auth != null && size(doc.title) <= 3 && doc.count == 3",
        "`size(doc.title) <= 3` is false",
    );
    denies("auth.uid == 'bob'", "`auth.uid == 'bob'` is false");
}

// ----------------------------------------------------- the brief's rules

const READ: &str = "auth.uid == doc.owner";
const CREATE: &str =
    "auth != null && request.doc.owner == auth.uid && size(request.doc.title) <= 200";
const UPDATE: &str = "auth.uid == doc.owner && !changed('owner')";
const DELETE: &str = "auth.uid == doc.owner || get('admins/' + auth.uid) != null";

#[test]
fn read_rule() {
    Case::new().allows(READ);
    let bob = Case {
        auth: Some(json!({"uid": "bob"})),
        ..Case::new()
    };
    bob.denies(READ, "`auth.uid == doc.owner` is false");
}

#[test]
fn create_rule() {
    let mut case = Case {
        doc: None,
        new: Some(json!({"owner": "alice", "title": "New"})),
        ..Case::new()
    };
    case.allows(CREATE);
    case.new = Some(json!({"owner": "bob", "title": "New"}));
    case.denies(CREATE, "`request.doc.owner == auth.uid` is false");
    case.new = Some(json!({"owner": "alice", "title": "x".repeat(201)}));
    case.denies(CREATE, "`size(request.doc.title) <= 200` is false");
    case.new = Some(json!({"owner": "alice"}));
    case.denies(CREATE, "`request.doc` has no field `title`");
    case.auth = None;
    case.denies(CREATE, "`auth != null` is false");
}

#[test]
fn update_rule_protects_the_owner_field() {
    let mut case = Case {
        new: Some(json!({"owner": "alice", "title": "Changed"})),
        ..Case::new()
    };
    case.allows(UPDATE);
    case.new = Some(json!({"owner": "mallory", "title": "Hello"}));
    case.denies(UPDATE, "`!changed('owner')` is false");
    // Removing the protected field changes it too.
    case.new = Some(json!({"title": "Hello"}));
    case.denies(UPDATE, "`!changed('owner')` is false");
    // And someone else may not update at all.
    case.new = Some(json!({"owner": "alice", "title": "Changed"}));
    case.auth = Some(json!({"uid": "mallory"}));
    case.denies(UPDATE, "`auth.uid == doc.owner` is false");
}

#[test]
fn update_rule_with_several_protected_fields_and_nested_ones() {
    let rule = "!changed('owner') && !changed('address.city') && changed('title')";
    let mut new = stored();
    new["title"] = json!("Changed");
    new["address"]["zip"] = json!("75002");
    let mut case = Case {
        new: Some(new.clone()),
        ..Case::new()
    };
    case.allows(rule);
    new["address"]["city"] = json!("Lyon");
    case.new = Some(new.clone());
    case.denies(rule, "`!changed('address.city')` is false");
    // Replacing `address` with a non-map removes `address.city`.
    new["address"] = json!("somewhere");
    case.new = Some(new);
    case.denies(rule, "`!changed('address.city')` is false");
}

#[test]
fn changed_compares_values_not_representations() {
    let mut new = stored();
    new["count"] = json!(3.0);
    let case = Case {
        new: Some(new),
        ..Case::new()
    };
    case.allows("!changed('count') && !changed('tags') && !changed('nothing')");
    // A field absent on both sides has not changed; added, it has.
    case.allows("!changed('never')");
    let case = Case {
        new: Some(json!({"extra": 1})),
        doc: Some(json!({})),
        ..Case::new()
    };
    case.allows("changed('extra') && !changed('other')");
}

#[test]
fn changed_on_a_create_counts_every_field_of_the_new_document() {
    let case = Case {
        doc: None,
        new: Some(json!({"owner": "alice"})),
        ..Case::new()
    };
    case.allows("changed('owner') && !changed('title')");
}

#[test]
fn changed_needs_a_field_path() {
    let case = Case {
        new: Some(stored()),
        ..Case::new()
    };
    case.denies(
        "!changed('')",
        "changed(…) takes a field path such as 'owner'",
    );
    case.denies("!changed('a..b')", "not 'a..b'");
    case.denies("!changed(1)", "but `1` is a number");
    parse_fails(
        "doc.changed('owner')",
        "changed(…) cannot be called as a method",
    );
}

#[test]
fn delete_rule_with_an_admin_lookup() {
    // The owner needs no lookup.
    Case::new().allows(DELETE);
    let bob = Case {
        auth: Some(json!({"uid": "bob"})),
        ..Case::new()
    };
    assert_eq!(bob.run(DELETE), Verdict::Need("admins/bob".into()));
    let found = lookups(&[("admins/bob", Some(json!({"since": 2020})))]);
    assert_eq!(bob.run_with(DELETE, &found), Verdict::Allow);
    let missing = lookups(&[("admins/bob", None)]);
    deny_reason(
        DELETE,
        bob.run_with(DELETE, &missing),
        "`auth.uid == doc.owner || get('admins/' + auth.uid) != null` is false",
    );
}

// --------------------------------------------------------------- lookups

#[test]
fn get_reads_fields_of_the_document_found() {
    let rule = "get('users/' + auth.uid).role == 'editor'";
    let case = Case::new();
    assert_eq!(case.run(rule), Verdict::Need("users/alice".into()));
    let found = lookups(&[("users/alice", Some(json!({"role": "editor"})))]);
    assert_eq!(case.run_with(rule, &found), Verdict::Allow);
    let other = lookups(&[("users/alice", Some(json!({"role": "viewer"})))]);
    deny_reason(rule, case.run_with(rule, &other), "is false");
    let missing = lookups(&[("users/alice", None)]);
    deny_reason(
        rule,
        case.run_with(rule, &missing),
        "`get('users/' + auth.uid)` is null, so it has no field `role`",
    );
}

#[test]
fn a_closure_can_answer_lookups_with_owned_values() {
    let calls = Cell::new(0);
    let lookup = |path: &str| {
        calls.set(calls.get() + 1);
        match path {
            "teams/red" => Looked::Found(Cow::Owned(json!({"members": ["alice", "carol"]}))),
            _ => Looked::Missing,
        }
    };
    let case = Case::new();
    let rule = "auth.uid in get('teams/red').members && get('teams/red').members[1] == 'carol'";
    assert_eq!(case.run_with(rule, &lookup), Verdict::Allow);
    // The same path is looked up once per evaluation.
    assert_eq!(calls.get(), 1);
    assert_eq!(
        case.run_with("get('teams/blue') == null", &lookup),
        Verdict::Allow
    );
}

#[test]
fn exists_says_whether_there_is_a_document() {
    let case = Case::new();
    let map = lookups(&[("bans/alice", None), ("members/alice", Some(json!({})))]);
    assert_eq!(
        case.run_with(
            "!exists('bans/alice') && exists('members/' + auth.uid)",
            &map
        ),
        Verdict::Allow
    );
    assert_eq!(
        case.run("exists('members/alice')"),
        Verdict::Need("members/alice".into())
    );
    deny_reason(
        "",
        case.run_with("exists('bans/alice')", &map),
        "`exists('bans/alice')` is false",
    );
}

#[test]
fn lookup_paths_must_be_collection_slash_id() {
    for (src, said) in [
        (
            "get('admins') == null",
            "get(…) takes a path 'collection/id', but `'admins'` is 'admins'",
        ),
        ("get('a/b/c') == null", "is 'a/b/c'"),
        ("get('/x') == null", "is '/x'"),
        ("exists('x/')", "exists(…) takes a path 'collection/id'"),
        (
            "get(1) == null",
            "get(…) takes a path such as 'users/alice', but `1` is a number",
        ),
    ] {
        denies(src, said);
    }
    parse_fails("'a/b'.get() == null", "get(…) cannot be called as a method");
}

#[test]
fn lookups_are_capped_per_evaluation() {
    let map: HashMap<String, Option<Value>> = (0..20).map(|i| (format!("c/{i}"), None)).collect();
    let ten = (0..10)
        .map(|i| format!("!exists('c/{i}')"))
        .collect::<Vec<_>>()
        .join(" && ");
    assert_eq!(Case::new().run_with(&ten, &map), Verdict::Allow);
    let eleven = format!("{ten} && !exists('c/10')");
    deny_reason(
        &eleven,
        Case::new().run_with(&eleven, &map),
        "the rule reads more than 10 documents with get() and exists()",
    );
    // The bound is not absorbed by `||`.
    let absorbed = format!("({eleven}) || true");
    deny_reason(
        &absorbed,
        Case::new().run_with(&absorbed, &map),
        "more than 10 documents",
    );
}

#[test]
fn the_same_path_counts_once() {
    let map = lookups(&[("c/1", None)]);
    let rule = (0..30)
        .map(|_| "!exists('c/' + '1')")
        .collect::<Vec<_>>()
        .join(" && ");
    assert_eq!(Case::new().run_with(&rule, &map), Verdict::Allow);
}

#[test]
fn a_needed_fetch_is_absorbed_like_an_error() {
    // True on the other side: no fetch needed.
    allows("get('admins/alice') != null || auth.uid == 'alice'");
    // False on the other side of `&&`: no fetch needed either way round.
    denies(
        "auth.uid == 'bob' && get('x/y') != null",
        "`auth.uid == 'bob'` is false",
    );
    denies(
        "get('x/y') != null && auth.uid == 'bob'",
        "`auth.uid == 'bob'` is false",
    );
    // Otherwise the fetch is needed, even over an error: it may make the
    // `||` true.
    assert_eq!(
        Case::new().run("doc.missing == 1 || get('a/b') != null"),
        Verdict::Need("a/b".into())
    );
    // An `&&` with an error can never be true: no fetch.
    denies(
        "doc.missing == 1 && get('a/b') != null",
        "`doc` has no field `missing`",
    );
}

// --------------------------------------------------------------- buckets

#[test]
fn bucket_rules() {
    let read = "resource.key.starts_with('public/')";
    let write = "auth != null && request.size < 1048576 && starts_with(resource.key, 'users/' + auth.uid + '/')";
    let mut case = Case {
        doc: None,
        resource: Some(json!({"key": "public/logo.png", "size": 1200})),
        roots: BUCKET_ROOTS,
        ..Case::new()
    };
    case.allows(read);
    case.denies(write, "is false");
    case.resource = Some(json!({"key": "users/alice/avatar.png", "size": 0}));
    case.size = Some(2048);
    case.allows(write);
    case.denies(read, "`resource.key.starts_with('public/')` is false");
    case.size = Some(2 * 1048576);
    case.denies(write, "`request.size < 1048576` is false");
    case.allows("resource.size == 0 && request.size == 2097152");
}

#[test]
fn roots_depend_on_the_kind_of_rule() {
    let e = Rule::parse("resource.key == 'x'", COLLECTION_ROOTS).unwrap_err();
    assert_eq!(
        e.message(),
        "`resource` is not available in this rule; it can use auth, doc, request"
    );
    let e = Rule::parse("doc.owner == 'x'", BUCKET_ROOTS).unwrap_err();
    assert_eq!(
        e.message(),
        "`doc` is not available in this rule; it can use auth, request, resource"
    );
    assert!(Rule::parse("resource.key == 'x'", BUCKET_ROOTS).is_ok());
}

#[test]
fn request_fields() {
    allows("request.time > 1600000000000");
    allows("request.doc == null");
    allows("type(request) == 'map' && has(request, 'doc') && !has(request, 'size')");
    allows("request['time'] == request.time");
    denies(
        "request.size < 10",
        "`request` has no field `size`; it has doc and time",
    );
    denies("request.method == 'GET'", "`request` has no field `method`");
}

// --------------------------------------------------------- parse errors

#[test]
fn an_unknown_name_is_refused_naming_what_is_allowed() {
    let e = parse_fails(
        "user.uid == doc.owner",
        "unknown name `user`; this rule can use auth, doc, request",
    );
    assert_eq!(e.offset(), 0);
    let e = parse_fails("auth.uid == owner", "unknown name `owner`");
    assert_eq!(
        e.to_string(),
        "column 13: unknown name `owner`; this rule can use auth, doc, request"
    );
    let e = Rule::parse("doc == null", &[]).unwrap_err();
    assert!(e.message().contains("it can use no variables"), "{e}");
}

#[test]
fn unknown_functions_and_methods_are_refused() {
    let e = parse_fails(
        "length(doc.title) < 5",
        "unknown function `length`; the functions are size, changed, get",
    );
    assert_eq!(e.column(), 1);
    parse_fails(
        "doc.title.len() < 5",
        "unknown method `len`; the functions are size",
    );
    parse_fails("size < 5", "`size` is a function: call it as size(…)");
}

#[test]
fn wrong_arity_is_refused() {
    let e = parse_fails(
        "size(doc.title, 1) < 5",
        "size(…) takes 1 argument, but 2 were given",
    );
    assert_eq!(
        e.to_string(),
        "column 1: size(…) takes 1 argument, but 2 were given"
    );
    parse_fails(
        "starts_with(doc.title)",
        "starts_with(…) takes 2 arguments, but 1 was given",
    );
    parse_fails("has()", "has(…) takes 2 arguments, but 0 were given");
    parse_fails(
        "doc.title.starts_with('a', 'b')",
        "`.starts_with(…)` takes 1 argument besides the value it is called on, but 2 were given",
    );
    parse_fails("doc.title.size(1)", "`.size(…)` takes 0 arguments besides");
}

#[test]
fn a_missing_parenthesis_says_where() {
    let e = parse_fails(
        "size(doc.title <= 200",
        "expected ')' after the arguments of size(…)",
    );
    assert_eq!(e.offset(), 21);
    assert_eq!(
        e.to_string(),
        "column 22: expected ')' after the arguments of size(…), found the end of the rule"
    );
    let e = parse_fails(
        "size(doc.title] <= 200",
        "expected ')' after the arguments of size(…), found ']'",
    );
    assert_eq!(e.column(), 15);
    parse_fails("(auth != null", "expected ')' to close the '(' at column 1");
    parse_fails(
        "[1, 2",
        "expected ',' or ']' in the list opened at column 1",
    );
    parse_fails(
        "{'a': 1 'b': 2}",
        "expected ',' or '}' in the map opened at column 1",
    );
    parse_fails("{'a' 1}", "expected ':' after the map key");
    parse_fails(
        "doc.tags[0 == 'a'",
        "expected ']' to close the '[' at column 9",
    );
    parse_fails("true ? 1", "expected ':' for the '?' at column 6");
    parse_fails("doc. == 1", "expected a field or method name after '.'");
}

#[test]
fn unterminated_strings_are_refused_where_they_open() {
    let e = parse_fails(
        "doc.title == 'abc",
        "unterminated string: the ' that opens it is never closed",
    );
    assert_eq!(e.column(), 14);
    let e = parse_fails("doc.title == \"abc\\\"", "unterminated string");
    assert_eq!(e.column(), 14);
}

#[test]
fn bad_escapes_are_refused() {
    parse_fails(r"'\q' == 'q'", "unknown escape '\\q' in a string");
    parse_fails(
        r"'\u12' == 'q'",
        "'\\u' must be followed by exactly four hex digits",
    );
    parse_fails(r"'\uD800' == 'q'", "half of a surrogate pair");
    parse_fails(r"'\uDC00' == 'q'", "lone surrogate");
}

#[test]
fn operator_mistakes_get_hints() {
    parse_fails(
        "doc.owner = auth.uid",
        "'=' is not an operator here; compare with '=='",
    );
    parse_fails("true & true", "write '&&' for \"and\"");
    parse_fails("true | true", "write '||' for \"or\"");
    parse_fails(
        "auth.uid === 'x'",
        "'===' is not an operator; compare with '=='",
    );
    parse_fails(
        "auth.uid !== 'x'",
        "'!==' is not an operator; compare with '!='",
    );
    parse_fails("true and true", "`and` is not an operator; write '&&'");
    parse_fails("(true or true)", "`or` is not an operator; write '||'");
    parse_fails("not true", "`not` is not an operator; write '!'");
    parse_fails("1 < 2 < 3", "comparisons cannot be chained");
    parse_fails("doc.owner # x", "unexpected character '#'");
    parse_fails(
        "auth.uid == doc.owner doc",
        "expected an operator or the end of the rule, found `doc`",
    );
    parse_fails(
        "auth &&",
        "expected an expression, found the end of the rule",
    );
    parse_fails("in doc.tags", "expected an expression, found `in`");
    parse_fails(
        "{owner: 1} == {}",
        "map keys are strings: write 'owner' in quotes",
    );
    parse_fails("1e999 == 1", "the number 1e999 is out of range");
}

#[test]
fn an_empty_rule_is_refused() {
    parse_fails("", "the rule is empty");
    parse_fails("  \n\t ", "the rule is empty");
}

#[test]
fn positions_are_lines_and_character_columns() {
    let e = parse_fails(
        "auth != null &&\n  size(doc.title) <=",
        "expected an expression",
    );
    assert_eq!((e.line(), e.column()), (2, 21));
    assert!(e.to_string().starts_with("line 2, column 21: "), "{e}");
    // Columns count characters; offsets count bytes.
    let e = parse_fails("'é' == )", "expected an expression, found ')'");
    assert_eq!((e.offset(), e.column()), (8, 8));
    let e = parse_fails("'éé' == )", "expected an expression");
    assert_eq!((e.offset(), e.column()), (10, 9));
}

// ---------------------------------------------------------------- bounds

#[test]
fn deep_nesting_is_refused_without_recursing() {
    // 100,000 parentheses: refused for the source's size.
    let huge = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
    parse_fails(&huge, "a rule may be at most 4096 bytes");
    // 2,000 fit in the size, not in the depth; nor do unclosed ones, nor
    // nested lists, nor a chain of unary operators.
    for src in [
        format!("{}1{} == 1", "(".repeat(2000), ")".repeat(2000)),
        "(".repeat(4000),
        format!("{}{} == []", "[".repeat(1000), "]".repeat(1000)),
        format!("{}true", "!".repeat(4000)),
        format!("{}1{} == -1", "-(".repeat(100), ")".repeat(100)),
    ] {
        parse_fails(&src, "the rule nests more than 64 levels deep");
    }
    // A long chain of `+` nests too: each `+` holds the one before.
    let plus = format!("{} == 1", vec!["1"; 100].join(" + "));
    parse_fails(&plus, "nests more than 64 levels");
}

#[test]
fn nesting_within_the_bound_is_fine_even_on_a_small_stack() {
    let handle = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(|| {
            let src = format!("{}true{}", "(".repeat(60), ")".repeat(60));
            let lists = format!(
                "{}{} == {}{}",
                "[".repeat(30),
                "]".repeat(30),
                "[".repeat(30),
                "]".repeat(30)
            );
            let nots = format!("{}true", "!".repeat(62));
            let plus = format!("{} == 60", vec!["1"; 60].join(" + "));
            for src in [src, lists, nots, plus] {
                let rule = Rule::parse(&src, COLLECTION_ROOTS).unwrap();
                assert_eq!(
                    rule.evaluate(&Env::default(), &NoLookup),
                    Verdict::Allow,
                    "{src}"
                );
            }
            // Deep refusals on the same small stack.
            let deep = format!("{}true{}", "(".repeat(2000), ")".repeat(2000));
            assert!(Rule::parse(&deep, COLLECTION_ROOTS).is_err());
        })
        .unwrap();
    handle.join().unwrap();
}

#[test]
fn long_chains_of_and_and_or_cost_no_depth() {
    let ands = vec!["true"; 500].join(" && ");
    assert!(ands.len() <= MAX_SOURCE_BYTES);
    allows(&ands);
    let ors = format!("{} || true", vec!["false"; 400].join(" || "));
    allows(&ors);
}

#[test]
fn the_source_size_is_bounded() {
    let fits = format!("true{}", " ".repeat(MAX_SOURCE_BYTES - 4));
    assert_eq!(fits.len(), 4096);
    allows(&fits);
    let over = format!("{fits} ");
    let e = parse_fails(
        &over,
        "the rule is 4097 bytes long; a rule may be at most 4096 bytes",
    );
    assert_eq!(e.offset(), 0);
}

#[test]
fn built_strings_are_capped() {
    let mut case = Case {
        new: Some(json!({"s": "x".repeat(30_000), "t": "y".repeat(40_000)})),
        ..Case::new()
    };
    case.allows("size(request.doc.s + request.doc.s) == 60000");
    case.denies(
        "size(request.doc.t + request.doc.t) > 0",
        "a string built with '+' would be 80000 bytes long; at most 65536 are allowed",
    );
    // A bound is never absorbed.
    case.denies(
        "size(request.doc.t + request.doc.t) > 0 || true",
        "at most 65536",
    );
    case.new = Some(json!({"big": "x".repeat(70_000)}));
    case.denies(
        "lower(request.doc.big) != ''",
        "lower(…) would build a string of more than 65536 bytes",
    );
    case.denies(
        "string([request.doc.big]) != ''",
        "string(…) would build a string of more than 65536 bytes",
    );
}

#[test]
fn built_lists_are_capped() {
    let case = Case {
        new: Some(json!({"l": vec![0; 40_000]})),
        ..Case::new()
    };
    case.denies(
        "size(request.doc.l + request.doc.l) > 0",
        "a list built with '+' would have 80000 elements; at most 65536 are allowed",
    );
    case.allows("size(request.doc.l + [1]) == 40001");
}

#[test]
fn the_step_budget_bounds_work_on_big_values() {
    let case = Case {
        new: Some(json!({"s": "x".repeat(1_000_000)})),
        ..Case::new()
    };
    // One pass over a megabyte fits; three do not.
    case.allows("size(request.doc.s) == 1000000");
    case.denies(
        "size(request.doc.s) + size(request.doc.s) + size(request.doc.s) > 0",
        "the rule exceeded its evaluation budget of 10000 steps",
    );
    case.denies(
        "(size(request.doc.s) + size(request.doc.s) + size(request.doc.s) > 0) || true",
        "evaluation budget",
    );
}

// ------------------------------------------------------ query implication

#[test]
fn implied_by_an_equality_filter() {
    let rule = "auth.uid == doc.owner";
    assert_eq!(
        implied(rule, &fixed(&[("owner", vec![json!("alice")])])),
        Verdict::Allow
    );
    deny_reason(
        rule,
        implied(rule, &fixed(&[("owner", vec![json!("bob")])])),
        "`auth.uid == doc.owner` is false",
    );
    deny_reason(
        rule,
        implied(rule, &BTreeMap::new()),
        "the query must filter on `owner` (==) for the read rule to hold",
    );
    // Filters on other fields do not help.
    deny_reason(
        rule,
        implied(rule, &fixed(&[("title", vec![json!("Hello")])])),
        "must filter on `owner`",
    );
}

#[test]
fn implied_by_an_in_filter_for_every_value() {
    let rule = "doc.status in ['draft', 'published'] && auth != null";
    let ok = fixed(&[("status", vec![json!("draft"), json!("published")])]);
    assert_eq!(implied(rule, &ok), Verdict::Allow);
    let bad = fixed(&[(
        "status",
        vec![json!("draft"), json!("deleted"), json!("published")],
    )]);
    deny_reason(
        rule,
        implied(rule, &bad),
        "for status == \"deleted\": `doc.status in ['draft', 'published']` is false",
    );
}

#[test]
fn implied_by_nested_fields() {
    let rule = "doc.address.city == 'Paris' && doc['address'].zip.starts_with('75')";
    let both = fixed(&[
        ("address.city", vec![json!("Paris")]),
        ("address.zip", vec![json!("75001"), json!("75002")]),
    ]);
    assert_eq!(implied(rule, &both), Verdict::Allow);
    let city = fixed(&[("address.city", vec![json!("Paris")])]);
    deny_reason(rule, implied(rule, &city), "must filter on `address.zip`");
    // A whole map fixed answers the fields below it.
    let whole = fixed(&[("address", vec![json!({"city": "Paris", "zip": "75011"})])]);
    assert_eq!(implied(rule, &whole), Verdict::Allow);
    // Reading the map the query only fixes parts of is unknown.
    deny_reason(
        "size(doc.address) == 2",
        implied("size(doc.address) == 2", &both),
        "must filter on `address`",
    );
}

#[test]
fn implied_or_rules_need_one_side() {
    let rule = "doc.public == true || auth.uid == doc.owner";
    assert_eq!(
        implied(rule, &fixed(&[("public", vec![json!(true)])])),
        Verdict::Allow
    );
    assert_eq!(
        implied(rule, &fixed(&[("owner", vec![json!("alice")])])),
        Verdict::Allow
    );
    deny_reason(
        rule,
        implied(rule, &BTreeMap::new()),
        "must filter on `public`",
    );
    // public == false and owner unknown: the owner decides.
    deny_reason(
        rule,
        implied(rule, &fixed(&[("public", vec![json!(false)])])),
        "must filter on `owner`",
    );
    // Either value of `public`, with the owner fixed, holds.
    let both = fixed(&[
        ("public", vec![json!(true), json!(false)]),
        ("owner", vec![json!("alice")]),
    ]);
    assert_eq!(implied(rule, &both), Verdict::Allow);
}

#[test]
fn implied_three_valued_logic() {
    // unknown || true is true; unknown && false is false.
    assert_eq!(
        implied("doc.x == 1 || auth != null", &BTreeMap::new()),
        Verdict::Allow
    );
    deny_reason(
        "",
        implied("auth.uid == 'bob' && doc.x == 1", &BTreeMap::new()),
        "`auth.uid == 'bob'` is false",
    );
    // Unknown through `!`, a ternary, a function, a literal.
    for rule in [
        "!(doc.x == 1)",
        "doc.x ? true : false",
        "size(doc.x) > 0",
        "auth.uid in [doc.x, 'bob']",
        "{'k': doc.x} != {}",
        "get('teams/' + doc.x) != null",
    ] {
        deny_reason(rule, implied(rule, &BTreeMap::new()), "must filter on `x`");
    }
}

#[test]
fn implied_whole_document_reads_are_refused() {
    for rule in [
        "doc != null",
        "size(doc) > 0",
        "type(doc) == 'map'",
        "keys(doc) == []",
    ] {
        deny_reason(
            rule,
            implied(rule, &fixed(&[("owner", vec![json!("alice")])])),
            "the read rule uses the whole document (`doc`), which no query filter can pin down",
        );
    }
}

#[test]
fn implied_has_index_and_changed() {
    let owner = fixed(&[("owner", vec![json!("alice")])]);
    assert_eq!(
        implied("has(doc, 'owner') && doc['owner'] == auth.uid", &owner),
        Verdict::Allow
    );
    deny_reason(
        "",
        implied("has(doc, 'title')", &owner),
        "must filter on `title`",
    );
    assert_eq!(
        implied(
            "doc[auth.uid == 'alice' ? 'owner' : 'x'] == 'alice'",
            &owner
        ),
        Verdict::Allow
    );
    deny_reason(
        "",
        implied("doc.tags[0] == 'a'", &owner),
        "must filter on `tags`",
    );
    // Reads have no request.doc: every field fixed on `doc` "changed".
    assert_eq!(implied("changed('owner')", &owner), Verdict::Allow);
    deny_reason(
        "",
        implied("changed('title')", &owner),
        "must filter on `title`",
    );
}

#[test]
fn implied_combinations_are_capped() {
    let values: Vec<Value> = (0..11).map(|i| json!(i)).collect();
    let two = fixed(&[("a", values.clone()), ("b", values.clone())]);
    let rule = "doc.a >= 0 && doc.b >= 0";
    deny_reason(
        rule,
        implied(rule, &two),
        "the query's `in` filters make more than 100 combinations of values",
    );
    // 10 x 10 is within the cap.
    let ten: Vec<Value> = (0..10).map(|i| json!(i)).collect();
    assert_eq!(
        implied(rule, &fixed(&[("a", ten.clone()), ("b", ten)])),
        Verdict::Allow
    );
    // Only fields the rule reads multiply.
    let wide: Vec<Value> = (0..1000).map(|i| json!(i)).collect();
    let unread = fixed(&[("a", values), ("c", wide)]);
    assert_eq!(implied("doc.a >= 0", &unread), Verdict::Allow);
}

#[test]
fn implied_with_lookups() {
    let rule = "auth.uid in get('teams/' + doc.team).members";
    let teams = fixed(&[("team", vec![json!("red"), json!("blue")])]);
    let case = Case::new();
    let r = case.rule(rule);
    assert_eq!(
        r.implied(&case.env(), &teams, &NoLookup),
        Verdict::Need("teams/red".into())
    );
    let red = lookups(&[("teams/red", Some(json!({"members": ["alice"]})))]);
    assert_eq!(
        r.implied(&case.env(), &teams, &red),
        Verdict::Need("teams/blue".into())
    );
    let both = lookups(&[
        ("teams/red", Some(json!({"members": ["alice"]}))),
        ("teams/blue", Some(json!({"members": ["bob"]}))),
    ]);
    deny_reason(
        rule,
        r.implied(&case.env(), &teams, &both),
        "for team == \"blue\": `auth.uid in get('teams/' + doc.team).members` is false",
    );
    let ok = lookups(&[
        ("teams/red", Some(json!({"members": ["alice"]}))),
        ("teams/blue", Some(json!({"members": ["alice", "bob"]}))),
    ]);
    assert_eq!(r.implied(&case.env(), &teams, &ok), Verdict::Allow);
    // The lookup cap covers all combinations together.
    let many: Vec<Value> = (0..11).map(|i| json!(format!("t{i}"))).collect();
    let all: HashMap<String, Option<Value>> = (0..11)
        .map(|i| (format!("teams/t{i}"), Some(json!({"members": ["alice"]}))))
        .collect();
    deny_reason(
        rule,
        r.implied(&case.env(), &fixed(&[("team", many)]), &all),
        "more than 10 documents",
    );
}

#[test]
fn implied_refuses_an_empty_in_filter() {
    deny_reason(
        "",
        implied("doc.owner == auth.uid", &fixed(&[("owner", vec![])])),
        "the query's filter on `owner` lists no values",
    );
}

#[test]
fn implied_numbers_compare_by_value() {
    let rule = "doc.level <= 2";
    let levels = fixed(&[("level", vec![json!(1), json!(2.0)])]);
    assert_eq!(implied(rule, &levels), Verdict::Allow);
    let high = fixed(&[("level", vec![json!(1), json!(3)])]);
    deny_reason(
        rule,
        implied(rule, &high),
        "for level == 3: `doc.level <= 2` is false",
    );
}

// ------------------------------------------------------------------- api

#[test]
fn rules_keep_their_source_and_can_be_shared() {
    fn shared<T: Send + Sync + Clone>(_: &T) {}
    let rule = Rule::parse(READ, COLLECTION_ROOTS).unwrap();
    shared(&rule);
    assert_eq!(rule.source(), READ);
    assert_eq!(rule.to_string(), READ);
    let copy = rule.clone();
    assert_eq!(Case::new().env().doc, Some(&stored()));
    assert!(copy.evaluate(&Case::new().env(), &NoLookup).is_allow());
    assert!(!Verdict::Deny("x".into()).is_allow());
    assert!(!Verdict::Need("a/b".into()).is_allow());
}

#[test]
fn a_btreemap_lookup_works_like_a_hashmap() {
    let map: BTreeMap<String, Option<Value>> = [("admins/alice".to_owned(), Some(json!({})))]
        .into_iter()
        .collect();
    assert_eq!(
        Case::new().run_with("exists('admins/alice') && !exists('admins/bob')", &map),
        Verdict::Need("admins/bob".into())
    );
}

#[test]
fn deeply_nested_values_compare_up_to_a_bound() {
    let deep = |n: usize| -> Value {
        let mut v = json!(1);
        for _ in 0..n {
            v = json!([v]);
        }
        v
    };
    let case = Case {
        new: Some(json!({"a": deep(100), "b": deep(100)})),
        ..Case::new()
    };
    case.allows("request.doc.a == request.doc.b");
    let case = Case {
        new: Some(json!({"a": deep(300), "b": deep(300)})),
        ..Case::new()
    };
    case.denies(
        "request.doc.a == request.doc.b",
        "the values compared nest too deeply",
    );
    case.denies(
        "string(request.doc.a) != ''",
        "nests too deeply for string(…)",
    );
}

#[test]
fn request_id_names_the_document_read_or_written() {
    let mut case = Case::new();
    case.auth = Some(json!({"uid": "alice"}));
    case.id = Some("alice".into());
    assert_eq!(case.run("request.id == auth.uid"), Verdict::Allow);
    case.id = Some("bob".into());
    assert!(matches!(
        case.run("request.id == auth.uid"),
        Verdict::Deny(_)
    ));
    case.id = None;
    match case.run("request.id == auth.uid") {
        Verdict::Deny(why) => assert!(why.contains("has no field `id`"), "{why}"),
        other => panic!("{other:?}"),
    }
}
