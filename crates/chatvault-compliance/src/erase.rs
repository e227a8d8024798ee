//! Erasure (the right to be forgotten) across the archive, the catalog and the store, and
//! legal holds, which exempt chats from it.
//!
//! The order makes a crash at any point recoverable: a journal naming the chats is made
//! durable first; each affected closed segment is then rewritten (receipted in the audit
//! log before its atomic rename); the catalog marks the chats deleted; the store is
//! rebuilt from the rewritten archive; the final receipt is appended and the journal
//! removed. Opening the data directory finishes a journal left by a crash
//! ([`resume_erasure`]), and every step is idempotent.

use chatvault_archive::{
    erase_entry, read_records, rewrite_segment, segments_holding, segments_where, Entry, Operation,
};
use chatvault_catalog::{AuditEvent, Catalog, HoldScope, LegalHold};
use chatvault_model::{content_hash, Anonymisation};
use chatvault_store::Store;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::{ComplianceError, Result};

/// Whose chats to erase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Person {
    Chat(String),
    Email(String),
    Ip(String),
}

impl Person {
    /// The kind of selector, for receipts: never the address itself.
    pub fn kind(&self) -> &'static str {
        match self {
            Person::Chat(_) => "chat",
            Person::Email(_) => "email",
            Person::Ip(_) => "ip",
        }
    }
}

/// What the documents say about a chat, across all its versions: enough to match a
/// person and the holds.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChatFacts {
    pub(crate) site_key: i64,
    started_dates: BTreeSet<String>,
    emails: BTreeSet<String>,
    ips: BTreeSet<String>,
}

impl ChatFacts {
    pub(crate) fn add(&mut self, site_key: i64, doc: &Value) {
        self.site_key = site_key;
        let text = |pointer: &str| {
            doc.pointer(pointer)
                .and_then(Value::as_str)
                .map(|s| s.trim().to_lowercase())
                .filter(|s| !s.is_empty())
        };
        if let Some(started) = text("/ChatHeader/Started") {
            self.started_dates
                .insert(started.chars().take(10).collect());
        }
        self.emails.extend(
            ["/ChatHeader/Email", "/VisitDetail/ContactEmail"]
                .into_iter()
                .filter_map(text),
        );
        // An email given in a survey answer (e.g. the transcript address) is the same person.
        for survey in ["/PreChatSurvey", "/PostChatSurvey"] {
            let answers = doc.pointer(survey).and_then(Value::as_array);
            for answer in answers.into_iter().flatten() {
                if let Some(value) = answer.get("Value").and_then(Value::as_str) {
                    if value.contains('@') {
                        self.emails.insert(value.trim().to_lowercase());
                    }
                }
            }
        }
        self.ips.extend(
            ["/ChatHeader/IP", "/VisitDetail/IP", "/VisitDetail/GeoIP/IP"]
                .into_iter()
                .filter_map(text),
        );
    }

    pub(crate) fn matches(&self, chat_uid: &str, person: &Person) -> bool {
        match person {
            Person::Chat(uid) => uid.eq_ignore_ascii_case(chat_uid),
            Person::Email(email) => self.emails.contains(&email.trim().to_lowercase()),
            Person::Ip(ip) => self.ips.contains(&ip.trim().to_lowercase()),
        }
    }

    pub(crate) fn held_by(&self, chat_uid: &str, hold: &LegalHold) -> bool {
        match &hold.scope {
            HoldScope::Chat { chat_uid: held } => held.eq_ignore_ascii_case(chat_uid),
            HoldScope::Email { email } => self.emails.contains(email),
            HoldScope::Site {
                site_key,
                from_date,
                to_date,
            } => {
                *site_key == self.site_key
                    && self.started_dates.iter().any(|d| {
                        from_date.as_deref().is_none_or(|from| d.as_str() >= from)
                            && to_date.as_deref().is_none_or(|to| d.as_str() <= to)
                    })
            }
        }
    }
}

/// The active holds among `holds` that cover a chat, judged from its current fields
/// (when the archive is too large to read for one page): its site and start, and the
/// email addresses it carries.
pub fn holds_covering(
    chat_uid: &str,
    site_key: i64,
    started: Option<&str>,
    emails: &[&str],
    holds: &[LegalHold],
) -> Vec<LegalHold> {
    let facts = ChatFacts {
        site_key,
        started_dates: started
            .map(|s| s.chars().take(10).collect())
            .into_iter()
            .collect(),
        emails: emails
            .iter()
            .map(|e| e.trim().to_lowercase())
            .filter(|e| !e.is_empty())
            .collect(),
        ips: BTreeSet::new(),
    };
    holds
        .iter()
        .filter(|h| h.released_us.is_none() && facts.held_by(chat_uid, h))
        .cloned()
        .collect()
}

/// Every chat the archive holds content for, with its facts. Erased records have no
/// document and add nothing, so a chat that was erased is not found again.
pub(crate) fn archive_facts(archive_dir: &Path) -> Result<BTreeMap<String, ChatFacts>> {
    let mut facts: BTreeMap<String, ChatFacts> = BTreeMap::new();
    for record in read_records(archive_dir, 0)? {
        let record = record?;
        if record.entry.operation != Operation::Upsert {
            continue;
        }
        // Documents were validated before they were archived; one that no longer parses
        // is damage `verify` reports, and holds nothing this search could match.
        let Ok(doc) = serde_json::from_slice::<Value>(&record.entry.document) else {
            continue;
        };
        facts
            .entry(record.entry.chat_uid)
            .or_default()
            .add(record.entry.site_key, &doc);
    }
    Ok(facts)
}

/// What an erasure will do, shown before (`--dry-run`) and done after.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ErasurePlan {
    /// Chats to erase.
    pub chats: BTreeSet<String>,
    /// Chats of the person kept because a hold covers them, with the hold ids.
    pub held: BTreeMap<String, Vec<String>>,
    /// Chats to anonymise instead (retention only), with the fields to mask. Only chats
    /// with something left to mask are here, so a second run plans nothing.
    pub anonymise: BTreeMap<String, Anonymisation>,
    /// Each selected chat's SiteKey, for choosing its retention action.
    #[serde(skip)]
    site_keys: BTreeMap<String, i64>,
}

/// What a retention policy does with a chat past its period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetentionAction {
    Delete,
    Anonymise(Anonymisation),
}

/// Finds every chat of `person` in the archive (every version counts) and sets aside
/// those under an active legal hold.
pub async fn plan_erasure(
    archive_dir: &Path,
    catalog: &Catalog,
    person: &Person,
) -> Result<ErasurePlan> {
    let person = person.clone();
    plan(archive_dir, catalog, move |uid, f| f.matches(uid, &person)).await
}

/// Finds every chat whose newest Started date is before its site's cutoff (a
/// `YYYY-MM-DD` date; `None` keeps the site's chats forever), holds set aside, and
/// splits them by what the site's `policy` does: delete, or anonymise.
pub async fn plan_retention(
    archive_dir: &Path,
    catalog: &Catalog,
    policy: impl Fn(i64) -> Option<(String, RetentionAction)> + Send + Sync + 'static,
) -> Result<ErasurePlan> {
    let policy = std::sync::Arc::new(policy);
    let select = policy.clone();
    let mut plan = plan(archive_dir, catalog, move |_, f| {
        match (select(f.site_key), f.started_dates.last()) {
            (Some((cutoff, _)), Some(newest)) => *newest < cutoff,
            _ => false,
        }
    })
    .await?;
    let mut anonymise = BTreeMap::new();
    let sites = plan.site_keys.clone();
    plan.chats.retain(|uid| {
        let action = sites.get(uid).and_then(|site| policy(*site)).map(|p| p.1);
        match action {
            Some(RetentionAction::Anonymise(a)) => {
                anonymise.insert(uid.clone(), a);
                false
            }
            _ => true,
        }
    });
    let dir = archive_dir.to_owned();
    plan.anonymise = tokio::task::spawn_blocking(move || still_personal(&dir, anonymise))
        .await
        .map_err(|e| ComplianceError::Task(e.to_string()))??;
    Ok(plan)
}

/// Keeps the chats of `wanted` that still have a version anonymisation would change.
fn still_personal(
    archive_dir: &Path,
    mut wanted: BTreeMap<String, Anonymisation>,
) -> Result<BTreeMap<String, Anonymisation>> {
    let mut out = BTreeMap::new();
    for record in read_records(archive_dir, 0)? {
        let mut entry = record?.entry;
        let Some(a) = wanted.get(&entry.chat_uid) else {
            continue;
        };
        if anonymise_entry(&mut entry, a) {
            if let Some((uid, a)) = wanted.remove_entry(&entry.chat_uid) {
                out.insert(uid, a);
            }
        }
    }
    Ok(out)
}

/// Masks one archived version in place, with the masked document's content hash; false
/// when it is a delete, no longer JSON (damage `verify` reports) or already masked.
fn anonymise_entry(entry: &mut Entry, anonymisation: &Anonymisation) -> bool {
    if entry.operation != Operation::Upsert {
        return false;
    }
    let Ok(mut doc) = serde_json::from_slice::<Value>(&entry.document) else {
        return false;
    };
    if !anonymisation.apply(&mut doc) {
        return false;
    }
    let Ok(bytes) = serde_json::to_vec(&doc) else {
        return false;
    };
    entry.content_hash = content_hash(&doc);
    entry.document = bytes;
    true
}

async fn plan(
    archive_dir: &Path,
    catalog: &Catalog,
    select: impl Fn(&str, &ChatFacts) -> bool + Send + 'static,
) -> Result<ErasurePlan> {
    let dir = archive_dir.to_owned();
    let selected = tokio::task::spawn_blocking(move || {
        archive_facts(&dir).map(|facts| {
            facts
                .into_iter()
                .filter(|(uid, f)| select(uid, f))
                .collect::<Vec<_>>()
        })
    })
    .await
    .map_err(|e| ComplianceError::Task(e.to_string()))??;
    let holds = catalog.list_holds(false).await?;
    let mut plan = ErasurePlan::default();
    for (uid, f) in selected {
        plan.site_keys.insert(uid.clone(), f.site_key);
        let held: Vec<String> = holds
            .iter()
            .filter(|h| f.held_by(&uid, h))
            .map(|h| h.id.clone())
            .collect();
        if held.is_empty() {
            plan.chats.insert(uid);
        } else {
            plan.held.insert(uid, held);
        }
    }
    Ok(plan)
}

/// The durable intent: enough to finish the erasure after a crash, and nothing personal
/// (ChatUIDs are random identifiers; the email or address searched for is not kept).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Journal {
    id: String,
    at_us: i64,
    actor: String,
    address: String,
    selector: String,
    /// `erasure` or `retention`.
    reason: String,
    chats: BTreeSet<String>,
    held: usize,
    /// Chats to anonymise rather than erase, with their fields (absent in journals
    /// written before anonymisation existed).
    #[serde(default)]
    anonymise: BTreeMap<String, Anonymisation>,
}

/// The receipt an erasure leaves in the audit log (and returns).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ErasureReceipt {
    pub id: String,
    pub chats: u64,
    pub held: u64,
    /// Chats anonymised (kept, personal fields masked).
    pub anonymised: u64,
    pub segments: u64,
    pub records: u64,
    pub audit_seq: u64,
}

/// Where the three stores and the journal live; clones share them.
#[derive(Clone)]
pub struct Stores {
    pub archive_dir: PathBuf,
    pub catalog: Catalog,
    pub store: Store,
    /// The erasure journal's path (in the data directory).
    pub journal: PathBuf,
}

/// A removal's plan and, unless it was a dry run, its receipt.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Removed {
    pub plan: ErasurePlan,
    pub receipt: Option<ErasureReceipt>,
}

impl Stores {
    /// Plans the erasure of `person`'s chats and, unless `dry_run`, carries it out. See
    /// [`execute_erasure`] for what must hold while it runs.
    pub async fn erase(
        &self,
        person: &Person,
        requested_by: &AuditEvent,
        dry_run: bool,
    ) -> Result<Removed> {
        let plan = plan_erasure(&self.archive_dir, &self.catalog, person).await?;
        self.carry_out(plan, Removal::Erasure(person), requested_by, dry_run)
            .await
    }

    /// Plans a retention run under `policy` (see [`plan_retention`]) and, unless
    /// `dry_run`, carries it out.
    pub async fn apply_retention(
        &self,
        policy: impl Fn(i64) -> Option<(String, RetentionAction)> + Send + Sync + 'static,
        requested_by: &AuditEvent,
        dry_run: bool,
    ) -> Result<Removed> {
        let plan = plan_retention(&self.archive_dir, &self.catalog, policy).await?;
        self.carry_out(plan, Removal::Retention, requested_by, dry_run)
            .await
    }

    async fn carry_out(
        &self,
        plan: ErasurePlan,
        why: Removal<'_>,
        requested_by: &AuditEvent,
        dry_run: bool,
    ) -> Result<Removed> {
        let receipt = if dry_run {
            None
        } else {
            Some(execute_erasure(self, &plan, why, requested_by).await?)
        };
        Ok(Removed { plan, receipt })
    }
}

/// Why chats are being removed, for the journal and the receipts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal<'a> {
    /// A person's request; names the kind of selector (`email`, `ip`, `chat`).
    Erasure(&'a Person),
    /// A retention run.
    Retention,
}

/// Carries out `plan`. Every segment holding these chats must be closed (the archive
/// opened afresh, or rolled) and nothing else may write meanwhile: the CLI holds the
/// data directory's lock, `serve` runs this as the ingest pipeline's exclusive work.
pub async fn execute_erasure(
    stores: &Stores,
    plan: &ErasurePlan,
    why: Removal<'_>,
    requested_by: &AuditEvent,
) -> Result<ErasureReceipt> {
    let at_us = crate::now_us();
    let (reason, selector) = match why {
        Removal::Erasure(person) => ("erasure", person.kind()),
        Removal::Retention => ("retention", "policy"),
    };
    let journal = Journal {
        id: format!("{reason}_{at_us}"),
        at_us,
        actor: requested_by.actor.clone(),
        address: requested_by.address.clone(),
        selector: selector.to_owned(),
        reason: reason.to_owned(),
        chats: plan.chats.clone(),
        held: plan.held.len(),
        anonymise: plan.anonymise.clone(),
    };
    write_journal(&stores.journal, &journal)?;
    complete(stores, journal).await
}

/// Finishes an erasure a crash interrupted, if the journal says one was under way.
pub async fn resume_erasure(stores: &Stores) -> Result<Option<ErasureReceipt>> {
    let text = match std::fs::read(&stores.journal) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ComplianceError::io(&stores.journal)(e)),
    };
    let journal: Journal = serde_json::from_slice(&text)
        .map_err(|e| ComplianceError::BadJournal(stores.journal.clone(), e.to_string()))?;
    complete(stores, journal).await.map(Some)
}

fn write_journal(path: &Path, journal: &Journal) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec_pretty(journal)
        .map_err(|e| ComplianceError::BadJournal(path.to_owned(), e.to_string()))?;
    let mut file = std::fs::File::create(&tmp).map_err(ComplianceError::io(&tmp))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(ComplianceError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(ComplianceError::io(path))?;
    sync_parent(path)
}

fn sync_parent(path: &Path) -> Result<()> {
    let parent: PathBuf = path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    std::fs::File::open(&parent)
        .and_then(|d| d.sync_all())
        .map_err(ComplianceError::io(parent))
}

async fn complete(stores: &Stores, journal: Journal) -> Result<ErasureReceipt> {
    let (segments, records) = rewrite_segments(stores, &journal).await?;
    let chats: Vec<String> = journal.chats.iter().cloned().collect();
    stores.catalog.mark_erased(&chats).await?;
    if !journal.anonymise.is_empty() {
        // Taken from the archive rather than from the rewrites, so that resuming after a
        // crash between a rewrite and this step still corrects the catalog.
        let dir = stores.archive_dir.clone();
        let uids: BTreeSet<String> = journal.anonymise.keys().cloned().collect();
        let newest = tokio::task::spawn_blocking(move || newest_versions(&dir, &uids))
            .await
            .map_err(|e| ComplianceError::Task(e.to_string()))??;
        stores.catalog.set_content_hashes(&newest).await?;
    }
    // The store holds flattened copies of the documents: rebuilding it from the rewritten
    // archive drops or masks them physically (the replaced files are removed once no
    // reader can still be using them).
    if !chats.is_empty() || !journal.anonymise.is_empty() {
        stores.store.rebuild(&stores.archive_dir, &|_| {}).await?;
    }
    let event = AuditEvent {
        actor: journal.actor.clone(),
        address: journal.address.clone(),
        action: format!("{}.apply", journal.reason),
        target: journal.id.clone(),
        detail: serde_json::json!({
            "selector": journal.selector,
            "chats": journal.chats.len(),
            "held": journal.held,
            "anonymised": journal.anonymise.len(),
            "segments": segments,
            "records": records,
        }),
    };
    let audit = stores.catalog.append_audit(&event).await?;
    std::fs::remove_file(&stores.journal).map_err(ComplianceError::io(&stores.journal))?;
    sync_parent(&stores.journal)?;
    Ok(ErasureReceipt {
        id: journal.id,
        chats: journal.chats.len() as u64,
        held: journal.held as u64,
        anonymised: journal.anonymise.len() as u64,
        segments,
        records,
        audit_seq: audit.seq,
    })
}

/// The archive seq and content hash of each of `chat_uids`' newest version.
fn newest_versions(
    archive_dir: &Path,
    chat_uids: &BTreeSet<String>,
) -> Result<Vec<(String, u64, chatvault_model::ContentHash)>> {
    let mut newest = BTreeMap::new();
    for record in read_records(archive_dir, 0)? {
        let record = record?;
        if chat_uids.contains(&record.entry.chat_uid) {
            newest.insert(
                record.entry.chat_uid,
                (record.seq, record.entry.content_hash),
            );
        }
    }
    Ok(newest
        .into_iter()
        .map(|(uid, (seq, hash))| (uid, seq, hash))
        .collect())
}

/// Rewrites every closed segment still holding the journal's chats. Each rewrite's
/// receipt (`archive.rewrite`, with the old and new SHA-256) is in the audit log before
/// the new file replaces the old, so a rewritten segment always has a receipt.
async fn rewrite_segments(stores: &Stores, journal: &Journal) -> Result<(u64, u64)> {
    let dir = stores.archive_dir.clone();
    let chats = journal.chats.clone();
    let anonymise = journal.anonymise.clone();
    let catalog = stores.catalog.clone();
    let (actor, address, reason, id, at_us) = (
        journal.actor.clone(),
        journal.address.clone(),
        journal.reason.clone(),
        journal.id.clone(),
        journal.at_us,
    );
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        // Erasure first, then anonymisation: a chat is in one or the other, never both,
        // so the two passes never touch the same record.
        let erasing = segments_holding(&dir, &chats)?;
        let anonymising = segments_where(&dir, |e| {
            anonymise
                .get(&e.chat_uid)
                .is_some_and(|a| anonymise_entry(&mut e.clone(), a))
        })?;
        let mut totals = (0u64, 0u64);
        let mut apply = |number: u64, change: &mut dyn FnMut(&mut Entry) -> bool| {
            let receipt = |r: &chatvault_archive::SegmentRewrite| {
                let event = AuditEvent {
                    actor: actor.clone(),
                    address: address.clone(),
                    action: "archive.rewrite".to_owned(),
                    target: format!("segment {}", r.segment),
                    detail: serde_json::json!({
                        "segment": r.segment,
                        "original_sha256": r.original_sha256,
                        "new_sha256": r.new_sha256,
                        "records": r.records,
                        "reason": reason,
                        "request": id,
                    }),
                };
                handle
                    .block_on(catalog.append_audit(&event))
                    .map(|_| ())
                    .map_err(ComplianceError::from)
            };
            if let Some(r) = rewrite_segment(&dir, number, change, at_us, &reason, receipt)? {
                totals.0 += 1;
                totals.1 += r.records;
            }
            Ok::<_, ComplianceError>(())
        };
        for number in erasing {
            apply(number, &mut |e: &mut Entry| erase_entry(e, &chats))?;
        }
        for number in anonymising {
            apply(number, &mut |e: &mut Entry| {
                anonymise
                    .get(&e.chat_uid)
                    .is_some_and(|a| anonymise_entry(e, a))
            })?;
        }
        Ok::<_, ComplianceError>(totals)
    })
    .await
    .map_err(|e| ComplianceError::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(scope: HoldScope) -> LegalHold {
        LegalHold {
            id: "h".into(),
            scope,
            reason: "case 1".into(),
            placed_by: "t".into(),
            placed_us: 0,
            released_by: None,
            released_us: None,
        }
    }

    #[test]
    fn holds_are_judged_from_a_chats_current_fields() {
        let by_email = hold(HoldScope::Email {
            email: "ana@example.org".into(),
        });
        let by_site = hold(HoldScope::Site {
            site_key: 3,
            from_date: Some("2024-08-01".into()),
            to_date: Some("2024-08-31".into()),
        });
        let mut released = hold(HoldScope::Chat {
            chat_uid: "c1".into(),
        });
        released.released_us = Some(5);
        let holds = [by_email.clone(), by_site.clone(), released];
        let covering = |site, started, emails: &[&str]| {
            holds_covering("c1", site, started, emails, &holds)
                .into_iter()
                .map(|h| h.scope)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            covering(3, Some("2024-08-14T10:00:00Z"), &[" Ana@Example.org "]),
            [by_email.scope.clone(), by_site.scope.clone()]
        );
        assert_eq!(covering(3, Some("2024-09-01T00:00:00Z"), &[]), []);
        assert_eq!(
            covering(4, Some("2024-08-14T10:00:00Z"), &["bo@example.org"]),
            []
        );
    }

    #[test]
    fn facts_match_people_and_holds_across_fields() {
        let doc = serde_json::json!({
            "ChatHeader": {"Email": "D.Okafor@Example.org ", "IP": "81.2.69.160", "Started": "2024-08-14T09:12:03.417"},
            "PostChatSurvey": [{"Name": "transEmail", "Value": "other@example.org"}],
            "VisitDetail": {"GeoIP": {"IP": "10.0.0.9"}}
        });
        let mut f = ChatFacts::default();
        f.add(3, &doc);
        let uid = "6741a0c2e4b0a1f3c2d4e501";
        assert!(f.matches(uid, &Person::Email("d.okafor@example.org".into())));
        assert!(f.matches(uid, &Person::Email("other@example.org".into())));
        assert!(f.matches(uid, &Person::Ip("10.0.0.9".into())));
        assert!(f.matches(uid, &Person::Chat(uid.to_uppercase())));
        assert!(!f.matches(uid, &Person::Email("nobody@example.org".into())));
        let site = |from: Option<&str>, to: Option<&str>| {
            hold(HoldScope::Site {
                site_key: 3,
                from_date: from.map(str::to_owned),
                to_date: to.map(str::to_owned),
            })
        };
        assert!(f.held_by(uid, &site(Some("2024-08-14"), Some("2024-08-14"))));
        assert!(f.held_by(uid, &site(None, Some("2024-09-01"))));
        assert!(!f.held_by(uid, &site(Some("2024-08-15"), None)));
        assert!(f.held_by(
            uid,
            &hold(HoldScope::Email {
                email: "d.okafor@example.org".into()
            })
        ));
        assert!(!f.held_by(
            uid,
            &hold(HoldScope::Chat {
                chat_uid: "x".into()
            })
        ));
    }
}
