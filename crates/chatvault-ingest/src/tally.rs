//! Outcome counts as the bulk sources (file import, Cosmos DB backfill) report them.

use std::collections::BTreeMap;

use crate::pipeline::{Outcome, OutcomeKind};

/// At most this many rejection reasons are kept: a bad export can reject millions.
const MAX_REASONS: usize = 100;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct OutcomeTally {
    pub counts: BTreeMap<OutcomeKind, u64>,
    /// `location: reason` for the first rejections.
    pub rejections: Vec<String>,
}

impl OutcomeTally {
    pub fn count(&self, kind: OutcomeKind) -> u64 {
        self.counts.get(&kind).copied().unwrap_or_default()
    }

    /// Documents counted, whatever their outcome.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Counts one outcome; a rejection's reason is kept with `location`, where the
    /// document was found.
    pub(crate) fn record(&mut self, outcome: &Outcome, location: &str) {
        *self.counts.entry(outcome.status).or_default() += 1;
        if let (OutcomeKind::Rejected, Some(err)) = (outcome.status, &outcome.error) {
            if self.rejections.len() < MAX_REASONS {
                self.rejections.push(format!("{location}: {err}"));
            }
        }
    }
}
