use jsonschema::Validator;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::document::ChatDocument;
use crate::hash::{content_hash, content_hash_of_tree, ContentHash};
use crate::redact::RedactionPolicy;
use crate::tree::{Tree, TreeJson};

/// Default largest single document accepted. A real chat with thousands of lines is well
/// under 1 MiB; anything near this is a broken or hostile producer.
pub const MAX_DOCUMENT_BYTES: usize = 8 * 1024 * 1024;

/// How many schema violations one rejection lists; the rest are summarised by count.
const MAX_VIOLATIONS: usize = 20;

/// The schemas every accepted document version must satisfy, embedded at build time so
/// that the binary validates exactly what `schemas/` says.
const SCHEMAS: &[(u32, &str)] = &[(
    1,
    include_str!("../../../schemas/chat-document.v1.schema.json"),
)];

/// Why a document was refused: a summary plus where exactly (JSON pointer and field).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_uid: Option<String>,
    pub violations: Vec<Violation>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    /// RFC 6901 pointer into the document; empty for the document as a whole.
    pub pointer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub reason: String,
}

impl Rejection {
    pub fn whole(reason: impl Into<String>) -> Rejection {
        let reason = reason.into();
        Rejection {
            violations: vec![Violation {
                pointer: String::new(),
                field: None,
                reason: reason.clone(),
            }],
            reason,
            chat_uid: None,
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)?;
        for v in &self.violations {
            if !v.pointer.is_empty() {
                write!(f, "; at {}: {}", v.pointer, v.reason)?;
            }
        }
        Ok(())
    }
}

/// A document that passed every check, with what the pipeline needs to file it. Its
/// text may borrow from the bytes it was read from.
#[derive(Debug, Clone)]
pub struct ValidatedDocument<'a> {
    pub chat_uid: String,
    pub site_key: i32,
    pub schema_version: u32,
    pub content_hash: ContentHash,
    pub document: ChatDocument<'a>,
    /// The bytes to store instead of the ones received, when the site's redaction
    /// changed the document (see `RedactionPolicy`).
    pub redacted: Option<Vec<u8>>,
}

pub struct SchemaRegistry {
    validators: Vec<(u32, Validators)>,
    max_document_bytes: usize,
    redaction: RedactionPolicy,
}

/// One schema version compiled twice: for the one-pass reading of the common valid
/// document, and for the `Value` that explains a rejection.
struct Validators {
    quick: Validator<TreeJson>,
    careful: Validator,
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let versions: Vec<u32> = self.validators.iter().map(|(v, _)| *v).collect();
        f.debug_struct("SchemaRegistry")
            .field("versions", &versions)
            .finish()
    }
}

impl SchemaRegistry {
    /// Compiles the embedded schemas. Fails only if a schema file in the repository is
    /// broken, which the test suite catches before release.
    pub fn new(max_document_bytes: usize) -> Result<SchemaRegistry, String> {
        let validators = SCHEMAS
            .iter()
            .map(|(version, text)| {
                let schema: Value = serde_json::from_str(text)
                    .map_err(|e| format!("schema v{version} is not JSON: {e}"))?;
                let broken = |e| format!("schema v{version} does not compile: {e}");
                let careful = jsonschema::draft202012::new(&schema).map_err(broken)?;
                let quick = jsonschema::ValidationOptions::<_, TreeJson>::default()
                    .with_draft(jsonschema::Draft::Draft202012)
                    .build(&schema)
                    .map_err(broken)?;
                Ok((*version, Validators { quick, careful }))
            })
            .collect::<Result<_, String>>()?;
        Ok(SchemaRegistry {
            validators,
            max_document_bytes,
            redaction: RedactionPolicy::default(),
        })
    }

    /// Redacts every document `validate` accepts as `policy` says, before anything
    /// downstream (archive, catalog, store) sees it.
    pub fn with_redaction(mut self, policy: RedactionPolicy) -> SchemaRegistry {
        self.redaction = policy;
        self
    }

    pub fn versions(&self) -> impl Iterator<Item = u32> + '_ {
        self.validators.iter().map(|(v, _)| *v)
    }

    /// Every check a document must pass before anything is stored, in the order that gives
    /// the most useful first error: size, encoding, syntax, schema, then semantic parsing.
    pub fn validate<'a>(&self, bytes: &'a [u8]) -> Result<ValidatedDocument<'a>, Rejection> {
        let text = self.text_of(bytes)?;
        match self.accept_in_one_pass(text) {
            Some(accepted) => Ok(accepted),
            None => self.validate_carefully(text),
        }
    }

    fn validators_of(&self, version: u32) -> Option<&Validators> {
        self.validators
            .iter()
            .find_map(|(v, validators)| (*v == version).then_some(validators))
    }

    /// The size and encoding checks, which come before any parsing.
    fn text_of<'a>(&self, bytes: &'a [u8]) -> Result<&'a str, Rejection> {
        if bytes.len() > self.max_document_bytes {
            return Err(Rejection::whole(format!(
                "document is {} bytes; the limit is {} bytes",
                bytes.len(),
                self.max_document_bytes
            )));
        }
        std::str::from_utf8(bytes).map_err(|e| {
            Rejection::whole(format!(
                "document is not valid UTF-8 (invalid byte sequence at byte offset {})",
                e.valid_up_to()
            ))
        })
    }

    /// Accepts a valid document read once into a [`Tree`], or gives up (`None`) on
    /// anything else: a rejection, or a site whose redaction edits documents. What it
    /// accepts equals what [`SchemaRegistry::validate_carefully`] would make of it.
    fn accept_in_one_pass<'a>(&self, text: &'a str) -> Option<ValidatedDocument<'a>> {
        let tree = Tree::parse(text).ok()?;
        let version = match tree.get("SchemaVersion") {
            None => 1,
            Some(v) => u32::try_from(v.as_u64()?).ok()?,
        };
        let validators = self.validators_of(version)?;
        let site_key = tree.get("ChatHeader").and_then(|h| h.get("SiteKey"));
        if self.redaction.redacts(site_key.and_then(Tree::as_i64)) {
            return None;
        }
        if !validators.quick.is_valid(&tree) {
            return None;
        }
        let content_hash = content_hash_of_tree(&tree);
        let document = ChatDocument::deserialize(tree).ok()?;
        Some(ValidatedDocument::new(document, version, content_hash))
    }

    /// Validation through a `Value`, which explains every rejection precisely and which
    /// redaction edits.
    fn validate_carefully(&self, text: &str) -> Result<ValidatedDocument<'static>, Rejection> {
        // From the checked text, so the parser does not check each string's UTF-8 again.
        let mut value: Value = serde_json::from_str(text).map_err(|e| {
            Rejection::whole(format!(
                "document is not valid JSON: {e} (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        if !self.redaction.apply(&mut value) {
            return self.validate_parsed(value, || serde_json::from_str(text).ok());
        }
        let redacted = serde_json::to_vec(&value)
            .map_err(|e| Rejection::whole(format!("document cannot be redacted: {e}")))?;
        let validated = self.validate_parsed(value, || serde_json::from_slice(&redacted).ok())?;
        Ok(ValidatedDocument {
            redacted: Some(redacted),
            ..validated
        })
    }

    pub fn validate_value(&self, value: &Value) -> Result<ValidatedDocument<'static>, Rejection> {
        self.validate_parsed(value.clone(), || Some(value.clone()))
    }

    /// Checks a parsed document and moves it into the model: its strings are moved, not
    /// copied. `again` gives the document once more, only to explain a model error.
    fn validate_parsed(
        &self,
        value: Value,
        again: impl FnOnce() -> Option<Value>,
    ) -> Result<ValidatedDocument<'static>, Rejection> {
        let Value::Object(map) = &value else {
            return Err(Rejection::whole(format!(
                "document must be a JSON object, found {}",
                json_type(&value)
            )));
        };
        let chat_uid = value
            .pointer("/ChatHeader/ChatUID")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let version = match map.get("SchemaVersion") {
            None => 1,
            Some(v) => v
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| Rejection {
                    chat_uid: chat_uid.clone(),
                    ..Rejection::whole(format!(
                        "SchemaVersion must be a positive integer, found {v}"
                    ))
                })?,
        };
        let Some(validators) = self.validators_of(version) else {
            let known: Vec<String> = self.versions().map(|v| v.to_string()).collect();
            return Err(Rejection {
                chat_uid,
                ..Rejection::whole(format!(
                    "SchemaVersion {version} is not supported; supported versions: {}",
                    known.join(", ")
                ))
            });
        };
        // Nearly every document is valid: the boolean check is much cheaper than
        // collecting errors, which is only worth doing for the rare invalid one.
        let validator = &validators.careful;
        if !validator.is_valid(&value) {
            let mut violations = Vec::new();
            let mut total = 0usize;
            for error in validator.iter_errors(&value) {
                total += 1;
                if violations.len() < MAX_VIOLATIONS {
                    violations.push(violation_of(&error));
                }
            }
            let mut reason = match violations.first() {
                Some(first) => format!(
                    "document does not match chat-document schema v{version}: {} at {}",
                    first.reason,
                    if first.pointer.is_empty() {
                        "/"
                    } else {
                        &first.pointer
                    }
                ),
                None => format!("document does not match chat-document schema v{version}"),
            };
            if total > 1 {
                reason.push_str(&format!(" (and {} more)", total - 1));
            }
            return Err(Rejection {
                reason,
                chat_uid,
                violations,
            });
        }
        let content_hash = content_hash(&value);
        // Tracking the path costs on every value; it is only needed to explain a failure.
        let document = ChatDocument::deserialize(value).map_err(|plain| {
            match again()
                .and_then(|v| serde_path_to_error::deserialize::<_, ChatDocument<'_>>(&v).err())
            {
                Some(e) => (path_to_pointer(e.path()), e.into_inner()),
                _ => (String::new(), plain),
            }
        });
        let document = document.map_err(|(pointer, e)| {
            let reason = e.to_string();
            Rejection {
                reason: format!("document has an invalid value at {pointer}: {reason}"),
                chat_uid: chat_uid.clone(),
                violations: vec![Violation {
                    field: pointer.rsplit('/').next().map(str::to_owned),
                    pointer,
                    reason,
                }],
            }
        })?;
        Ok(ValidatedDocument::new(document, version, content_hash))
    }
}

impl<'a> ValidatedDocument<'a> {
    fn new(document: ChatDocument<'a>, schema_version: u32, content_hash: ContentHash) -> Self {
        ValidatedDocument {
            chat_uid: document.chat_header.chat_uid.to_ascii_lowercase(),
            site_key: document.chat_header.site_key,
            schema_version,
            content_hash,
            document,
            redacted: None,
        }
    }
}

fn violation_of(error: &jsonschema::ValidationError<'_>) -> Violation {
    let mut pointer = error.instance_path().to_string();
    let mut field = pointer
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    if let jsonschema::error::ValidationErrorKind::Required { property } = error.kind() {
        if let Some(name) = property.as_str() {
            pointer = format!("{pointer}/{}", name.replace('~', "~0").replace('/', "~1"));
            field = Some(name.to_owned());
        }
    }
    Violation {
        pointer,
        field,
        reason: truncate(&error.to_string(), 300),
    }
}

/// Error messages quote the offending value; a 10 MB string must not come back whole.
fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max_chars).collect();
    format!("{cut}… (truncated)")
}

fn path_to_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                out.push('/');
                out.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            Segment::Unknown => out.push_str("/?"),
        }
    }
    out
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn registry() -> SchemaRegistry {
        SchemaRegistry::new(MAX_DOCUMENT_BYTES).expect("embedded schemas compile")
    }

    fn minimal() -> Value {
        json!({
            "ChatHeader": {"ChatUID": "6741A0C2E4B0A1F3C2D4E501", "SiteKey": 3, "Started": "2024-08-14T09:12:03.417"},
            "Lines": []
        })
    }

    #[test]
    fn minimal_document_is_accepted_and_uid_lowercased() {
        let ok = registry().validate_value(&minimal()).expect("valid");
        assert_eq!(ok.chat_uid, "6741a0c2e4b0a1f3c2d4e501");
        assert_eq!(ok.site_key, 3);
        assert_eq!(ok.schema_version, 1);
    }

    #[test]
    fn missing_chat_uid_names_the_field_and_pointer() {
        let mut doc = minimal();
        doc["ChatHeader"]
            .as_object_mut()
            .map(|h| h.remove("ChatUID"));
        let err = registry().validate_value(&doc).expect_err("must reject");
        assert_eq!(err.violations[0].pointer, "/ChatHeader/ChatUID");
        assert_eq!(err.violations[0].field.as_deref(), Some("ChatUID"));
    }

    #[test]
    fn wrong_type_points_at_the_value() {
        let mut doc = minimal();
        doc["Lines"] =
            json!([{"Dated": "2024-08-14T09:12:03", "OperatorIndex": "one", "Message": "x"}]);
        let err = registry().validate_value(&doc).expect_err("must reject");
        assert_eq!(err.violations[0].pointer, "/Lines/0/OperatorIndex");
    }

    #[test]
    fn impossible_date_is_rejected_with_pointer() {
        let mut doc = minimal();
        doc["ChatHeader"]["Started"] = json!("2024-02-31T00:00:00");
        let err = registry().validate_value(&doc).expect_err("must reject");
        assert_eq!(err.violations[0].pointer, "/ChatHeader/Started");
    }

    #[test]
    fn unknown_fields_are_allowed() {
        let mut doc = minimal();
        doc["FutureThing"] = json!({"a": [1, 2]});
        doc["ChatHeader"]["NewHeaderField"] = json!(true);
        assert!(registry().validate_value(&doc).is_ok());
    }

    #[test]
    fn raw_byte_checks_come_first() {
        let r = SchemaRegistry::new(64).expect("compile");
        assert!(r
            .validate(&[b'{'; 65])
            .expect_err("too big")
            .reason
            .contains("limit"));
        let r = registry();
        assert!(r
            .validate(b"{\"a\":\"\xff\"}")
            .expect_err("utf8")
            .reason
            .contains("UTF-8"));
        assert!(r
            .validate(b"{\"a\":")
            .expect_err("syntax")
            .reason
            .contains("line 1"));
        assert!(r
            .validate(b"[1]")
            .expect_err("array")
            .reason
            .contains("an array"));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(r
            .validate(deep.as_bytes())
            .expect_err("deep")
            .reason
            .contains("recursion"));
    }

    #[test]
    fn a_value_the_schema_admits_but_the_model_cannot_read_is_located() {
        let mut doc = minimal();
        doc["ChatHeader"]["Started"] = json!("2024-13-45T10:00:00");
        let bytes = serde_json::to_vec(&doc).expect("json");
        for err in [
            registry().validate(&bytes).expect_err("must reject"),
            registry().validate_value(&doc).expect_err("must reject"),
        ] {
            assert_eq!(err.violations[0].pointer, "/ChatHeader/Started", "{err:?}");
            assert!(
                err.reason.contains("invalid value at /ChatHeader/Started"),
                "{}",
                err.reason
            );
        }
    }

    /// The reference samples, each read once.
    fn samples() -> &'static [Value] {
        static SAMPLES: std::sync::LazyLock<Vec<Value>> = std::sync::LazyLock::new(|| {
            let dir = crate::reference_samples();
            let mut paths: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{dir:?}: {e}"))
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|path| path.extension().is_some_and(|e| e == "json"))
                .collect();
            paths.sort();
            paths
                .iter()
                .map(|path| {
                    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
                    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
                })
                .collect()
        });
        &SAMPLES
    }

    /// Every pointer into `value` but the root's.
    fn pointers(value: &Value, at: &str, out: &mut Vec<String>) {
        let children: Vec<(String, &Value)> = match value {
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| (k.replace('~', "~0").replace('/', "~1"), v))
                .collect(),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect(),
            _ => return,
        };
        for (key, child) in children {
            let pointer = format!("{at}/{key}");
            pointers(child, &pointer, out);
            out.push(pointer);
        }
    }

    /// Replaces the value at `pointer`, or removes it from its object with `None`.
    fn edit(doc: &mut Value, pointer: &str, replacement: Option<Value>) {
        match replacement {
            Some(new) => {
                if let Some(old) = doc.pointer_mut(pointer) {
                    *old = new;
                }
            }
            None => {
                let (parent, key) = pointer.rsplit_once('/').unwrap_or_default();
                if let Some(Value::Object(map)) = doc.pointer_mut(parent) {
                    map.remove(&key.replace("~1", "/").replace("~0", "~"));
                }
            }
        }
    }

    /// Values a field might be given: wrong types, the ends of each range, padding, and
    /// text the schema admits but the model cannot read.
    fn any_field_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            crate::any_json(),
            Just(json!(null)),
            Just(json!(1.0)),
            Just(json!(-1)),
            Just(json!(99)),
            Just(json!(100)),
            Just(json!(2_147_483_648_i64)),
            Just(json!(" padded ")),
            Just(json!("0001-01-01T00:00:00")),
            Just(json!("2024-13-45T10:00:00")),
            Just(json!("2024-08-14T09:12:03.123456789")),
            Just(json!("6741A0C2E4B0A1F3C2D4E50F")),
            Just(json!([])),
            Just(json!({"Name": "n", "Value": null})),
        ]
    }

    proptest! {
        /// The one-pass reading accepts a document exactly when the careful one does, and
        /// makes the same validated document of it: samples with random fields replaced
        /// or removed, written with keys out of order and repeated.
        #[test]
        fn one_pass_accepts_what_the_careful_path_accepts_and_reads_it_alike(
            sample in any::<prop::sample::Index>(),
            edits in prop::collection::vec(
                (any::<prop::sample::Index>(), prop::option::weighted(0.8, any_field_value())),
                0..4,
            ),
        ) {
            let mut doc = sample.get(samples()).clone();
            for (at, replacement) in edits {
                let mut all = Vec::new();
                pointers(&doc, "", &mut all);
                if !all.is_empty() {
                    edit(&mut doc, at.get(&all).as_str(), replacement);
                }
            }
            let text = crate::scrambled_json(&doc);
            let r = registry();
            match (r.accept_in_one_pass(&text), r.validate_carefully(&text)) {
                (Some(quick), Ok(careful)) => {
                    prop_assert_eq!(quick.chat_uid, careful.chat_uid);
                    prop_assert_eq!(quick.site_key, careful.site_key);
                    prop_assert_eq!(quick.schema_version, careful.schema_version);
                    prop_assert_eq!(quick.content_hash, careful.content_hash);
                    prop_assert_eq!(quick.document, careful.document);
                    prop_assert_eq!(quick.redacted, careful.redacted);
                }
                (None, Err(_)) => {}
                (Some(_), Err(e)) => prop_assert!(false, "accepted in one pass, rejected carefully: {e}"),
                (None, Ok(_)) => prop_assert!(false, "a valid document missed the one-pass reading"),
            }
        }
    }

    #[test]
    fn a_site_with_redaction_takes_the_careful_path() {
        let mut policy = RedactionPolicy::default();
        policy.sites.insert(
            3,
            crate::Redaction {
                drop_ip: true,
                mask_card_numbers: false,
            },
        );
        let r = registry().with_redaction(policy);
        let mut doc = minimal();
        doc["ChatHeader"]["IP"] = json!("10.1.2.3");
        let text = doc.to_string();
        assert!(r.accept_in_one_pass(&text).is_none());
        let redacted = r.validate(text.as_bytes()).expect("valid");
        assert_eq!(redacted.document.chat_header.ip, "");
        doc["ChatHeader"]["SiteKey"] = json!(4);
        assert!(
            r.accept_in_one_pass(&doc.to_string()).is_some(),
            "site 4 is not redacted"
        );
    }

    #[test]
    fn unsupported_schema_version_is_explained() {
        let mut doc = minimal();
        doc["SchemaVersion"] = json!(9);
        let err = registry().validate_value(&doc).expect_err("must reject");
        assert!(err.reason.contains("SchemaVersion 9"), "{}", err.reason);
    }
}
