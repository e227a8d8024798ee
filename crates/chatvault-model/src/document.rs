use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::time::{serde_local, LocalTimestamp};

/// Properties Cosmos DB adds to every stored document; metadata, not chat data.
pub const COSMOS_SYSTEM_PROPERTIES: &[&str] =
    &["id", "_rid", "_self", "_etag", "_attachments", "_ts"];

/// Unknown fields are kept in `extra` so that re-serialising never drops what a newer
/// producer sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChatDocument {
    pub chat_header: ChatHeader,
    #[serde(default, deserialize_with = "or_default")]
    pub pre_chat_survey: Vec<SurveyAnswer>,
    #[serde(default, deserialize_with = "or_default")]
    pub post_chat_survey: Vec<SurveyAnswer>,
    pub lines: Vec<Line>,
    #[serde(default, deserialize_with = "or_default")]
    pub visit_detail: Option<VisitDetail>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChatHeader {
    #[serde(rename = "ChatUID", deserialize_with = "trimmed")]
    pub chat_uid: String,
    pub site_key: i32,
    #[serde(rename = "IP", default, deserialize_with = "trimmed")]
    pub ip: String,
    #[serde(rename = "DNS", default, deserialize_with = "trimmed")]
    pub dns: String,
    #[serde(default, deserialize_with = "trimmed")]
    pub location: String,
    #[serde(default, deserialize_with = "trimmed")]
    pub tracking_id: String,
    #[serde(default, deserialize_with = "or_default")]
    pub visit_no: i32,
    #[serde(default, deserialize_with = "trimmed")]
    pub taken_by_users: String,
    #[serde(default, deserialize_with = "trimmed")]
    pub taken_by_dept: String,
    #[serde(default, deserialize_with = "or_default")]
    pub taken_by_bot: bool,
    #[serde(with = "serde_local")]
    pub started: LocalTimestamp,
    #[serde(default, with = "serde_local")]
    pub finished: LocalTimestamp,
    #[serde(default, deserialize_with = "or_default")]
    pub waited_seconds: i32,
    #[serde(default, deserialize_with = "or_default")]
    pub duration_seconds: i32,
    #[serde(default, deserialize_with = "trimmed")]
    pub lang: String,
    #[serde(default, deserialize_with = "or_default")]
    pub translation: bool,
    #[serde(default, deserialize_with = "or_default")]
    pub rating: i32,
    #[serde(default, deserialize_with = "trimmed")]
    pub name: String,
    #[serde(default, deserialize_with = "trimmed")]
    pub email: String,
    #[serde(default, deserialize_with = "trimmed")]
    pub phone: String,
    #[serde(default, deserialize_with = "or_default")]
    pub missed: bool,
    /// Free text the visitor left: kept verbatim.
    #[serde(default, deserialize_with = "or_default")]
    pub missed_message: String,
    #[serde(default, deserialize_with = "or_default")]
    pub missed_seen: bool,
    #[serde(default, deserialize_with = "trimmed")]
    pub missed_seen_by_user_name: String,
    #[serde(default, with = "serde_local")]
    pub missed_seen_on: LocalTimestamp,
    #[serde(default, deserialize_with = "or_default")]
    pub missed_callback: bool,
    #[serde(default, with = "serde_local")]
    pub missed_callback_on: LocalTimestamp,
    #[serde(default, deserialize_with = "trimmed")]
    pub requested_dept: String,
    #[serde(default, deserialize_with = "or_default")]
    pub sentiment_score: i32,
    #[serde(default, deserialize_with = "trimmed")]
    pub wrap_up_value: String,
    #[serde(default, deserialize_with = "or_default")]
    pub tags: Vec<String>,
    #[serde(default, deserialize_with = "or_default")]
    pub summary: String,
    #[serde(default, deserialize_with = "trimmed")]
    pub channel: String,
    #[serde(default, deserialize_with = "or_default")]
    pub state: i32,
    #[serde(default, deserialize_with = "trimmed")]
    pub skill_names: String,
    #[serde(rename = "TranscriptURL", default, deserialize_with = "trimmed")]
    pub transcript_url: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatHeader {
    /// Operator names in order of joining; `OperatorIndex` n refers to the n-th of them.
    pub fn operators(&self) -> Vec<&str> {
        self.taken_by_users
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SurveyAnswer {
    #[serde(deserialize_with = "trimmed")]
    pub name: String,
    #[serde(default, deserialize_with = "trimmed")]
    pub value: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Line {
    #[serde(with = "serde_local")]
    pub dated: LocalTimestamp,
    pub operator_index: i32,
    /// The text as typed: newlines, markdown and leading spaces are content.
    pub message: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Who wrote a chat line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Visitor,
    Operator,
    System,
}

impl Role {
    /// 0 is the visitor, 99 a line the chat server wrote itself, anything else an operator.
    pub fn from_operator_index(index: i32) -> Role {
        match index {
            0 => Role::Visitor,
            99 => Role::System,
            _ => Role::Operator,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Visitor => "visitor",
            Role::Operator => "operator",
            Role::System => "system",
        }
    }
}

impl Line {
    pub fn role(&self) -> Role {
        Role::from_operator_index(self.operator_index)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VisitDetail {
    #[serde(default, deserialize_with = "or_default")]
    pub site_key: i32,
    #[serde(default, deserialize_with = "trimmed")]
    pub site_name: String,
    #[serde(rename = "IP", default, deserialize_with = "trimmed")]
    pub ip: String,
    #[serde(default, deserialize_with = "trimmed")]
    pub tracking_id: String,
    #[serde(rename = "DNS", default, deserialize_with = "trimmed")]
    pub dns: String,
    #[serde(default, deserialize_with = "or_default")]
    pub visit_no: i32,
    #[serde(default, deserialize_with = "or_default")]
    pub total_visits: i32,
    #[serde(default, deserialize_with = "trimmed")]
    pub browser: String,
    #[serde(rename = "OS", default, deserialize_with = "trimmed")]
    pub os: String,
    #[serde(default, deserialize_with = "trimmed")]
    pub referrer: String,
    #[serde(default, with = "serde_local")]
    pub session_started: LocalTimestamp,
    #[serde(default, deserialize_with = "or_default")]
    pub chatting: bool,
    #[serde(default, deserialize_with = "trimmed")]
    pub chatting_language: String,
    #[serde(default, deserialize_with = "or_default")]
    pub chatting_translate: bool,
    #[serde(default, deserialize_with = "or_default")]
    pub page_views: i32,
    #[serde(default, deserialize_with = "trimmed")]
    pub first_page: String,
    #[serde(default, with = "serde_local")]
    pub first_visit: LocalTimestamp,
    #[serde(default, deserialize_with = "trimmed")]
    pub contact_name: String,
    #[serde(default, deserialize_with = "trimmed")]
    pub contact_email: String,
    #[serde(default, deserialize_with = "trimmed")]
    pub contact_company: String,
    #[serde(default, deserialize_with = "trimmed")]
    pub contact_telephone: String,
    #[serde(default, deserialize_with = "or_default")]
    pub contact_notes: String,
    #[serde(default, deserialize_with = "trimmed")]
    pub contact_street: String,
    #[serde(default, deserialize_with = "trimmed")]
    pub contact_city: String,
    #[serde(default, deserialize_with = "trimmed")]
    pub contact_post_code: String,
    #[serde(default, deserialize_with = "trimmed")]
    pub contact_country: String,
    #[serde(default, deserialize_with = "trimmed")]
    pub contact_web_address: String,
    #[serde(default, deserialize_with = "trimmed")]
    pub contact_organization: String,
    #[serde(rename = "CRMId", default, deserialize_with = "trimmed")]
    pub crm_id: String,
    #[serde(default, deserialize_with = "or_default")]
    pub pages: Vec<Page>,
    #[serde(rename = "GeoIP", default, deserialize_with = "or_default")]
    pub geo_ip: Option<GeoIp>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Page {
    #[serde(default, with = "serde_local")]
    pub dated: LocalTimestamp,
    #[serde(deserialize_with = "trimmed")]
    pub name: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GeoIp {
    #[serde(rename = "IP", default, deserialize_with = "trimmed")]
    pub ip: String,
    #[serde(default, deserialize_with = "trimmed")]
    pub country_name: String,
    #[serde(rename = "CountryISO", default, deserialize_with = "trimmed")]
    pub country_iso: String,
    #[serde(default, deserialize_with = "trimmed")]
    pub city: String,
    #[serde(default, deserialize_with = "trimmed")]
    pub post_code: String,
    #[serde(default, deserialize_with = "trimmed")]
    pub metro_code: String,
    #[serde(default)]
    pub latitude: Option<f64>,
    #[serde(default)]
    pub longitude: Option<f64>,
    #[serde(default)]
    pub radius: Option<f64>,
    #[serde(rename = "ISP", default, deserialize_with = "trimmed")]
    pub isp: String,
    #[serde(default, deserialize_with = "trimmed")]
    pub organization: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatDocument {
    /// Reads a document that has already passed schema validation.
    pub fn from_value(value: &Value) -> Result<ChatDocument, serde_json::Error> {
        ChatDocument::deserialize(value)
    }

    /// Reads archived document bytes straight into the model: building a `Value` first
    /// and dropping it again was most of the time a store rebuild took. A document that
    /// reads only as a `Value` (a repeated key, which JSON allows and the schema check
    /// accepted: the last one wins) still goes that way.
    pub fn from_json(bytes: &[u8]) -> Result<ChatDocument, serde_json::Error> {
        serde_json::from_slice(bytes)
            .or_else(|_| ChatDocument::from_value(&serde_json::from_slice(bytes)?))
    }
}

/// The chat server writes `null` where it has nothing; the model uses the type's empty value.
fn or_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Identifiers, names and codes arrive padded now and then; the padding is never meaningful.
fn trimmed<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text: Option<std::borrow::Cow<'de, str>> = Option::deserialize(d)?;
    Ok(match text {
        Some(text) if text.trim().len() == text.len() => text.into_owned(),
        Some(text) => text.trim().to_owned(),
        None => String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roles_follow_operator_index() {
        assert_eq!(Role::from_operator_index(0), Role::Visitor);
        assert_eq!(Role::from_operator_index(1), Role::Operator);
        assert_eq!(Role::from_operator_index(7), Role::Operator);
        assert_eq!(Role::from_operator_index(99), Role::System);
    }

    #[test]
    fn normalises_padding_nulls_and_unset_timestamps() {
        let doc = json!({
            "ChatHeader": {
                "ChatUID": " 6741a0c2e4b0a1f3c2d4e501 ", "SiteKey": 3,
                "Started": "2024-08-14T09:12:03.417", "Finished": "0001-01-01T00:00:00",
                "TakenByUsers": " Ann , Bob ", "Email": null, "Tags": null, "NewField": {"x": 1}
            },
            "Lines": [{"Dated": "2024-08-14T09:12:04", "OperatorIndex": 99, "Message": "  hi\n"}],
            "VisitDetail": null
        });
        let parsed = ChatDocument::from_value(&doc).expect("valid document");
        assert_eq!(parsed.chat_header.chat_uid, "6741a0c2e4b0a1f3c2d4e501");
        assert_eq!(parsed.chat_header.finished, None);
        assert_eq!(parsed.chat_header.email, "");
        assert!(parsed.chat_header.tags.is_empty());
        assert_eq!(parsed.chat_header.operators(), vec!["Ann", "Bob"]);
        assert_eq!(
            parsed.chat_header.extra.get("NewField"),
            Some(&json!({"x": 1}))
        );
        assert_eq!(
            parsed.lines[0].message, "  hi\n",
            "messages are kept verbatim"
        );
        assert_eq!(parsed.lines[0].role(), Role::System);
        assert!(parsed.visit_detail.is_none());
    }

    #[test]
    fn bytes_with_a_repeated_key_read_as_their_value_does() {
        let text = br#"{"ChatHeader": {"ChatUID": "6741a0c2e4b0a1f3c2d4e501", "SiteKey": 3,
            "SiteKey": 5, "Started": "2024-08-14T09:12:03"}, "Lines": []}"#;
        let value: Value = serde_json::from_slice(text).expect("JSON");
        let direct = ChatDocument::from_json(text).expect("reads");
        assert_eq!(direct, ChatDocument::from_value(&value).expect("reads"));
        assert_eq!(direct.chat_header.site_key, 5, "the last one wins");
    }
}
