//! One chat document → the rows of every table.

use std::sync::Arc;

use crate::document::{ChatDocument, GeoIp, Role, SurveyAnswer, VisitDetail};
use crate::fields::Text;
use crate::tables::{ChatRow, LineRow, PageRow, SurveyRow, TagRow};

/// Every row one version of a chat contributes; their text may borrow from the
/// document's JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatChat<'a> {
    pub chat: ChatRow<'a>,
    pub lines: Vec<LineRow<'a>>,
    pub surveys: Vec<SurveyRow<'a>>,
    pub pages: Vec<PageRow<'a>>,
    pub tags: Vec<TagRow<'a>>,
}

impl FlatChat<'_> {
    /// The rows with their own copy of what they borrowed, to keep beyond the JSON.
    pub fn into_owned(self) -> FlatChat<'static> {
        FlatChat {
            chat: self.chat.into_owned(),
            lines: self.lines.into_iter().map(LineRow::into_owned).collect(),
            surveys: self
                .surveys
                .into_iter()
                .map(SurveyRow::into_owned)
                .collect(),
            pages: self.pages.into_iter().map(PageRow::into_owned).collect(),
            tags: self.tags.into_iter().map(TagRow::into_owned).collect(),
        }
    }

    /// Names the version these rows belong to once the archive has numbered it: sources
    /// flatten in parallel before the single writer knows the sequence number.
    pub fn set_archive_seq(&mut self, archive_seq: i64) {
        self.chat.archive_seq = archive_seq;
        self.lines
            .iter_mut()
            .for_each(|r| r.archive_seq = archive_seq);
        self.surveys
            .iter_mut()
            .for_each(|r| r.archive_seq = archive_seq);
        self.pages
            .iter_mut()
            .for_each(|r| r.archive_seq = archive_seq);
        self.tags
            .iter_mut()
            .for_each(|r| r.archive_seq = archive_seq);
    }
}

/// Flattens a validated document; `archive_seq` identifies the version. The document's
/// text moves (or stays borrowed) into the rows rather than being copied.
pub fn flatten<'a>(doc: ChatDocument<'a>, archive_seq: i64) -> FlatChat<'a> {
    let ChatDocument {
        chat_header: h,
        pre_chat_survey,
        post_chat_survey,
        lines,
        visit_detail: mut visit,
        ..
    } = doc;
    let uid: Arc<str> = h.chat_uid.to_ascii_lowercase().into();
    let site_key = h.site_key;
    let operators: Vec<Arc<str>> = h.operators().into_iter().map(Arc::from).collect();
    let no_operator: Arc<str> = Arc::from("");
    let (mut visitor, mut operator, mut system) = (0, 0, 0);
    let mut first_response = None;
    let lines: Vec<LineRow> = lines
        .into_iter()
        .enumerate()
        .map(|(i, line)| {
            let role = line.role();
            match role {
                Role::Visitor => visitor += 1,
                Role::Operator => {
                    operator += 1;
                    if first_response.is_none() {
                        first_response = line.dated;
                    }
                }
                Role::System => system += 1,
            }
            let operator_name = match role {
                Role::Operator => usize::try_from(line.operator_index - 1)
                    .ok()
                    .and_then(|i| operators.get(i))
                    .unwrap_or(&no_operator)
                    .clone(),
                _ => no_operator.clone(),
            };
            LineRow {
                chat_uid: uid.clone(),
                site_key,
                archive_seq,
                seq: i as i32,
                dated: line.dated,
                operator_index: line.operator_index,
                role: role.as_str(),
                operator_name,
                message: line.message,
            }
        })
        .collect();
    let first_response_seconds = match (h.started, first_response) {
        (Some(start), Some(reply)) => i32::try_from((reply - start).num_seconds().max(0)).ok(),
        _ => None,
    };
    let survey = |kind: &'static str, answers: Vec<SurveyAnswer<'a>>| -> Vec<SurveyRow<'a>> {
        answers
            .into_iter()
            .enumerate()
            .map(|(i, a)| SurveyRow {
                chat_uid: uid.clone(),
                site_key,
                archive_seq,
                survey: kind,
                seq: i as i32,
                name: a.name,
                value: a.value,
            })
            .collect()
    };
    let mut surveys = survey("pre", pre_chat_survey);
    surveys.extend(survey("post", post_chat_survey));
    let mut geo = visit.as_mut().and_then(|v| v.geo_ip.take());
    let pages = visit
        .as_mut()
        .map(|v| {
            std::mem::take(&mut v.pages)
                .into_iter()
                .enumerate()
                .map(|(i, p)| PageRow {
                    chat_uid: uid.clone(),
                    site_key,
                    archive_seq,
                    seq: i as i32,
                    dated: p.dated,
                    name: p.name,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut distinct_tags: Vec<String> = Vec::with_capacity(h.tags.len());
    for tag in &h.tags {
        let tag = tag.trim();
        if !tag.is_empty() && !distinct_tags.iter().any(|t| t == tag) {
            distinct_tags.push(tag.to_owned());
        }
    }
    let tags = distinct_tags
        .iter()
        .map(|tag| TagRow {
            chat_uid: uid.clone(),
            site_key,
            archive_seq,
            tag: Text::Owned(tag.clone()),
        })
        .collect();
    let total_visits = visit.as_ref().map_or(0, |v| v.total_visits);
    let session_started = visit.as_ref().and_then(|v| v.session_started);
    let chatting_translate = visit.as_ref().is_some_and(|v| v.chatting_translate);
    let page_views = visit.as_ref().map_or(0, |v| v.page_views);
    let first_visit = visit.as_ref().and_then(|v| v.first_visit);
    let (latitude, longitude, radius) = geo
        .as_ref()
        .map_or((None, None, None), |g| (g.latitude, g.longitude, g.radius));
    let operators_named = operators.len();
    let mut text = |f: for<'r> fn(&'r mut VisitDetail<'a>) -> &'r mut Text<'a>| {
        visit
            .as_mut()
            .map(|v| std::mem::take(f(v)))
            .unwrap_or_default()
    };
    let mut geo_text = |f: for<'r> fn(&'r mut GeoIp<'a>) -> &'r mut Text<'a>| {
        geo.as_mut()
            .map(|g| std::mem::take(f(g)))
            .unwrap_or_default()
    };
    let country_name = geo_text(|g| &mut g.country_name);
    let visitor_country = if country_name.is_empty() {
        country_of_location(&h.location)
    } else {
        country_name.clone()
    };
    let chat = ChatRow {
        chat_uid: uid.to_string(),
        site_key,
        archive_seq,
        started: h.started,
        finished: h.finished,
        waited_seconds: h.waited_seconds,
        duration_seconds: h.duration_seconds,
        taken_by_users: h.taken_by_users,
        taken_by_dept: h.taken_by_dept,
        taken_by_bot: h.taken_by_bot,
        requested_dept: h.requested_dept,
        skill_names: h.skill_names,
        channel: h.channel,
        state: h.state,
        lang: h.lang,
        translation: h.translation,
        rating: h.rating,
        sentiment_score: h.sentiment_score,
        wrap_up_value: h.wrap_up_value,
        tags: distinct_tags,
        summary: h.summary,
        missed: h.missed,
        missed_message: h.missed_message,
        missed_seen: h.missed_seen,
        missed_seen_by_user_name: h.missed_seen_by_user_name,
        missed_seen_on: h.missed_seen_on,
        missed_callback: h.missed_callback,
        missed_callback_on: h.missed_callback_on,
        name: h.name,
        email: h.email,
        phone: h.phone,
        ip: h.ip,
        dns: h.dns,
        location: h.location,
        tracking_id: h.tracking_id,
        visit_no: h.visit_no,
        transcript_url: h.transcript_url,
        site_name: text(|v| &mut v.site_name),
        total_visits,
        browser: text(|v| &mut v.browser),
        os: text(|v| &mut v.os),
        referrer: text(|v| &mut v.referrer),
        session_started,
        chatting_language: text(|v| &mut v.chatting_language),
        chatting_translate,
        page_views,
        first_page: text(|v| &mut v.first_page),
        first_visit,
        contact_name: text(|v| &mut v.contact_name),
        contact_email: text(|v| &mut v.contact_email),
        contact_company: text(|v| &mut v.contact_company),
        contact_telephone: text(|v| &mut v.contact_telephone),
        contact_notes: text(|v| &mut v.contact_notes),
        contact_street: text(|v| &mut v.contact_street),
        contact_city: text(|v| &mut v.contact_city),
        contact_post_code: text(|v| &mut v.contact_post_code),
        contact_country: text(|v| &mut v.contact_country),
        contact_web_address: text(|v| &mut v.contact_web_address),
        contact_organization: text(|v| &mut v.contact_organization),
        crm_id: text(|v| &mut v.crm_id),
        country_name,
        country_iso: geo_text(|g| &mut g.country_iso),
        city: geo_text(|g| &mut g.city),
        post_code: geo_text(|g| &mut g.post_code),
        metro_code: geo_text(|g| &mut g.metro_code),
        latitude,
        longitude,
        radius,
        isp: geo_text(|g| &mut g.isp),
        organization: geo_text(|g| &mut g.organization),
        line_count: lines.len() as i32,
        visitor_lines: visitor,
        operator_lines: operator,
        system_lines: system,
        first_response_seconds,
        operator_count: operators_named as i32,
        operator_names: operators.iter().map(|name| name.to_string()).collect(),
        visitor_country,
        answered_by_bot: h.taken_by_bot && !h.missed,
        transferred: operators_named > 1,
        translated: h.translation || chatting_translate,
        missed_followed_up: h.missed && (h.missed_seen || h.missed_callback),
    };
    FlatChat {
        chat,
        lines,
        surveys,
        pages,
        tags,
    }
}

/// The country part of a Location ("United Kingdom - London"), borrowed where the
/// location is.
fn country_of_location<'a>(location: &Text<'a>) -> Text<'a> {
    fn country(location: &str) -> &str {
        location.split(" - ").next().unwrap_or_default().trim()
    }
    match location {
        Text::Borrowed(location) => Text::Borrowed(country(location)),
        Text::Owned(location) => Text::Owned(country(location).to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::{ColumnDef, ColumnKind, ColumnSink, TABLES};
    use std::convert::Infallible;

    fn sample(name: &str) -> ChatDocument<'static> {
        let path = crate::reference_samples().join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let value: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        // Read from the owned tree, the document owns its text.
        serde::Deserialize::deserialize(value).unwrap_or_else(|e| panic!("{path:?}: {e}"))
    }

    #[test]
    fn answered_chat_has_derived_figures() {
        let flat = flatten(sample("answered-with-surveys.json"), 42);
        let c = &flat.chat;
        assert_eq!(
            (
                c.line_count,
                c.visitor_lines,
                c.operator_lines,
                c.system_lines
            ),
            (7, 3, 3, 1)
        );
        assert_eq!(
            c.first_response_seconds,
            Some(11),
            "09:12:03.417 → 09:12:14.9"
        );
        assert_eq!(c.operator_names, vec!["Amelia Brook"]);
        assert_eq!(
            (&*c.visitor_country, &*c.country_iso),
            ("United Kingdom", "GB")
        );
        assert!(!c.transferred && !c.answered_by_bot && !c.missed_followed_up);
        assert_eq!(c.tags, vec!["Sales", "Quote sent"]);
        assert_eq!(flat.surveys.len(), 4);
        assert_eq!(flat.surveys[2].survey, "post");
        assert_eq!(flat.pages.len(), 4);
        assert_eq!(&*flat.lines[1].operator_name, "Amelia Brook");
        assert_eq!(flat.lines[0].role, "system");
        assert!(flat
            .lines
            .iter()
            .all(|l| l.archive_seq == 42 && l.site_key == 3));
    }

    #[test]
    fn bot_transfer_and_missed_follow_up_are_derived() {
        let bot = flatten(sample("bot-then-transfer.json"), 1).chat;
        assert!(bot.answered_by_bot && bot.transferred);
        assert_eq!(bot.operator_names, vec!["HelpBot", "Marcus Reyes"]);
        let before = flatten(sample("missed-before-follow-up.json"), 2).chat;
        let after = flatten(sample("missed-followed-up.json"), 3).chat;
        assert!(before.missed && !before.missed_followed_up && before.missed_seen_on.is_none());
        assert!(after.missed_followed_up && after.missed_seen_on.is_some());
        assert_eq!(before.first_response_seconds, None);
        assert!(flatten(sample("translated-german.json"), 4).chat.translated);
    }

    #[test]
    fn numbering_later_equals_flattening_with_the_number() {
        let doc = sample("answered-with-surveys.json");
        let mut late = flatten(doc.clone(), 0);
        late.set_archive_seq(77);
        let early = flatten(doc, 77);
        assert!(!early.lines.is_empty() && !early.surveys.is_empty() && !early.pages.is_empty());
        assert_eq!(late, early);
    }

    #[test]
    fn rows_borrow_the_documents_text_until_made_owned() {
        let path = crate::reference_samples().join("answered-with-surveys.json");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let flat = flatten(ChatDocument::from_json(&bytes).expect("reads"), 5);
        let borrowed = |text: &Text<'_>| matches!(text, Text::Borrowed(_));
        assert!(flat.lines.iter().any(|l| borrowed(&l.message)));
        assert!(borrowed(&flat.chat.taken_by_users) && borrowed(&flat.pages[0].name));
        let owned: FlatChat<'static> = flat.clone().into_owned();
        assert!(!borrowed(&owned.lines[0].message) && !borrowed(&owned.chat.browser));
        assert_eq!(owned, flat);
        assert_eq!(owned, flatten(sample("answered-with-surveys.json"), 5));
    }

    /// What each column handed over: its definition, the kind the sink method taken
    /// stands for, and how many values.
    #[derive(Default)]
    struct Shapes(Vec<(ColumnDef, ColumnKind, usize)>);

    impl Shapes {
        fn note(
            &mut self,
            def: &ColumnDef,
            kind: ColumnKind,
            len: usize,
        ) -> Result<(), Infallible> {
            self.0.push((*def, kind, len));
            Ok(())
        }
    }

    /// Each sink method notes the kind it stands for.
    macro_rules! noting {
        ($($method:ident: $item:ty => $kind:ident),* $(,)?) => {$(
            fn $method(
                &mut self,
                def: &ColumnDef,
                values: impl ExactSizeIterator<Item = $item>,
            ) -> Result<(), Infallible> {
                self.note(def, ColumnKind::$kind, values.len())
            }
        )*};
    }

    impl<'a> ColumnSink<'a> for Shapes {
        type Error = Infallible;
        noting! {
            strs: Option<&'a str> => Str,
            i32s: Option<i32> => I32,
            i64s: Option<i64> => I64,
            bools: Option<bool> => Bool,
            f64s: Option<f64> => F64,
            timestamps: Option<i64> => Timestamp,
            str_lists: &'a [String] => StrList,
        }
    }

    #[test]
    fn columns_match_their_table_definitions() -> Result<(), Infallible> {
        let flat = flatten(sample("answered-with-surveys.json"), 1);
        fn refs<T>(rows: &[T]) -> Vec<&T> {
            rows.iter().collect()
        }
        let mut shapes: [Shapes; 5] = Default::default();
        ChatRow::put_columns(&[&flat.chat], &mut shapes[0])?;
        LineRow::put_columns(&refs(&flat.lines), &mut shapes[1])?;
        SurveyRow::put_columns(&refs(&flat.surveys), &mut shapes[2])?;
        PageRow::put_columns(&refs(&flat.pages), &mut shapes[3])?;
        TagRow::put_columns(&refs(&flat.tags), &mut shapes[4])?;
        let rows = [
            1,
            flat.lines.len(),
            flat.surveys.len(),
            flat.pages.len(),
            flat.tags.len(),
        ];
        for ((table, shapes), rows) in TABLES.iter().zip(shapes).zip(rows) {
            let expected: Vec<(ColumnDef, ColumnKind, usize)> = table
                .columns
                .iter()
                .map(|def| (*def, def.kind, rows))
                .collect();
            assert_eq!(shapes.0, expected, "{}", table.name);
        }
        Ok(())
    }
}
