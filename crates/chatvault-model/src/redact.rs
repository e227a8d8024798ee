//! Redaction on ingest: what a site chooses never to store. Applied to each document
//! after parsing and before validation, so the archive, the catalog and the store only
//! ever see the redacted document (and its content hash is the redacted one's, so a
//! re-sent original is still recognised as unchanged).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// One site's choice (or the default).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(default, deny_unknown_fields)]
pub struct Redaction {
    /// Blank the visitor's IP address in the header, the visit and GeoIP.
    pub drop_ip: bool,
    /// Mask payment card numbers (13–19 digits, spaces or dashes allowed, passing the
    /// Luhn check) in every free-text field, keeping the last four digits.
    pub mask_card_numbers: bool,
}

/// The default and per-SiteKey redactions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedactionPolicy {
    pub default: Redaction,
    pub sites: BTreeMap<i64, Redaction>,
}

impl RedactionPolicy {
    fn for_site(&self, site_key: Option<i64>) -> Redaction {
        site_key
            .and_then(|s| self.sites.get(&s))
            .copied()
            .unwrap_or(self.default)
    }

    /// Whether the site's documents are edited at all.
    pub(crate) fn redacts(&self, site_key: Option<i64>) -> bool {
        self.for_site(site_key) != Redaction::default()
    }

    /// Redacts `doc` in place as its site asks; true when anything changed.
    pub fn apply(&self, doc: &mut Value) -> bool {
        let r = self.for_site(doc.pointer("/ChatHeader/SiteKey").and_then(Value::as_i64));
        let mut changed = false;
        if r.drop_ip {
            for pointer in ["/ChatHeader/IP", "/VisitDetail/IP", "/VisitDetail/GeoIP/IP"] {
                if let Some(ip) = doc.pointer_mut(pointer) {
                    if ip.as_str().is_some_and(|s| !s.is_empty()) {
                        *ip = Value::String(String::new());
                        changed = true;
                    }
                }
            }
        }
        if r.mask_card_numbers {
            changed |= mask_strings(doc);
        }
        changed
    }
}

/// Masks card numbers in every string of `value`; true when any was found.
fn mask_strings(value: &mut Value) -> bool {
    match value {
        Value::String(s) => match mask_card_numbers(s) {
            Some(masked) => {
                *s = masked;
                true
            }
            None => false,
        },
        Value::Array(items) => items.iter_mut().fold(false, |c, v| mask_strings(v) | c),
        Value::Object(map) => map.values_mut().fold(false, |c, v| mask_strings(v) | c),
        _ => false,
    }
}

fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(*d);
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// `text` with each card number's digits but the last four replaced by `*`, or `None`
/// when it holds none. A candidate is a run of digits with single spaces or dashes
/// between them; longer digit runs (order numbers, phone numbers) are left alone.
pub fn mask_card_numbers(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out: Vec<char> = chars.clone();
    let mut found = false;
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() || (i > 0 && chars[i - 1].is_ascii_digit()) {
            i += 1;
            continue;
        }
        // Extend the run: digits, with single separators between digits.
        let mut end = i;
        let mut digit_positions = Vec::new();
        while end < chars.len() {
            if chars[end].is_ascii_digit() {
                digit_positions.push(end);
                end += 1;
            } else if matches!(chars[end], ' ' | '-')
                && chars.get(end + 1).is_some_and(char::is_ascii_digit)
                && end > i
            {
                end += 1;
            } else {
                break;
            }
        }
        let digits: Vec<u8> = digit_positions
            .iter()
            .filter_map(|&p| chars[p].to_digit(10).and_then(|d| u8::try_from(d).ok()))
            .collect();
        if (13..=19).contains(&digits.len()) && luhn_valid(&digits) {
            for &p in &digit_positions[..digit_positions.len() - 4] {
                out[p] = '*';
            }
            found = true;
        }
        i = end.max(i + 1);
    }
    found.then(|| out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_numbers_are_masked_and_other_numbers_kept() {
        assert_eq!(
            mask_card_numbers("card 4111 1111 1111 1111 exp 12/27").as_deref(),
            Some("card **** **** **** 1111 exp 12/27")
        );
        assert_eq!(
            mask_card_numbers("5500-0000-0000-0004").as_deref(),
            Some("****-****-****-0004")
        );
        assert_eq!(
            mask_card_numbers("x4012888888881881y").as_deref(),
            Some("x************1881y")
        );
        // Not Luhn-valid, too short, or an order number: untouched.
        assert_eq!(mask_card_numbers("4111 1111 1111 1112"), None);
        assert_eq!(mask_card_numbers("call 0113 496 0000"), None);
        assert_eq!(mask_card_numbers("order 12345"), None);
        assert_eq!(
            mask_card_numbers("ünïcødé 4111111111111111!").as_deref(),
            Some("ünïcødé ************1111!")
        );
    }

    #[test]
    fn sites_choose_and_the_default_applies_elsewhere() {
        let policy = RedactionPolicy {
            default: Redaction {
                drop_ip: true,
                mask_card_numbers: false,
            },
            sites: BTreeMap::from([(
                5,
                Redaction {
                    drop_ip: false,
                    mask_card_numbers: true,
                },
            )]),
        };
        let doc = |site: i64| {
            serde_json::json!({
                "ChatHeader": {"SiteKey": site, "IP": "81.2.69.160"},
                "Lines": [{"Message": "my card is 4111111111111111"}],
                "VisitDetail": {"IP": "81.2.69.160", "GeoIP": {"IP": "81.2.69.160"}}
            })
        };
        let mut d3 = doc(3);
        assert!(policy.apply(&mut d3));
        assert_eq!(d3["ChatHeader"]["IP"], "");
        assert_eq!(d3["VisitDetail"]["GeoIP"]["IP"], "");
        assert_eq!(d3["Lines"][0]["Message"], "my card is 4111111111111111");
        let mut d5 = doc(5);
        assert!(policy.apply(&mut d5));
        assert_eq!(d5["ChatHeader"]["IP"], "81.2.69.160");
        assert_eq!(d5["Lines"][0]["Message"], "my card is ************1111");
        let mut none = doc(3);
        assert!(!RedactionPolicy::default().apply(&mut none));
        assert_eq!(none, doc(3));
    }
}
