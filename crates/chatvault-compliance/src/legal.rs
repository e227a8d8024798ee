//! Export for legal review: one chat, or every chat of a person, as a self-contained JSON
//! bundle (every archived version with its archive position and content hash, and the
//! holds that cover it) and as a readable HTML transcript of each chat's newest version.

use chatvault_archive::{read_records, read_records_through, read_segments, Operation, Record};
use chatvault_catalog::{Catalog, LegalHold};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use crate::erase::{archive_facts, ChatFacts, Person};
use crate::{ComplianceError, Result};

const FORMAT: &str = "chatvault-legal-export/1";

#[derive(Debug, Clone, serde::Serialize)]
pub struct LegalBundle {
    pub format: &'static str,
    pub created_us: i64,
    /// `chat`, `email` or `ip`: how the chats were found.
    pub selector: &'static str,
    pub chats: Vec<ChatBundle>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ChatBundle {
    pub chat_uid: String,
    pub site_key: i64,
    /// Active legal holds covering the chat.
    pub holds: Vec<LegalHold>,
    /// Every archived record of the chat, oldest first.
    pub versions: Vec<ArchivedVersion>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ArchivedVersion {
    pub seq: u64,
    pub segment: u64,
    pub received_at_us: i64,
    pub source: &'static str,
    /// `upsert`, or `delete` (a tombstone, or a record emptied by erasure or retention).
    pub operation: &'static str,
    pub content_hash: String,
    /// The document as archived; absent for deletes and erased records.
    pub document: Option<Value>,
}

/// One chat's archived versions and the holds covering them, read from as little of the
/// archive as the catalog allows: it knows the segments of the chat's first and newest
/// records and how many versions it has, so a chat of one version (most of them), or a
/// request for the `newest_only`, reads one segment, and any other the segments from its
/// first record's to its newest's. None when the catalog does not know the chat.
pub async fn chat_history(
    archive_dir: &Path,
    catalog: &Catalog,
    chat_uid: &str,
    newest_only: bool,
) -> Result<Option<ChatBundle>> {
    let Some(state) = catalog.chat(chat_uid).await? else {
        return Ok(None);
    };
    let dir = archive_dir.to_owned();
    let uid = chat_uid.to_owned();
    let last_segment = state.archive_segment;
    let only_the_newest = newest_only || state.version == 1;
    let first_segment = if only_the_newest {
        None
    } else {
        catalog.first_segment(chat_uid).await?
    };
    let (versions, facts) = tokio::task::spawn_blocking(move || {
        let records: Box<dyn Iterator<Item = chatvault_archive::Result<Record>>> =
            match (only_the_newest, first_segment) {
                (true, _) => Box::new(read_records_through(&dir, state.archive_seq, last_segment)?),
                (false, Some(first)) => Box::new(read_segments(&dir, first..=last_segment)?),
                (false, None) => Box::new(read_records_through(&dir, 0, last_segment)?),
            };
        let mut versions = Vec::new();
        let mut facts = ChatFacts::default();
        for record in records {
            let record = record?;
            if record.entry.chat_uid != uid {
                continue;
            }
            let document: Option<Value> = serde_json::from_slice(&record.entry.document).ok();
            if let (Operation::Upsert, Some(doc)) = (record.entry.operation, &document) {
                facts.add(state.site_key, doc);
            }
            versions.push(archived_version(&record, document));
        }
        Ok::<_, ComplianceError>((versions, facts))
    })
    .await
    .map_err(|e| ComplianceError::Task(e.to_string()))??;
    let holds = catalog
        .list_holds(false)
        .await?
        .into_iter()
        .filter(|h| facts.held_by(chat_uid, h))
        .collect();
    Ok(Some(ChatBundle {
        chat_uid: chat_uid.to_owned(),
        site_key: state.site_key,
        holds,
        versions,
    }))
}

fn archived_version(
    record: &chatvault_archive::Record,
    document: Option<Value>,
) -> ArchivedVersion {
    ArchivedVersion {
        seq: record.seq,
        segment: record.segment,
        received_at_us: record.entry.received_at_us,
        source: record.entry.source.as_str(),
        operation: match record.entry.operation {
            Operation::Upsert => "upsert",
            Operation::Delete => "delete",
        },
        content_hash: record.entry.content_hash.to_hex(),
        document,
    }
}

/// Gathers every chat of `person` the archive holds content for.
pub async fn legal_export(
    archive_dir: &Path,
    catalog: &Catalog,
    person: &Person,
) -> Result<LegalBundle> {
    let dir = archive_dir.to_owned();
    let wanted = person.clone();
    let (facts, mut chats) = tokio::task::spawn_blocking(move || {
        let facts: BTreeMap<String, ChatFacts> = archive_facts(&dir)?
            .into_iter()
            .filter(|(uid, f)| f.matches(uid, &wanted))
            .collect();
        let mut chats: BTreeMap<String, ChatBundle> = BTreeMap::new();
        for record in read_records(&dir, 0)? {
            let record = record?;
            let Some(f) = facts.get(&record.entry.chat_uid) else {
                continue;
            };
            let chat = chats
                .entry(record.entry.chat_uid.clone())
                .or_insert_with(|| ChatBundle {
                    chat_uid: record.entry.chat_uid.clone(),
                    site_key: f.site_key,
                    holds: Vec::new(),
                    versions: Vec::new(),
                });
            let document = serde_json::from_slice(&record.entry.document).ok();
            chat.versions.push(archived_version(&record, document));
        }
        Ok::<_, ComplianceError>((facts, chats))
    })
    .await
    .map_err(|e| ComplianceError::Task(e.to_string()))??;
    let holds = catalog.list_holds(false).await?;
    for (uid, chat) in &mut chats {
        if let Some(f) = facts.get(uid) {
            chat.holds = holds
                .iter()
                .filter(|h| f.held_by(uid, h))
                .cloned()
                .collect();
        }
    }
    Ok(LegalBundle {
        format: FORMAT,
        created_us: crate::now_us(),
        selector: person.kind(),
        chats: chats.into_values().collect(),
    })
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Who wrote a line: the visitor (index 0), the n-th operator in `TakenByUsers`, or the
/// chat server itself (99 and anything unknown).
fn speaker(header: &Value, index: i64) -> String {
    let visitor = header["Name"].as_str().filter(|n| !n.is_empty());
    let operators: Vec<&str> = header["TakenByUsers"]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .collect();
    match index {
        0 => visitor.unwrap_or("Visitor").to_owned(),
        99 => "System".to_owned(),
        n if n >= 1 => usize::try_from(n - 1)
            .ok()
            .and_then(|i| operators.get(i))
            .filter(|name| !name.is_empty())
            .map_or_else(|| format!("Operator {n}"), |name| (*name).to_owned()),
        _ => "System".to_owned(),
    }
}

/// A readable, self-contained HTML transcript of each chat's newest archived version.
pub fn transcript_html(bundle: &LegalBundle) -> String {
    let mut html = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Chat transcripts</title>\n\
         <style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}\
         .msg{white-space:pre-wrap}\
         @media print{body{margin:0;max-width:none;font-size:11pt}h2:not(:first-of-type){break-before:page}tr{break-inside:avoid}}\
         </style></head><body>\n",
    );
    let _ = writeln!(
        html,
        "<h1>Chat transcripts</h1><p>{} chats, exported for legal review ({}).</p>",
        bundle.chats.len(),
        FORMAT
    );
    for chat in &bundle.chats {
        let _ = writeln!(html, "<h2>Chat {}</h2>", escape(&chat.chat_uid));
        for hold in &chat.holds {
            let _ = writeln!(
                html,
                "<p><strong>Under legal hold {}</strong>: {}</p>",
                escape(&hold.id),
                escape(&hold.reason)
            );
        }
        let newest = chat.versions.iter().rev().find_map(|v| v.document.as_ref());
        let Some(doc) = newest else {
            let _ = writeln!(html, "<p>No content remains (deleted or erased).</p>");
            continue;
        };
        let header = &doc["ChatHeader"];
        html.push_str("<table>\n");
        for field in [
            "SiteKey",
            "Started",
            "Finished",
            "Name",
            "Email",
            "Phone",
            "IP",
            "TakenByUsers",
            "TakenByDept",
            "Rating",
            "Summary",
        ] {
            let value = match &header[field] {
                Value::String(s) => s.clone(),
                Value::Null => continue,
                other => other.to_string(),
            };
            let _ = writeln!(html, "<tr><th>{field}</th><td>{}</td></tr>", escape(&value));
        }
        let _ = writeln!(
            html,
            "<tr><th>Versions archived</th><td>{}</td></tr>\n</table>\n<table>\n<tr><th>Time</th><th>From</th><th>Message</th></tr>",
            chat.versions.len()
        );
        for line in doc["Lines"].as_array().into_iter().flatten() {
            let index = line["OperatorIndex"].as_i64().unwrap_or(99);
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{}</td><td class=\"msg\">{}</td></tr>",
                escape(line["Dated"].as_str().unwrap_or_default()),
                escape(&speaker(header, index)),
                escape(line["Message"].as_str().unwrap_or_default())
            );
        }
        html.push_str("</table>\n");
    }
    html.push_str("</body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_escaped_and_attributed() {
        let doc = serde_json::json!({
            "ChatHeader": {"Name": "Dan", "TakenByUsers": "Amelia Brook, Bo", "Started": "2024-08-14T09:12:03"},
            "Lines": [
                {"Dated": "2024-08-14T09:12:04", "OperatorIndex": 0, "Message": "<b>hi</b> & bye"},
                {"Dated": "2024-08-14T09:12:05", "OperatorIndex": 2, "Message": "hello"},
                {"Dated": "2024-08-14T09:12:06", "OperatorIndex": 99, "Message": "transferred"}
            ]
        });
        let bundle = LegalBundle {
            format: FORMAT,
            created_us: 0,
            selector: "chat",
            chats: vec![ChatBundle {
                chat_uid: "abc".into(),
                site_key: 3,
                holds: vec![],
                versions: vec![ArchivedVersion {
                    seq: 0,
                    segment: 0,
                    received_at_us: 0,
                    source: "webhook",
                    operation: "upsert",
                    content_hash: String::new(),
                    document: Some(doc),
                }],
            }],
        };
        let html = transcript_html(&bundle);
        assert!(html.contains("&lt;b&gt;hi&lt;/b&gt; &amp; bye"), "{html}");
        assert!(!html.contains("<b>hi"));
        assert!(html.contains("<td>Dan</td><td class=\"msg\">"), "{html}");
        assert!(
            html.contains("<td>Bo</td><td class=\"msg\">hello"),
            "{html}"
        );
        assert!(
            html.contains("<td>System</td><td class=\"msg\">transferred"),
            "{html}"
        );
    }
}
