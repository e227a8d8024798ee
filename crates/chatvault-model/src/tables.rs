//! The analytical tables a chat flattens into. One definition serves the store (Parquet
//! schema), the OData model and the exports, so a column is named and typed once.

use chrono::NaiveDateTime;
use std::sync::Arc;

/// The type of a column, as every consumer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Str,
    I32,
    I64,
    Bool,
    F64,
    /// Site wall-clock time, microsecond precision, no offset.
    Timestamp,
    /// A list of strings (Collection(Edm.String) in OData).
    StrList,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: &'static str,
    pub kind: ColumnKind,
    pub nullable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableDef {
    pub name: &'static str,
    /// Columns that identify a row within the current state.
    pub keys: &'static [&'static str],
    pub columns: &'static [ColumnDef],
}

impl TableDef {
    pub fn column(&self, name: &str) -> Option<&ColumnDef> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Receives a table's columns one at a time, each as an iterator over the rows' values
/// (strings borrowed from the rows): a flush turns tens of thousands of chats into
/// columns, and gathering every column into a vector first cost as much memory traffic
/// as building the arrays themselves.
pub trait ColumnSink<'a> {
    type Error;
    fn strs(
        &mut self,
        def: &ColumnDef,
        values: impl ExactSizeIterator<Item = Option<&'a str>>,
    ) -> Result<(), Self::Error>;
    fn i32s(
        &mut self,
        def: &ColumnDef,
        values: impl ExactSizeIterator<Item = Option<i32>>,
    ) -> Result<(), Self::Error>;
    fn i64s(
        &mut self,
        def: &ColumnDef,
        values: impl ExactSizeIterator<Item = Option<i64>>,
    ) -> Result<(), Self::Error>;
    fn bools(
        &mut self,
        def: &ColumnDef,
        values: impl ExactSizeIterator<Item = Option<bool>>,
    ) -> Result<(), Self::Error>;
    fn f64s(
        &mut self,
        def: &ColumnDef,
        values: impl ExactSizeIterator<Item = Option<f64>>,
    ) -> Result<(), Self::Error>;
    /// Microseconds since 1970-01-01T00:00:00 in site wall-clock time.
    fn timestamps(
        &mut self,
        def: &ColumnDef,
        values: impl ExactSizeIterator<Item = Option<i64>>,
    ) -> Result<(), Self::Error>;
    fn str_lists(
        &mut self,
        def: &ColumnDef,
        values: impl ExactSizeIterator<Item = &'a [String]>,
    ) -> Result<(), Self::Error>;
}

/// A Rust field type that can be a column.
pub trait ColumnValue {
    const KIND: ColumnKind;
    const NULLABLE: bool;
    fn put<'a, S: ColumnSink<'a>>(
        sink: &mut S,
        def: &ColumnDef,
        values: impl ExactSizeIterator<Item = &'a Self>,
    ) -> Result<(), S::Error>
    where
        Self: 'a;
}

macro_rules! column_value {
    ($ty:ty, $kind:ident, $nullable:expr, $put:ident, |$v:ident| $conv:expr) => {
        impl ColumnValue for $ty {
            const KIND: ColumnKind = ColumnKind::$kind;
            const NULLABLE: bool = $nullable;
            fn put<'a, S: ColumnSink<'a>>(
                sink: &mut S,
                def: &ColumnDef,
                values: impl ExactSizeIterator<Item = &'a Self>,
            ) -> Result<(), S::Error> {
                sink.$put(def, values.map(|$v| $conv))
            }
        }
    };
}

column_value!(String, Str, false, strs, |v| Some(v.as_str()));
column_value!(Option<String>, Str, true, strs, |v| v.as_deref());
// A chat's child rows share its ChatUID and operator names, and every line's role is one
// of three words: a row apiece of each would be tens of millions of small allocations
// in a rebuild.
column_value!(Arc<str>, Str, false, strs, |v| Some(&**v));
column_value!(&'static str, Str, false, strs, |v| Some(*v));
column_value!(i32, I32, false, i32s, |v| Some(*v));
column_value!(Option<i32>, I32, true, i32s, |v| *v);
column_value!(i64, I64, false, i64s, |v| Some(*v));
column_value!(bool, Bool, false, bools, |v| Some(*v));
column_value!(Option<f64>, F64, true, f64s, |v| *v);
column_value!(Option<NaiveDateTime>, Timestamp, true, timestamps, |v| v
    .map(|t| t.and_utc().timestamp_micros()));
column_value!(Vec<String>, StrList, false, str_lists, |v| v.as_slice());

/// The definition of a column named `name` holding `T`s.
const fn column_def<T: ColumnValue>(name: &'static str) -> ColumnDef {
    ColumnDef {
        name,
        kind: T::KIND,
        nullable: T::NULLABLE,
    }
}

/// Declares a row struct together with its table definition and column extraction, so
/// the three can never disagree.
macro_rules! table {
    ($(#[$meta:meta])* $row:ident, $name:literal, keys [$($key:literal),*], { $($(#[$fmeta:meta])* $field:ident : $ty:ty => $col:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $row {
            $($(#[$fmeta])* pub $field: $ty),*
        }

        impl $row {
            pub const TABLE: TableDef = TableDef {
                name: $name,
                keys: &[$($key),*],
                columns: &[$(column_def::<$ty>($col)),*],
            };

            /// Hands the rows to `sink` column by column, in `TABLE.columns` order.
            pub fn put_columns<'a, S: ColumnSink<'a>>(rows: &[&'a $row], sink: &mut S) -> Result<(), S::Error> {
                $(
                    <$ty as ColumnValue>::put(sink, &column_def::<$ty>($col), rows.iter().map(|&r| &r.$field))?;
                )*
                Ok(())
            }
        }
    };
}

table! {
    /// One row per chat: every header field, the visit and GeoIP flattened, and derived figures.
    ChatRow, "Chats", keys ["ChatUID"], {
        chat_uid: String => "ChatUID",
        site_key: i32 => "SiteKey",
        /// Archive sequence number of this version; the store keeps only the newest.
        archive_seq: i64 => "ArchiveSeq",
        started: Option<NaiveDateTime> => "Started",
        finished: Option<NaiveDateTime> => "Finished",
        waited_seconds: i32 => "WaitedSeconds",
        duration_seconds: i32 => "DurationSeconds",
        taken_by_users: String => "TakenByUsers",
        taken_by_dept: String => "TakenByDept",
        taken_by_bot: bool => "TakenByBot",
        requested_dept: String => "RequestedDept",
        skill_names: String => "SkillNames",
        channel: String => "Channel",
        state: i32 => "State",
        lang: String => "Lang",
        translation: bool => "Translation",
        rating: i32 => "Rating",
        sentiment_score: i32 => "SentimentScore",
        wrap_up_value: String => "WrapUpValue",
        tags: Vec<String> => "Tags",
        summary: String => "Summary",
        missed: bool => "Missed",
        missed_message: String => "MissedMessage",
        missed_seen: bool => "MissedSeen",
        missed_seen_by_user_name: String => "MissedSeenByUserName",
        missed_seen_on: Option<NaiveDateTime> => "MissedSeenOn",
        missed_callback: bool => "MissedCallback",
        missed_callback_on: Option<NaiveDateTime> => "MissedCallbackOn",
        name: String => "Name",
        email: String => "Email",
        phone: String => "Phone",
        ip: String => "IP",
        dns: String => "DNS",
        location: String => "Location",
        tracking_id: String => "TrackingId",
        visit_no: i32 => "VisitNo",
        transcript_url: String => "TranscriptURL",
        site_name: String => "SiteName",
        total_visits: i32 => "TotalVisits",
        browser: String => "Browser",
        os: String => "OS",
        referrer: String => "Referrer",
        session_started: Option<NaiveDateTime> => "SessionStarted",
        chatting_language: String => "ChattingLanguage",
        chatting_translate: bool => "ChattingTranslate",
        page_views: i32 => "PageViews",
        first_page: String => "FirstPage",
        first_visit: Option<NaiveDateTime> => "FirstVisit",
        contact_name: String => "ContactName",
        contact_email: String => "ContactEmail",
        contact_company: String => "ContactCompany",
        contact_telephone: String => "ContactTelephone",
        contact_notes: String => "ContactNotes",
        contact_street: String => "ContactStreet",
        contact_city: String => "ContactCity",
        contact_post_code: String => "ContactPostCode",
        contact_country: String => "ContactCountry",
        contact_web_address: String => "ContactWebAddress",
        contact_organization: String => "ContactOrganization",
        crm_id: String => "CRMId",
        country_name: String => "CountryName",
        country_iso: String => "CountryISO",
        city: String => "City",
        post_code: String => "PostCode",
        metro_code: String => "MetroCode",
        latitude: Option<f64> => "Latitude",
        longitude: Option<f64> => "Longitude",
        radius: Option<f64> => "Radius",
        isp: String => "ISP",
        organization: String => "Organization",
        line_count: i32 => "LineCount",
        visitor_lines: i32 => "VisitorLines",
        operator_lines: i32 => "OperatorLines",
        system_lines: i32 => "SystemLines",
        /// Seconds from the start of the chat to the first line an operator (or bot) wrote.
        first_response_seconds: Option<i32> => "FirstResponseSeconds",
        operator_names: Vec<String> => "OperatorNames",
        operator_count: i32 => "OperatorCount",
        /// GeoIP country, else the country part of Location.
        visitor_country: String => "VisitorCountry",
        answered_by_bot: bool => "AnsweredByBot",
        transferred: bool => "Transferred",
        translated: bool => "Translated",
        /// A missed chat someone saw or called back.
        missed_followed_up: bool => "MissedFollowedUp",
    }
}

table! {
    LineRow, "ChatLines", keys ["ChatUID", "Seq"], {
        chat_uid: Arc<str> => "ChatUID",
        site_key: i32 => "SiteKey",
        archive_seq: i64 => "ArchiveSeq",
        seq: i32 => "Seq",
        dated: Option<NaiveDateTime> => "Dated",
        operator_index: i32 => "OperatorIndex",
        role: &'static str => "Role",
        /// The operator's name from TakenByUsers; empty for visitor and system lines.
        operator_name: Arc<str> => "OperatorName",
        message: String => "Message",
    }
}

table! {
    SurveyRow, "SurveyAnswers", keys ["ChatUID", "Survey", "Seq"], {
        chat_uid: Arc<str> => "ChatUID",
        site_key: i32 => "SiteKey",
        archive_seq: i64 => "ArchiveSeq",
        /// `pre` or `post`.
        survey: &'static str => "Survey",
        seq: i32 => "Seq",
        name: String => "Name",
        value: String => "Value",
    }
}

table! {
    PageRow, "PageViews", keys ["ChatUID", "Seq"], {
        chat_uid: Arc<str> => "ChatUID",
        site_key: i32 => "SiteKey",
        archive_seq: i64 => "ArchiveSeq",
        seq: i32 => "Seq",
        dated: Option<NaiveDateTime> => "Dated",
        name: String => "Name",
    }
}

table! {
    TagRow, "ChatTags", keys ["ChatUID", "Tag"], {
        chat_uid: Arc<str> => "ChatUID",
        site_key: i32 => "SiteKey",
        archive_seq: i64 => "ArchiveSeq",
        tag: String => "Tag",
    }
}

/// The stored tables, in a fixed order.
pub const TABLES: [TableDef; 5] = [
    ChatRow::TABLE,
    LineRow::TABLE,
    SurveyRow::TABLE,
    PageRow::TABLE,
    TagRow::TABLE,
];
