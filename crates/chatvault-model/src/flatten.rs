//! One chat document → the rows of every table.

use crate::document::{ChatDocument, Role, SurveyAnswer};
use crate::tables::{ChatRow, LineRow, PageRow, SurveyRow, TagRow};

/// Every row one version of a chat contributes.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatChat {
    pub chat: ChatRow,
    pub lines: Vec<LineRow>,
    pub surveys: Vec<SurveyRow>,
    pub pages: Vec<PageRow>,
    pub tags: Vec<TagRow>,
}

impl FlatChat {
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

/// Flattens a validated document; `archive_seq` identifies the version.
pub fn flatten(doc: &ChatDocument, archive_seq: i64) -> FlatChat {
    let h = &doc.chat_header;
    let uid = h.chat_uid.to_ascii_lowercase();
    let site_key = h.site_key;
    let operators: Vec<String> = h.operators().into_iter().map(str::to_owned).collect();
    let (mut visitor, mut operator, mut system) = (0, 0, 0);
    let mut first_response = None;
    let lines: Vec<LineRow> = doc
        .lines
        .iter()
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
                    .cloned()
                    .unwrap_or_default(),
                _ => String::new(),
            };
            LineRow {
                chat_uid: uid.clone(),
                site_key,
                archive_seq,
                seq: i as i32,
                dated: line.dated,
                operator_index: line.operator_index,
                role: role.as_str().to_owned(),
                operator_name,
                message: line.message.clone(),
            }
        })
        .collect();
    let first_response_seconds = match (h.started, first_response) {
        (Some(start), Some(reply)) => i32::try_from((reply - start).num_seconds().max(0)).ok(),
        _ => None,
    };
    let survey = |kind: &str, answers: &[SurveyAnswer]| -> Vec<SurveyRow> {
        answers
            .iter()
            .enumerate()
            .map(|(i, a)| SurveyRow {
                chat_uid: uid.clone(),
                site_key,
                archive_seq,
                survey: kind.to_owned(),
                seq: i as i32,
                name: a.name.clone(),
                value: a.value.clone(),
            })
            .collect()
    };
    let mut surveys = survey("pre", &doc.pre_chat_survey);
    surveys.extend(survey("post", &doc.post_chat_survey));
    let visit = doc.visit_detail.as_ref();
    let geo = visit.and_then(|v| v.geo_ip.as_ref());
    let pages = visit
        .map(|v| {
            v.pages
                .iter()
                .enumerate()
                .map(|(i, p)| PageRow {
                    chat_uid: uid.clone(),
                    site_key,
                    archive_seq,
                    seq: i as i32,
                    dated: p.dated,
                    name: p.name.clone(),
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
            tag: tag.clone(),
        })
        .collect();
    let text =
        |f: fn(&crate::VisitDetail) -> &String| visit.map(|v| f(v).clone()).unwrap_or_default();
    let geo_text = |f: fn(&crate::GeoIp) -> &String| geo.map(|g| f(g).clone()).unwrap_or_default();
    let country_name = geo_text(|g| &g.country_name);
    let visitor_country = if country_name.is_empty() {
        h.location
            .split(" - ")
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()
    } else {
        country_name.clone()
    };
    let chat = ChatRow {
        chat_uid: uid.clone(),
        site_key,
        archive_seq,
        started: h.started,
        finished: h.finished,
        waited_seconds: h.waited_seconds,
        duration_seconds: h.duration_seconds,
        taken_by_users: h.taken_by_users.clone(),
        taken_by_dept: h.taken_by_dept.clone(),
        taken_by_bot: h.taken_by_bot,
        requested_dept: h.requested_dept.clone(),
        skill_names: h.skill_names.clone(),
        channel: h.channel.clone(),
        state: h.state,
        lang: h.lang.clone(),
        translation: h.translation,
        rating: h.rating,
        sentiment_score: h.sentiment_score,
        wrap_up_value: h.wrap_up_value.clone(),
        tags: distinct_tags,
        summary: h.summary.clone(),
        missed: h.missed,
        missed_message: h.missed_message.clone(),
        missed_seen: h.missed_seen,
        missed_seen_by_user_name: h.missed_seen_by_user_name.clone(),
        missed_seen_on: h.missed_seen_on,
        missed_callback: h.missed_callback,
        missed_callback_on: h.missed_callback_on,
        name: h.name.clone(),
        email: h.email.clone(),
        phone: h.phone.clone(),
        ip: h.ip.clone(),
        dns: h.dns.clone(),
        location: h.location.clone(),
        tracking_id: h.tracking_id.clone(),
        visit_no: h.visit_no,
        transcript_url: h.transcript_url.clone(),
        site_name: text(|v| &v.site_name),
        total_visits: visit.map_or(0, |v| v.total_visits),
        browser: text(|v| &v.browser),
        os: text(|v| &v.os),
        referrer: text(|v| &v.referrer),
        session_started: visit.and_then(|v| v.session_started),
        chatting_language: text(|v| &v.chatting_language),
        chatting_translate: visit.is_some_and(|v| v.chatting_translate),
        page_views: visit.map_or(0, |v| v.page_views),
        first_page: text(|v| &v.first_page),
        first_visit: visit.and_then(|v| v.first_visit),
        contact_name: text(|v| &v.contact_name),
        contact_email: text(|v| &v.contact_email),
        contact_company: text(|v| &v.contact_company),
        contact_telephone: text(|v| &v.contact_telephone),
        contact_notes: text(|v| &v.contact_notes),
        contact_street: text(|v| &v.contact_street),
        contact_city: text(|v| &v.contact_city),
        contact_post_code: text(|v| &v.contact_post_code),
        contact_country: text(|v| &v.contact_country),
        contact_web_address: text(|v| &v.contact_web_address),
        contact_organization: text(|v| &v.contact_organization),
        crm_id: text(|v| &v.crm_id),
        country_name,
        country_iso: geo_text(|g| &g.country_iso),
        city: geo_text(|g| &g.city),
        post_code: geo_text(|g| &g.post_code),
        metro_code: geo_text(|g| &g.metro_code),
        latitude: geo.and_then(|g| g.latitude),
        longitude: geo.and_then(|g| g.longitude),
        radius: geo.and_then(|g| g.radius),
        isp: geo_text(|g| &g.isp),
        organization: geo_text(|g| &g.organization),
        line_count: lines.len() as i32,
        visitor_lines: visitor,
        operator_lines: operator,
        system_lines: system,
        first_response_seconds,
        operator_count: operators.len() as i32,
        operator_names: operators,
        visitor_country,
        answered_by_bot: h.taken_by_bot && !h.missed,
        transferred: h.operators().len() > 1,
        translated: h.translation || visit.is_some_and(|v| v.chatting_translate),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::{ColumnData, TABLES};

    fn sample(name: &str) -> ChatDocument {
        let path = format!(
            "{}/../../../shared/reference/samples/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let value: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        ChatDocument::from_value(&value).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn answered_chat_has_derived_figures() {
        let flat = flatten(&sample("answered-with-surveys.json"), 42);
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
            (c.visitor_country.as_str(), c.country_iso.as_str()),
            ("United Kingdom", "GB")
        );
        assert!(!c.transferred && !c.answered_by_bot && !c.missed_followed_up);
        assert_eq!(c.tags, vec!["Sales", "Quote sent"]);
        assert_eq!(flat.surveys.len(), 4);
        assert_eq!(flat.surveys[2].survey, "post");
        assert_eq!(flat.pages.len(), 4);
        assert_eq!(flat.lines[1].operator_name, "Amelia Brook");
        assert_eq!(flat.lines[0].role, "system");
        assert!(flat
            .lines
            .iter()
            .all(|l| l.archive_seq == 42 && l.site_key == 3));
    }

    #[test]
    fn bot_transfer_and_missed_follow_up_are_derived() {
        let bot = flatten(&sample("bot-then-transfer.json"), 1).chat;
        assert!(bot.answered_by_bot && bot.transferred);
        assert_eq!(bot.operator_names, vec!["HelpBot", "Marcus Reyes"]);
        let before = flatten(&sample("missed-before-follow-up.json"), 2).chat;
        let after = flatten(&sample("missed-followed-up.json"), 3).chat;
        assert!(before.missed && !before.missed_followed_up && before.missed_seen_on.is_none());
        assert!(after.missed_followed_up && after.missed_seen_on.is_some());
        assert_eq!(before.first_response_seconds, None);
        assert!(
            flatten(&sample("translated-german.json"), 4)
                .chat
                .translated
        );
    }

    #[test]
    fn numbering_later_equals_flattening_with_the_number() {
        let doc = sample("answered-with-surveys.json");
        let mut late = flatten(&doc, 0);
        late.set_archive_seq(77);
        let early = flatten(&doc, 77);
        assert!(!early.lines.is_empty() && !early.surveys.is_empty() && !early.pages.is_empty());
        assert_eq!(late, early);
    }

    #[test]
    fn columns_match_their_table_definitions() {
        let flat = flatten(&sample("answered-with-surveys.json"), 1);
        fn refs<T>(rows: &[T]) -> Vec<&T> {
            rows.iter().collect()
        }
        let checks: [(usize, Vec<ColumnData>); 5] = [
            (1, ChatRow::columns(&[&flat.chat])),
            (flat.lines.len(), LineRow::columns(&refs(&flat.lines))),
            (flat.surveys.len(), SurveyRow::columns(&refs(&flat.surveys))),
            (flat.pages.len(), PageRow::columns(&refs(&flat.pages))),
            (flat.tags.len(), TagRow::columns(&refs(&flat.tags))),
        ];
        for (table, (rows, columns)) in TABLES.iter().zip(checks) {
            assert_eq!(columns.len(), table.columns.len(), "{}", table.name);
            for (def, data) in table.columns.iter().zip(&columns) {
                let len = match data {
                    ColumnData::Str(v) => v.len(),
                    ColumnData::I32(v) => v.len(),
                    ColumnData::I64(v) => v.len(),
                    ColumnData::Bool(v) => v.len(),
                    ColumnData::F64(v) => v.len(),
                    ColumnData::Timestamp(v) => v.len(),
                    ColumnData::StrList(v) => v.len(),
                };
                assert_eq!(len, rows, "{}.{}", table.name, def.name);
            }
        }
    }
}
