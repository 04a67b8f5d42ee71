//! The little XML the S3 API speaks: documents written element by element,
//! and the few request bodies it reads (`Delete`, `CompleteMultipartUpload`)
//! taken apart by their elements' names, which is all their shape needs.

/// An XML document being written.
pub(crate) struct Xml(String);

impl Xml {
    /// A document whose root is `root` in S3's namespace.
    pub(crate) fn new(root: &str) -> Xml {
        Xml(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root} xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
        ))
    }

    /// A document whose root has no namespace (S3's errors).
    pub(crate) fn bare(root: &str) -> Xml {
        Xml(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root}>"
        ))
    }

    pub(crate) fn open(&mut self, tag: &str) -> &mut Xml {
        self.0.push('<');
        self.0.push_str(tag);
        self.0.push('>');
        self
    }

    pub(crate) fn close(&mut self, tag: &str) -> &mut Xml {
        self.0.push_str("</");
        self.0.push_str(tag);
        self.0.push('>');
        self
    }

    /// `<tag>text</tag>`, the text escaped.
    pub(crate) fn leaf(&mut self, tag: &str, text: impl AsRef<str>) -> &mut Xml {
        self.open(tag);
        escape_into(&mut self.0, text.as_ref());
        self.close(tag)
    }

    /// The document, its root closed.
    pub(crate) fn end(mut self, root: &str) -> String {
        self.close(root);
        self.0
    }
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters cannot appear in XML 1.0 as they are.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {
                out.push_str(&format!("&#x{:X};", c as u32));
            }
            c => out.push(c),
        }
    }
}

/// The text of each `<tag>...</tag>` in `doc`, in order, unescaped; `None`
/// when an entity cannot be read. Elements of that name must not nest.
pub(crate) fn texts(doc: &str, tag: &str) -> Option<Vec<String>> {
    elements(doc, tag).into_iter().map(unescape).collect()
}

/// The parts of `doc` inside each `<tag>...</tag>`, as they are.
pub(crate) fn elements<'a>(doc: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    out
}

/// Text with XML's entities and character references replaced.
fn unescape(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let end = rest[at..].find(';')? + at;
        let entity = &rest[at + 1..end];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()?
                } else {
                    entity.strip_prefix('#')?.parse().ok()?
                };
                char::from_u32(code)?
            }
        };
        out.push(c);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_read_back() {
        let mut doc = Xml::new("R");
        doc.leaf("Key", "a<b>&\"c'\u{1}");
        let doc = doc.end("R");
        assert!(
            doc.contains("<Key>a&lt;b&gt;&amp;&quot;c&apos;&#x1;</Key></R>"),
            "{doc}"
        );
        assert_eq!(
            texts(&doc, "Key").unwrap(),
            vec!["a<b>&\"c'\u{1}".to_owned()]
        );
    }

    #[test]
    fn a_delete_request_gives_its_keys() {
        let body = "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet><Object><Key>a/b.txt</Key></Object><Object><Key>c&#38;d</Key><VersionId>x</VersionId></Object></Delete>";
        let objects = elements(body, "Object");
        assert_eq!(objects.len(), 2);
        let keys: Vec<String> = objects
            .iter()
            .flat_map(|o| texts(o, "Key").unwrap())
            .collect();
        assert_eq!(keys, ["a/b.txt", "c&d"]);
        assert_eq!(texts(body, "Quiet").unwrap(), ["true"]);
        assert!(texts("<Key>&bogus;</Key>", "Key").is_none());
    }
}
