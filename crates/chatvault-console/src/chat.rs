//! One chat: the transcript as a conversation, the header, surveys and visit, the
//! versions the archive holds, the holds that cover it, and what the key may do with it.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use chatvault_catalog::LegalHold;
use chatvault_compliance::ChatBundle;
use chatvault_server::{AppState, ErasureRequest, HoldRequest};
use serde_json::Value;

use crate::error::ConsoleError;
use crate::feed;
use crate::session::Signed;
use crate::view::{attachment, render, site_time, utc, Nav};

/// Header fields shown, in this order, with their labels.
const HEADER_FIELDS: [(&str, &str); 16] = [
    ("SiteKey", "Site"),
    ("Started", "Started"),
    ("Finished", "Finished"),
    ("Name", "Visitor"),
    ("Email", "Email"),
    ("Phone", "Phone"),
    ("IP", "IP address"),
    ("TakenByUsers", "Operators"),
    ("TakenByDept", "Department"),
    ("Channel", "Channel"),
    ("Missed", "Missed"),
    ("Rating", "Rating"),
    ("WaitedSeconds", "Waited (s)"),
    ("DurationSeconds", "Duration (s)"),
    ("Summary", "Summary"),
    ("Tags", "Tags"),
];

const VISIT_FIELDS: [(&str, &str); 10] = [
    ("CountryName", "Country"),
    ("City", "City"),
    ("ISP", "ISP"),
    ("Organization", "Organisation"),
    ("Browser", "Browser"),
    ("OS", "Operating system"),
    ("Referrer", "Referrer"),
    ("FirstPage", "First page"),
    ("TotalVisits", "Visits"),
    ("PageViews", "Pages viewed"),
];

pub struct Line {
    pub at: String,
    /// `visitor`, `operator`, `bot` or `system`: the bubble's class.
    pub role: String,
    pub who: String,
    pub message: String,
}

pub struct Answer {
    pub survey: String,
    pub name: String,
    pub value: String,
}

pub struct PageView {
    pub at: String,
    pub name: String,
}

pub struct Version {
    pub number: usize,
    pub received: String,
    pub source: &'static str,
    pub operation: &'static str,
    pub hash: String,
    pub changes: Vec<String>,
}

#[derive(Template)]
#[template(path = "chat.html")]
struct ChatPage {
    nav: Nav,
    chat_uid: String,
    encoded_uid: String,
    header: Vec<(&'static str, String)>,
    visit: Vec<(&'static str, String)>,
    lines: Vec<Line>,
    answers: Vec<Answer>,
    pages: Vec<PageView>,
    holds: Vec<LegalHold>,
}

#[derive(Template)]
#[template(path = "versions.html")]
struct VersionsPage {
    nav: Nav,
    chat_uid: String,
    encoded_uid: String,
    versions: Vec<Version>,
    archive_available: bool,
    holds: Vec<LegalHold>,
}

fn encoded(uid: &str) -> String {
    form_urlencoded::byte_serialize(uid.as_bytes()).collect()
}

/// The chat as the key may see it from the feed: 404 for a chat of another site.
async fn current(state: &AppState, signed: &Signed, uid: &str) -> Result<Value, ConsoleError> {
    let path = format!("Chats({})", feed::literal(uid));
    let query = feed::encode([(
        "$expand",
        "Lines($orderby=Seq),SurveyAnswers($orderby=Survey,Seq),Pages($orderby=Seq)".to_owned(),
    )]);
    feed::get(state, signed, path, query).await
}

/// The chat's archived versions (or only its newest) and the holds on them (None on a
/// node without the archive).
async fn archived(
    state: &AppState,
    uid: &str,
    newest_only: bool,
) -> Result<Option<ChatBundle>, ConsoleError> {
    let Some(stores) = &state.compliance else {
        return Ok(None);
    };
    chatvault_compliance::chat_history(&stores.archive_dir, &state.catalog, uid, newest_only)
        .await
        .map_err(|e| ConsoleError::Unavailable(e.to_string()))
}

/// The newest archived version of a chat the key may see (404 otherwise, or without one).
async fn newest_visible(
    state: &AppState,
    signed: &Signed,
    uid: &str,
) -> Result<ChatBundle, ConsoleError> {
    current(state, signed, uid).await?;
    archived(state, uid, true)
        .await?
        .ok_or(ConsoleError::NotFound)
}

fn versions_of(bundle: &ChatBundle) -> Vec<Version> {
    let mut previous: Option<&Value> = None;
    bundle
        .versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let changes = match (previous, &v.document) {
                (Some(old), Some(new)) => crate::diff::changes(old, new),
                (None, Some(_)) => vec!["first version".to_owned()],
                (_, None) => vec!["content removed".to_owned()],
            };
            if v.document.is_some() {
                previous = v.document.as_ref();
            }
            Version {
                number: i + 1,
                received: utc(v.received_at_us),
                source: v.source,
                operation: v.operation,
                hash: v.content_hash.clone(),
                changes,
            }
        })
        .collect()
}

fn fields(row: &Value, wanted: &[(&'static str, &'static str)]) -> Vec<(&'static str, String)> {
    wanted
        .iter()
        .filter_map(|(field, label)| {
            let text = match row.get(*field) {
                Some(Value::String(s))
                    if field.contains("Started") || field.contains("Finished") =>
                {
                    site_time(s)
                }
                _ => feed::text(row, field),
            };
            (!text.is_empty()).then_some((*label, text))
        })
        .collect()
}

fn lines(chat: &Value) -> Vec<Line> {
    let visitor = feed::text(chat, "Name");
    chat.get("Lines")
        .and_then(Value::as_array)
        .map(|lines| {
            lines
                .iter()
                .map(|l| {
                    let role = feed::text(l, "Role");
                    let who = match role.as_str() {
                        "visitor" if !visitor.is_empty() => visitor.clone(),
                        "visitor" => "Visitor".into(),
                        "system" => "System".into(),
                        _ => {
                            let name = feed::text(l, "OperatorName");
                            if name.is_empty() {
                                role.clone()
                            } else {
                                name
                            }
                        }
                    };
                    Line {
                        at: site_time(&feed::text(l, "Dated")),
                        role,
                        who,
                        message: feed::text(l, "Message"),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

fn expanded<T>(chat: &Value, nav: &str, f: impl Fn(&Value) -> T) -> Vec<T> {
    chat.get(nav)
        .and_then(Value::as_array)
        .map(|rows| rows.iter().map(f).collect())
        .unwrap_or_default()
}

/// `GET /console/chats/{ChatUID}`; recorded in the audit log as `chat.view`.
pub async fn page(
    State(state): State<AppState>,
    signed: Signed,
    Path(uid): Path<String>,
) -> Result<Response, ConsoleError> {
    let (state, signed, uid) = (&state, &signed, uid.as_str());
    let chat = current(state, signed, uid).await?;
    chatvault_server::audit(
        state,
        &signed.principal,
        signed.peer,
        "chat.view",
        uid,
        Value::Null,
    )
    .await?;
    let answers = expanded(&chat, "SurveyAnswers", |a| Answer {
        survey: feed::text(a, "Survey"),
        name: feed::text(a, "Name"),
        value: feed::text(a, "Value"),
    });
    let holds = state
        .catalog
        .list_holds(false)
        .await
        .map_err(|e| ConsoleError::Unavailable(e.to_string()))?;
    let (email, contact) = (
        feed::text(&chat, "Email"),
        feed::text(&chat, "ContactEmail"),
    );
    let mut emails: Vec<&str> = vec![&email, &contact];
    emails.extend(
        answers
            .iter()
            .filter(|a| a.value.contains('@'))
            .map(|a| a.value.as_str()),
    );
    let started = feed::text(&chat, "Started");
    let holds = chatvault_compliance::holds_covering(
        uid,
        feed::int(&chat, "SiteKey"),
        Some(started.as_str()).filter(|s| !s.is_empty()),
        &emails,
        &holds,
    );
    let page = ChatPage {
        nav: signed.nav("search"),
        chat_uid: uid.to_owned(),
        encoded_uid: encoded(uid),
        header: fields(&chat, &HEADER_FIELDS),
        visit: fields(&chat, &VISIT_FIELDS),
        lines: lines(&chat),
        answers,
        pages: expanded(&chat, "Pages", |p| PageView {
            at: site_time(&feed::text(p, "Dated")),
            name: feed::text(p, "Name"),
        }),
        holds,
    };
    Ok(render(&page))
}

/// `GET /console/chats/{ChatUID}/versions`: every version the archive holds, read from
/// the archive itself (a page of its own, so the chat opens without reading the archive).
pub async fn versions(
    State(state): State<AppState>,
    signed: Signed,
    Path(uid): Path<String>,
) -> Result<Response, ConsoleError> {
    current(&state, &signed, &uid).await?;
    let bundle = archived(&state, &uid, false).await?;
    let page = VersionsPage {
        nav: signed.nav("search"),
        encoded_uid: encoded(&uid),
        chat_uid: uid,
        versions: bundle.as_ref().map(versions_of).unwrap_or_default(),
        archive_available: state.compliance.is_some(),
        holds: bundle.map(|b| b.holds).unwrap_or_default(),
    };
    Ok(render(&page))
}

/// `GET …/transcript.html`: the printable transcript of the newest version, as the
/// legal export writes it.
pub async fn transcript(
    State(state): State<AppState>,
    signed: Signed,
    Path(uid): Path<String>,
) -> Result<Response, ConsoleError> {
    let bundle = newest_visible(&state, &signed, &uid).await?;
    chatvault_server::audit(
        &state,
        &signed.principal,
        signed.peer,
        "chat.transcript",
        &uid,
        Value::Null,
    )
    .await?;
    let html = chatvault_compliance::transcript_html(&chatvault_compliance::LegalBundle {
        format: "chatvault-legal-export/1",
        created_us: chatvault_catalog::now_us(),
        selector: "chat",
        chats: vec![bundle],
    });
    let mut response = axum::response::Html(html).into_response();
    let headers = response.headers_mut();
    // Its stylesheet is inline, so the file reads and prints the same when saved.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    Ok(attachment(response, &format!("chat-{uid}.html")))
}

/// `GET …/document.json`: the newest archived document, as the chat server sent it.
pub async fn document(
    State(state): State<AppState>,
    signed: Signed,
    Path(uid): Path<String>,
) -> Result<Response, ConsoleError> {
    let bundle = newest_visible(&state, &signed, &uid).await?;
    let newest = bundle
        .versions
        .iter()
        .rev()
        .find_map(|v| v.document.clone())
        .ok_or(ConsoleError::NotFound)?;
    chatvault_server::audit(
        &state,
        &signed.principal,
        signed.peer,
        "chat.document",
        &uid,
        Value::Null,
    )
    .await?;
    let body =
        serde_json::to_vec_pretty(&newest).map_err(|e| ConsoleError::Unavailable(e.to_string()))?;
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(attachment(response, &format!("chat-{uid}.json")))
}

/// `POST …/hold` (admin) with `reason`.
pub async fn hold(
    State(state): State<AppState>,
    signed: Signed,
    Path(uid): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ConsoleError> {
    let form = signed.admin_form(&body)?;
    current(&state, &signed, &uid).await?;
    let request = HoldRequest {
        chat_uid: Some(uid.clone()),
        site_key: None,
        from_date: None,
        to_date: None,
        email: None,
        reason: form.get("reason").cloned().unwrap_or_default(),
    };
    chatvault_server::place_hold_as(&state, &signed.principal, signed.peer, request).await?;
    Ok(Redirect::to(&format!("/console/chats/{}", encoded(&uid))).into_response())
}

/// `POST …/erase` (admin) with `confirm` repeating the ChatUID; shows the receipt.
pub async fn erase(
    State(state): State<AppState>,
    signed: Signed,
    Path(uid): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ConsoleError> {
    let form = signed.admin_form(&body)?;
    current(&state, &signed, &uid).await?;
    if form.get("confirm").map(|c| c.trim()) != Some(uid.as_str()) {
        return Err(ConsoleError::Invalid(
            "to erase, type the chat's id exactly in the confirmation field".into(),
        ));
    }
    let request = ErasureRequest {
        email: None,
        chat_uid: Some(uid.clone()),
        ip: None,
        dry_run: false,
    };
    let removed =
        chatvault_server::erase_as(&state, &signed.principal, signed.peer, &request).await?;
    Ok(crate::compliance::receipt_page(&signed, removed))
}
