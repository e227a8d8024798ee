//! Anonymisation: masking a stored chat's personal fields when its retention period ends,
//! as the alternative to deleting it. The chat keeps its identity, times, counts, sites,
//! departments and ratings, so reports over it stay right; what names a person goes.
//!
//! Masking is a fixed point (a masked document masks to itself), so running retention
//! again changes nothing and re-finds nothing to do.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeSet;

/// What replaces a masked text: visible in transcripts as deliberate, not as missing data.
pub const MASK: &str = "[anonymised]";

/// A group of personal fields that can be chosen for anonymisation.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PersonalField {
    /// The visitor's name and contact details (company, street, city, post code, web
    /// address, CRM id).
    Names,
    /// Emails in the header, the visit and survey answers.
    Emails,
    /// Phone numbers in the header and the visit.
    Phones,
    /// IP addresses and reverse-DNS names.
    Ips,
    /// GeoIP detail finer than the country: the header's location, city, post code, metro
    /// code, coordinates, ISP.
    Geoip,
    /// Free text: chat lines, survey answers, summary, missed-chat message, contact notes.
    Text,
}

impl PersonalField {
    /// The name used in configuration and output.
    pub fn name(self) -> &'static str {
        match self {
            PersonalField::Names => "names",
            PersonalField::Emails => "emails",
            PersonalField::Phones => "phones",
            PersonalField::Ips => "ips",
            PersonalField::Geoip => "geoip",
            PersonalField::Text => "text",
        }
    }

    pub const ALL: [PersonalField; 6] = [
        PersonalField::Names,
        PersonalField::Emails,
        PersonalField::Phones,
        PersonalField::Ips,
        PersonalField::Geoip,
        PersonalField::Text,
    ];

    /// The JSON pointers of this group's single-valued text fields.
    fn pointers(self) -> &'static [&'static str] {
        match self {
            PersonalField::Names => &[
                "/ChatHeader/Name",
                "/VisitDetail/ContactName",
                "/VisitDetail/ContactCompany",
                "/VisitDetail/ContactOrganization",
                "/VisitDetail/ContactStreet",
                "/VisitDetail/ContactCity",
                "/VisitDetail/ContactPostCode",
                "/VisitDetail/ContactWebAddress",
                "/VisitDetail/CRMId",
            ],
            PersonalField::Emails => &["/ChatHeader/Email", "/VisitDetail/ContactEmail"],
            PersonalField::Phones => &["/ChatHeader/Phone", "/VisitDetail/ContactTelephone"],
            PersonalField::Ips => &[
                "/ChatHeader/IP",
                "/ChatHeader/DNS",
                "/VisitDetail/IP",
                "/VisitDetail/DNS",
                "/VisitDetail/GeoIP/IP",
            ],
            PersonalField::Geoip => &[
                // "Country - City": the server's own GeoIP summary.
                "/ChatHeader/Location",
                "/VisitDetail/GeoIP/City",
                "/VisitDetail/GeoIP/PostCode",
                "/VisitDetail/GeoIP/MetroCode",
                "/VisitDetail/GeoIP/ISP",
                "/VisitDetail/GeoIP/Organization",
            ],
            PersonalField::Text => &[
                "/ChatHeader/Summary",
                "/ChatHeader/MissedMessage",
                "/VisitDetail/ContactNotes",
            ],
        }
    }
}

/// The fields to mask (all of them unless configured otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Anonymisation {
    pub fields: BTreeSet<PersonalField>,
}

impl Default for Anonymisation {
    fn default() -> Self {
        Anonymisation {
            fields: PersonalField::ALL.into_iter().collect(),
        }
    }
}

/// Replaces a non-empty string with [`MASK`]; true when it changed.
fn mask(value: &mut Value) -> bool {
    match value {
        Value::String(s) if !s.is_empty() && s != MASK => {
            *s = MASK.to_owned();
            true
        }
        _ => false,
    }
}

impl Anonymisation {
    /// Masks the chosen fields of `doc` in place; true when anything changed.
    pub fn apply(&self, doc: &mut Value) -> bool {
        let mut changed = false;
        for field in &self.fields {
            for pointer in field.pointers() {
                changed |= doc.pointer_mut(pointer).is_some_and(mask);
            }
        }
        let has = |f| self.fields.contains(&f);
        if has(PersonalField::Geoip) {
            // Coordinates locate a visitor to a street; the country stays for reports.
            for pointer in ["Latitude", "Longitude", "Radius"] {
                if let Some(v) = doc.pointer_mut(&format!("/VisitDetail/GeoIP/{pointer}")) {
                    if !v.is_null() {
                        *v = Value::Null;
                        changed = true;
                    }
                }
            }
        }
        if has(PersonalField::Text) {
            if let Some(lines) = doc.pointer_mut("/Lines").and_then(Value::as_array_mut) {
                for line in lines {
                    changed |= line.get_mut("Message").is_some_and(mask);
                }
            }
        }
        // A survey answer is free text, and an email when it holds an `@` (the
        // transcript address): either choice masks it. A number (a rating) names nobody
        // and is kept, so survey figures stay usable.
        for survey in ["/PreChatSurvey", "/PostChatSurvey"] {
            let answers = doc.pointer_mut(survey).and_then(Value::as_array_mut);
            for answer in answers.into_iter().flatten() {
                if let Some(value) = answer.get_mut("Value") {
                    let email = value.as_str().is_some_and(|s| s.contains('@'));
                    let number = value
                        .as_str()
                        .is_some_and(|s| s.trim().parse::<f64>().is_ok());
                    if (has(PersonalField::Text) && !number)
                        || (email && has(PersonalField::Emails))
                    {
                        changed |= mask(value);
                    }
                }
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        serde_json::json!({
            "ChatHeader": {"Name": "Dana Okafor", "Email": "d@example.org", "Phone": "+44 20 7946 0000",
                           "IP": "81.2.69.160", "Summary": "wants a refund", "SiteKey": 3, "Rating": 5},
            "Lines": [{"Message": "my card is 4111", "OperatorIndex": -1}],
            "PostChatSurvey": [{"Name": "transEmail", "Value": "d@example.org"}, {"Name": "q", "Value": "fine"}, {"Name": "Rating", "Value": "4"}],
            "VisitDetail": {"ContactTelephone": "0123", "GeoIP": {"City": "London", "CountryName": "United Kingdom", "Latitude": 51.5}}
        })
    }

    fn at(doc: &Value, pointer: &str) -> Value {
        doc.pointer(pointer).cloned().unwrap_or(Value::Null)
    }

    #[test]
    fn masks_chosen_fields_keeps_the_rest_and_is_a_fixed_point() {
        let mut d = doc();
        assert!(Anonymisation::default().apply(&mut d));
        assert_eq!(at(&d, "/ChatHeader/Name"), MASK);
        assert_eq!(at(&d, "/Lines/0/Message"), MASK);
        assert_eq!(at(&d, "/VisitDetail/GeoIP/Latitude"), Value::Null);
        assert_eq!(at(&d, "/VisitDetail/GeoIP/CountryName"), "United Kingdom");
        assert_eq!(at(&d, "/ChatHeader/Rating"), 5);
        assert_eq!(at(&d, "/PostChatSurvey/1/Value"), MASK);
        assert_eq!(at(&d, "/PostChatSurvey/2/Value"), "4");
        assert!(
            !Anonymisation::default().apply(&mut d),
            "masking twice changes nothing"
        );

        let only_emails = Anonymisation {
            fields: [PersonalField::Emails].into_iter().collect(),
        };
        let mut d = doc();
        assert!(only_emails.apply(&mut d));
        assert_eq!(at(&d, "/ChatHeader/Email"), MASK);
        assert_eq!(at(&d, "/PostChatSurvey/0/Value"), MASK);
        assert_eq!(at(&d, "/PostChatSurvey/1/Value"), "fine");
        assert_eq!(at(&d, "/ChatHeader/Name"), "Dana Okafor");
        assert_eq!(at(&d, "/Lines/0/Message"), "my card is 4111");
    }
}
