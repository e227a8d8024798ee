//! The analytical tables a chat flattens into. One definition serves the store (Parquet
//! schema), the OData model and the exports, so a column is named and typed once.

use chrono::NaiveDateTime;
use std::sync::Arc;

use crate::fields::Text;

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

/// A row's field that outlives the document it was read from: text borrowed from the
/// document becomes a copy, everything else stays as it is.
pub(crate) trait IntoStatic {
    type Static: 'static;
    fn into_static(self) -> Self::Static;
}

/// Declares a column type: how its values are handed to a sink and, unless it borrows
/// from the document (`borrowing`), that it outlives the document as it is.
macro_rules! column_value {
    (borrowing $ty:ty, $kind:ident, $nullable:expr, $put:ident, |$v:ident| $conv:expr) => {
        impl ColumnValue for $ty {
            const KIND: ColumnKind = ColumnKind::$kind;
            const NULLABLE: bool = $nullable;
            fn put<'a, S: ColumnSink<'a>>(
                sink: &mut S,
                def: &ColumnDef,
                values: impl ExactSizeIterator<Item = &'a Self>,
            ) -> Result<(), S::Error>
            where
                Self: 'a,
            {
                sink.$put(def, values.map(|$v| $conv))
            }
        }
    };
    ($ty:ty, $kind:ident, $nullable:expr, $put:ident, |$v:ident| $conv:expr) => {
        column_value!(borrowing $ty, $kind, $nullable, $put, |$v| $conv);

        impl IntoStatic for $ty {
            type Static = $ty;
            fn into_static(self) -> $ty {
                self
            }
        }
    };
}

column_value!(String, Str, false, strs, |v| Some(v.as_str()));
column_value!(borrowing Text<'_>, Str, false, strs, |v| Some(&**v));
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

impl IntoStatic for Text<'_> {
    type Static = Text<'static>;
    fn into_static(self) -> Text<'static> {
        Text::Owned(self.into_owned())
    }
}

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
    ($(#[$meta:meta])* $row:ident<$life:lifetime>, $name:literal, keys [$($key:literal),*], { $($(#[$fmeta:meta])* $field:ident : $ty:ty => $col:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $row<$life> {
            $($(#[$fmeta])* pub $field: $ty),*
        }

        impl<$life> $row<$life> {
            pub const TABLE: TableDef = TableDef {
                name: $name,
                keys: &[$($key),*],
                columns: &[$(column_def::<$ty>($col)),*],
            };

            /// Hands the rows to `sink` column by column, in `TABLE.columns` order.
            pub fn put_columns<'r, S: ColumnSink<'r>>(rows: &[&'r $row<$life>], sink: &mut S) -> Result<(), S::Error> {
                $(
                    <$ty as ColumnValue>::put(sink, &column_def::<$ty>($col), rows.iter().map(|&r| &r.$field))?;
                )*
                Ok(())
            }

            /// The row with its own copy of what it borrowed from the document.
            pub fn into_owned(self) -> $row<'static> {
                $row {
                    $($field: IntoStatic::into_static(self.$field)),*
                }
            }
        }
    };
}

table! {
    /// One row per chat: every header field, the visit and GeoIP flattened, and derived figures.
    ChatRow<'a>, "Chats", keys ["ChatUID"], {
        chat_uid: String => "ChatUID",
        site_key: i32 => "SiteKey",
        /// Archive sequence number of this version; the store keeps only the newest.
        archive_seq: i64 => "ArchiveSeq",
        started: Option<NaiveDateTime> => "Started",
        finished: Option<NaiveDateTime> => "Finished",
        waited_seconds: i32 => "WaitedSeconds",
        duration_seconds: i32 => "DurationSeconds",
        taken_by_users: Text<'a> => "TakenByUsers",
        taken_by_dept: Text<'a> => "TakenByDept",
        taken_by_bot: bool => "TakenByBot",
        requested_dept: Text<'a> => "RequestedDept",
        skill_names: Text<'a> => "SkillNames",
        channel: Text<'a> => "Channel",
        state: i32 => "State",
        lang: Text<'a> => "Lang",
        translation: bool => "Translation",
        rating: i32 => "Rating",
        sentiment_score: i32 => "SentimentScore",
        wrap_up_value: Text<'a> => "WrapUpValue",
        tags: Vec<String> => "Tags",
        summary: Text<'a> => "Summary",
        missed: bool => "Missed",
        missed_message: Text<'a> => "MissedMessage",
        missed_seen: bool => "MissedSeen",
        missed_seen_by_user_name: Text<'a> => "MissedSeenByUserName",
        missed_seen_on: Option<NaiveDateTime> => "MissedSeenOn",
        missed_callback: bool => "MissedCallback",
        missed_callback_on: Option<NaiveDateTime> => "MissedCallbackOn",
        name: Text<'a> => "Name",
        email: Text<'a> => "Email",
        phone: Text<'a> => "Phone",
        ip: Text<'a> => "IP",
        dns: Text<'a> => "DNS",
        location: Text<'a> => "Location",
        tracking_id: Text<'a> => "TrackingId",
        visit_no: i32 => "VisitNo",
        transcript_url: Text<'a> => "TranscriptURL",
        site_name: Text<'a> => "SiteName",
        total_visits: i32 => "TotalVisits",
        browser: Text<'a> => "Browser",
        os: Text<'a> => "OS",
        referrer: Text<'a> => "Referrer",
        session_started: Option<NaiveDateTime> => "SessionStarted",
        chatting_language: Text<'a> => "ChattingLanguage",
        chatting_translate: bool => "ChattingTranslate",
        page_views: i32 => "PageViews",
        first_page: Text<'a> => "FirstPage",
        first_visit: Option<NaiveDateTime> => "FirstVisit",
        contact_name: Text<'a> => "ContactName",
        contact_email: Text<'a> => "ContactEmail",
        contact_company: Text<'a> => "ContactCompany",
        contact_telephone: Text<'a> => "ContactTelephone",
        contact_notes: Text<'a> => "ContactNotes",
        contact_street: Text<'a> => "ContactStreet",
        contact_city: Text<'a> => "ContactCity",
        contact_post_code: Text<'a> => "ContactPostCode",
        contact_country: Text<'a> => "ContactCountry",
        contact_web_address: Text<'a> => "ContactWebAddress",
        contact_organization: Text<'a> => "ContactOrganization",
        crm_id: Text<'a> => "CRMId",
        country_name: Text<'a> => "CountryName",
        country_iso: Text<'a> => "CountryISO",
        city: Text<'a> => "City",
        post_code: Text<'a> => "PostCode",
        metro_code: Text<'a> => "MetroCode",
        latitude: Option<f64> => "Latitude",
        longitude: Option<f64> => "Longitude",
        radius: Option<f64> => "Radius",
        isp: Text<'a> => "ISP",
        organization: Text<'a> => "Organization",
        line_count: i32 => "LineCount",
        visitor_lines: i32 => "VisitorLines",
        operator_lines: i32 => "OperatorLines",
        system_lines: i32 => "SystemLines",
        /// Seconds from the start of the chat to the first line an operator (or bot) wrote.
        first_response_seconds: Option<i32> => "FirstResponseSeconds",
        operator_names: Vec<String> => "OperatorNames",
        operator_count: i32 => "OperatorCount",
        /// GeoIP country, else the country part of Location.
        visitor_country: Text<'a> => "VisitorCountry",
        answered_by_bot: bool => "AnsweredByBot",
        transferred: bool => "Transferred",
        translated: bool => "Translated",
        /// A missed chat someone saw or called back.
        missed_followed_up: bool => "MissedFollowedUp",
    }
}

table! {
    LineRow<'a>, "ChatLines", keys ["ChatUID", "Seq"], {
        chat_uid: Arc<str> => "ChatUID",
        site_key: i32 => "SiteKey",
        archive_seq: i64 => "ArchiveSeq",
        seq: i32 => "Seq",
        dated: Option<NaiveDateTime> => "Dated",
        operator_index: i32 => "OperatorIndex",
        role: &'static str => "Role",
        /// The operator's name from TakenByUsers; empty for visitor and system lines.
        operator_name: Arc<str> => "OperatorName",
        message: Text<'a> => "Message",
    }
}

table! {
    SurveyRow<'a>, "SurveyAnswers", keys ["ChatUID", "Survey", "Seq"], {
        chat_uid: Arc<str> => "ChatUID",
        site_key: i32 => "SiteKey",
        archive_seq: i64 => "ArchiveSeq",
        /// `pre` or `post`.
        survey: &'static str => "Survey",
        seq: i32 => "Seq",
        name: Text<'a> => "Name",
        value: Text<'a> => "Value",
    }
}

table! {
    PageRow<'a>, "PageViews", keys ["ChatUID", "Seq"], {
        chat_uid: Arc<str> => "ChatUID",
        site_key: i32 => "SiteKey",
        archive_seq: i64 => "ArchiveSeq",
        seq: i32 => "Seq",
        dated: Option<NaiveDateTime> => "Dated",
        name: Text<'a> => "Name",
    }
}

table! {
    TagRow<'a>, "ChatTags", keys ["ChatUID", "Tag"], {
        chat_uid: Arc<str> => "ChatUID",
        site_key: i32 => "SiteKey",
        archive_seq: i64 => "ArchiveSeq",
        tag: Text<'a> => "Tag",
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
