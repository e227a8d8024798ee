//! What each source sent lately, for people watching ingest (the console's ingest page):
//! when it last delivered a document, how many it had refused in the last day, and the
//! newest refusals with their reasons.
//!
//! Kept in memory: a restart starts it afresh. The durable account of what was accepted
//! is the archive, and refused documents stay with their sender (the webhook's answer,
//! the folder's `rejected/` directory, the Cosmos DB container).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use chatvault_archive::Source;

/// Refusals kept with their reasons, newest first.
const RECENT_REFUSALS: usize = 200;
const HOUR_US: i64 = 3_600_000_000;

/// One refused document (or folder file).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    pub at_us: i64,
    pub source: &'static str,
    /// Where it came from: the webhook request's item, the file, the Cosmos DB document.
    pub location: String,
    pub chat_uid: Option<String>,
    pub reason: String,
}

/// A source's recent activity.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SourceActivity {
    pub source: &'static str,
    pub last_received_us: Option<i64>,
    pub refused_last_day: u64,
}

#[derive(Default)]
struct Ledger {
    last_received: BTreeMap<&'static str, i64>,
    /// Per source, refusals counted per hour (oldest first), a day's worth.
    refused_hours: BTreeMap<&'static str, VecDeque<(i64, u64)>>,
    recent: VecDeque<Refusal>,
}

/// Shared by the pipeline and every source; clones see the same record.
#[derive(Clone, Default)]
pub struct Activity {
    ledger: Arc<Mutex<Ledger>>,
}

impl Activity {
    pub(crate) fn received(&self, source: Source, at_us: i64) {
        if let Ok(mut ledger) = self.ledger.lock() {
            let last = ledger.last_received.entry(source.as_str()).or_default();
            *last = (*last).max(at_us);
        }
    }

    pub(crate) fn refused(&self, refusal: Refusal) {
        let Ok(mut ledger) = self.ledger.lock() else {
            return;
        };
        let hour = refusal.at_us.div_euclid(HOUR_US);
        let hours = ledger.refused_hours.entry(refusal.source).or_default();
        match hours.back_mut() {
            Some((h, n)) if *h == hour => *n += 1,
            _ => hours.push_back((hour, 1)),
        }
        while hours.front().is_some_and(|(h, _)| *h <= hour - 24) {
            hours.pop_front();
        }
        ledger.recent.push_front(refusal);
        ledger.recent.truncate(RECENT_REFUSALS);
    }

    /// The newest refusals, newest first.
    pub fn recent_refusals(&self) -> Vec<Refusal> {
        self.ledger
            .lock()
            .map(|l| l.recent.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every source heard from since the start, with its refusals in the 24 hours
    /// before `now_us` (counted by whole hours).
    pub fn sources(&self, now_us: i64) -> Vec<SourceActivity> {
        let Ok(ledger) = self.ledger.lock() else {
            return Vec::new();
        };
        let since = now_us.div_euclid(HOUR_US) - 24;
        let mut names: Vec<&'static str> = ledger.last_received.keys().copied().collect();
        names.extend(ledger.refused_hours.keys().copied());
        names.sort_unstable();
        names.dedup();
        names
            .into_iter()
            .map(|source| SourceActivity {
                source,
                last_received_us: ledger.last_received.get(source).copied(),
                refused_last_day: ledger.refused_hours.get(source).map_or(0, |hours| {
                    hours
                        .iter()
                        .filter(|(h, _)| *h > since)
                        .map(|(_, n)| n)
                        .sum()
                }),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(at_us: i64, n: usize) -> Refusal {
        Refusal {
            at_us,
            source: "webhook",
            location: format!("item {n}"),
            chat_uid: None,
            reason: "missing ChatUID".into(),
        }
    }

    #[test]
    fn counts_a_day_of_refusals_and_keeps_the_newest() {
        let activity = Activity::default();
        let day = 24 * HOUR_US;
        for n in 0..250 {
            // 50 refusals two days ago, then 200 in the last hour.
            let at = if n < 50 {
                10 * day
            } else {
                12 * day - HOUR_US / 2
            };
            activity.refused(refusal(at, n));
        }
        activity.received(Source::Folder, 12 * day - 5);
        let sources = activity.sources(12 * day);
        assert_eq!(
            sources,
            [
                SourceActivity {
                    source: "folder",
                    last_received_us: Some(12 * day - 5),
                    refused_last_day: 0,
                },
                SourceActivity {
                    source: "webhook",
                    last_received_us: None,
                    refused_last_day: 200,
                },
            ]
        );
        let recent = activity.recent_refusals();
        assert_eq!(recent.len(), RECENT_REFUSALS);
        assert_eq!(recent[0].location, "item 249");
        assert_eq!(recent[RECENT_REFUSALS - 1].location, "item 50");
    }
}
