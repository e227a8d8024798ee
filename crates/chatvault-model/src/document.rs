use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fields::Text;
use crate::time::LocalTimestamp;

/// Properties Cosmos DB adds to every stored document; metadata, not chat data.
pub const COSMOS_SYSTEM_PROPERTIES: &[&str] =
    &["id", "_rid", "_self", "_etag", "_attachments", "_ts"];

document_object! {
    /// One completed chat as the chat server sends it.
    pub struct ChatDocument<'a> {
        chat_header: ChatHeader<'a> = "ChatHeader" by Plain required,
        pre_chat_survey: Vec<SurveyAnswer<'a>> = "PreChatSurvey" by OrDefault,
        post_chat_survey: Vec<SurveyAnswer<'a>> = "PostChatSurvey" by OrDefault,
        lines: Vec<Line<'a>> = "Lines" by Plain required,
        visit_detail: Option<VisitDetail<'a>> = "VisitDetail" by OrDefault,
    }
}

document_object! {
    pub struct ChatHeader<'a> {
        chat_uid: Text<'a> = "ChatUID" by Trimmed required,
        site_key: i32 = "SiteKey" by Plain required,
        ip: Text<'a> = "IP" by Trimmed,
        dns: Text<'a> = "DNS" by Trimmed,
        location: Text<'a> = "Location" by Trimmed,
        tracking_id: Text<'a> = "TrackingId" by Trimmed,
        visit_no: i32 = "VisitNo" by OrDefault,
        taken_by_users: Text<'a> = "TakenByUsers" by Trimmed,
        taken_by_dept: Text<'a> = "TakenByDept" by Trimmed,
        taken_by_bot: bool = "TakenByBot" by OrDefault,
        started: LocalTimestamp = "Started" by Local required,
        finished: LocalTimestamp = "Finished" by Local,
        waited_seconds: i32 = "WaitedSeconds" by OrDefault,
        duration_seconds: i32 = "DurationSeconds" by OrDefault,
        lang: Text<'a> = "Lang" by Trimmed,
        translation: bool = "Translation" by OrDefault,
        rating: i32 = "Rating" by OrDefault,
        name: Text<'a> = "Name" by Trimmed,
        email: Text<'a> = "Email" by Trimmed,
        phone: Text<'a> = "Phone" by Trimmed,
        missed: bool = "Missed" by OrDefault,
        /// Free text the visitor left: kept verbatim.
        missed_message: Text<'a> = "MissedMessage" by VerbatimOrEmpty,
        missed_seen: bool = "MissedSeen" by OrDefault,
        missed_seen_by_user_name: Text<'a> = "MissedSeenByUserName" by Trimmed,
        missed_seen_on: LocalTimestamp = "MissedSeenOn" by Local,
        missed_callback: bool = "MissedCallback" by OrDefault,
        missed_callback_on: LocalTimestamp = "MissedCallbackOn" by Local,
        requested_dept: Text<'a> = "RequestedDept" by Trimmed,
        sentiment_score: i32 = "SentimentScore" by OrDefault,
        wrap_up_value: Text<'a> = "WrapUpValue" by Trimmed,
        tags: Vec<String> = "Tags" by OrDefault,
        summary: Text<'a> = "Summary" by VerbatimOrEmpty,
        channel: Text<'a> = "Channel" by Trimmed,
        state: i32 = "State" by OrDefault,
        skill_names: Text<'a> = "SkillNames" by Trimmed,
        transcript_url: Text<'a> = "TranscriptURL" by Trimmed,
    }
}

impl ChatHeader<'_> {
    /// Operator names in order of joining; `OperatorIndex` n refers to the n-th of them.
    pub fn operators(&self) -> Vec<&str> {
        self.taken_by_users
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .collect()
    }
}

document_object! {
    pub struct SurveyAnswer<'a> {
        name: Text<'a> = "Name" by Trimmed required,
        value: Text<'a> = "Value" by Trimmed,
    }
}

document_object! {
    pub struct Line<'a> {
        dated: LocalTimestamp = "Dated" by Local required,
        operator_index: i32 = "OperatorIndex" by Plain required,
        /// The text as typed: newlines, markdown and leading spaces are content.
        message: Text<'a> = "Message" by Verbatim required,
    }
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

impl Line<'_> {
    pub fn role(&self) -> Role {
        Role::from_operator_index(self.operator_index)
    }
}

document_object! {
    pub struct VisitDetail<'a> {
        site_key: i32 = "SiteKey" by OrDefault,
        site_name: Text<'a> = "SiteName" by Trimmed,
        ip: Text<'a> = "IP" by Trimmed,
        tracking_id: Text<'a> = "TrackingId" by Trimmed,
        dns: Text<'a> = "DNS" by Trimmed,
        visit_no: i32 = "VisitNo" by OrDefault,
        total_visits: i32 = "TotalVisits" by OrDefault,
        browser: Text<'a> = "Browser" by Trimmed,
        os: Text<'a> = "OS" by Trimmed,
        referrer: Text<'a> = "Referrer" by Trimmed,
        session_started: LocalTimestamp = "SessionStarted" by Local,
        chatting: bool = "Chatting" by OrDefault,
        chatting_language: Text<'a> = "ChattingLanguage" by Trimmed,
        chatting_translate: bool = "ChattingTranslate" by OrDefault,
        page_views: i32 = "PageViews" by OrDefault,
        first_page: Text<'a> = "FirstPage" by Trimmed,
        first_visit: LocalTimestamp = "FirstVisit" by Local,
        contact_name: Text<'a> = "ContactName" by Trimmed,
        contact_email: Text<'a> = "ContactEmail" by Trimmed,
        contact_company: Text<'a> = "ContactCompany" by Trimmed,
        contact_telephone: Text<'a> = "ContactTelephone" by Trimmed,
        contact_notes: Text<'a> = "ContactNotes" by VerbatimOrEmpty,
        contact_street: Text<'a> = "ContactStreet" by Trimmed,
        contact_city: Text<'a> = "ContactCity" by Trimmed,
        contact_post_code: Text<'a> = "ContactPostCode" by Trimmed,
        contact_country: Text<'a> = "ContactCountry" by Trimmed,
        contact_web_address: Text<'a> = "ContactWebAddress" by Trimmed,
        contact_organization: Text<'a> = "ContactOrganization" by Trimmed,
        crm_id: Text<'a> = "CRMId" by Trimmed,
        pages: Vec<Page<'a>> = "Pages" by OrDefault,
        geo_ip: Option<GeoIp<'a>> = "GeoIP" by OrDefault,
    }
}

document_object! {
    pub struct Page<'a> {
        dated: LocalTimestamp = "Dated" by Local,
        name: Text<'a> = "Name" by Trimmed required,
    }
}

document_object! {
    pub struct GeoIp<'a> {
        ip: Text<'a> = "IP" by Trimmed,
        country_name: Text<'a> = "CountryName" by Trimmed,
        country_iso: Text<'a> = "CountryISO" by Trimmed,
        city: Text<'a> = "City" by Trimmed,
        post_code: Text<'a> = "PostCode" by Trimmed,
        metro_code: Text<'a> = "MetroCode" by Trimmed,
        latitude: Option<f64> = "Latitude" by Plain,
        longitude: Option<f64> = "Longitude" by Plain,
        radius: Option<f64> = "Radius" by Plain,
        isp: Text<'a> = "ISP" by Trimmed,
        organization: Text<'a> = "Organization" by Trimmed,
    }
}

impl<'a> ChatDocument<'a> {
    /// Reads a document that has already passed schema validation; its text borrows
    /// from `value`.
    pub fn from_value(value: &'a Value) -> Result<ChatDocument<'a>, serde_json::Error> {
        ChatDocument::deserialize(value)
    }

    /// Reads archived document bytes straight into the model: building a `Value` first
    /// and dropping it again was most of the time a store rebuild took. A repeated key,
    /// which JSON allows and the schema check accepted, reads as in a `Value`: the last
    /// one wins. Text that needed no unescaping borrows from `bytes`.
    pub fn from_json(bytes: &'a [u8]) -> Result<ChatDocument<'a>, serde_json::Error> {
        // Checked once for the whole document: parsed as bytes, every string (a few
        // hundred per chat) would be checked again on its own.
        let text = simdutf8::basic::from_utf8(bytes).map_err(serde::de::Error::custom)?;
        serde_json::from_str(text)
    }
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

    #[test]
    fn text_borrows_from_the_json_unless_it_was_escaped() {
        let text = br#"{"ChatHeader": {"ChatUID": " 6741a0c2e4b0a1f3c2d4e501 ", "SiteKey": 3,
            "Started": "2024-08-14T09:12:03", "Name": " Ann\u0020Lee ", "Summary": null},
            "Lines": [{"Dated": "2024-08-14T09:12:04", "OperatorIndex": 0, "Message": " hi "},
            {"Dated": "2024-08-14T09:12:05", "OperatorIndex": 1, "Message": "a\nb"}]}"#;
        let document = ChatDocument::from_json(text).expect("reads");
        let header = &document.chat_header;
        assert!(matches!(
            &header.chat_uid,
            Text::Borrowed("6741a0c2e4b0a1f3c2d4e501")
        ));
        assert!(matches!(&header.name, Text::Owned(name) if name == "Ann Lee"));
        assert_eq!(header.summary, "", "null is the empty string");
        assert!(matches!(&document.lines[0].message, Text::Borrowed(" hi ")));
        assert!(matches!(&document.lines[1].message, Text::Owned(m) if m == "a\nb"));
        let owned: Value = serde_json::from_slice(text).expect("JSON");
        let from_owned: ChatDocument<'static> = Deserialize::deserialize(owned).expect("reads");
        assert_eq!(from_owned, document, "borrowed or owned, the same document");
    }

    #[test]
    fn null_free_text_is_a_wrong_type_where_the_model_requires_text() {
        let error = ChatDocument::from_json(
            br#"{"ChatHeader": {"ChatUID": "a1", "SiteKey": 3, "Started": "2024-08-14T09:12:03"},
            "Lines": [{"Dated": "2024-08-14T09:12:04", "OperatorIndex": 0, "Message": null}]}"#,
        )
        .expect_err("a line's message is required text");
        assert!(
            error
                .to_string()
                .contains("invalid type: null, expected a string"),
            "{error}"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_an_error() {
        let text = b"{\"ChatHeader\": {\"ChatUID\": \"a\xff1\", \"SiteKey\": 3,
            \"Started\": \"2024-08-14T09:12:03\"}, \"Lines\": []}";
        let error = ChatDocument::from_json(text).expect_err("not UTF-8");
        assert!(error.to_string().contains("invalid utf-8"), "{error}");
    }

    #[test]
    fn unknown_fields_at_every_level_survive_a_round_trip() {
        let text = br#"{"ChatHeader": {"ChatUID": "a1", "SiteKey": 3, "Started": "2024-08-14T09:12:03.000",
            "Future": [1, {"x": null}]}, "Lines": [{"Dated": "2024-08-14T09:12:04.000",
            "OperatorIndex": 1, "Message": "hi", "Reaction": "+1"}], "Region": "eu"}"#;
        let document = ChatDocument::from_json(text).expect("reads");
        assert_eq!(document.extra.get("Region"), Some(&Value::from("eu")));
        assert_eq!(
            document.lines[0].extra.get("Reaction"),
            Some(&Value::from("+1"))
        );
        let written = serde_json::to_value(&document).expect("writes");
        assert_eq!(
            ChatDocument::from_value(&written).expect("reads back"),
            document
        );
        assert_eq!(
            written["ChatHeader"]["Future"],
            serde_json::json!([1, {"x": null}])
        );
    }

    #[test]
    fn a_missing_required_field_or_a_wrong_type_is_named() {
        let missing = ChatDocument::from_json(
            br#"{"ChatHeader": {"SiteKey": 3,
            "Started": "2024-08-14T09:12:03"}, "Lines": []}"#,
        )
        .expect_err("no ChatUID");
        assert!(
            missing.to_string().contains("missing field `ChatUID`"),
            "{missing}"
        );
        let wrong = ChatDocument::from_json(
            br#"{"ChatHeader": {"ChatUID": 7, "SiteKey": 3,
            "Started": "2024-08-14T09:12:03"}, "Lines": []}"#,
        )
        .expect_err("a number is not a ChatUID");
        assert!(wrong.to_string().contains("expected a string"), "{wrong}");
    }
}
