//! Deterministic synthetic chat documents for demos, tests and benchmarks.
//!
//! Owns the generator only: chat `i` of seed `s` is always the same document, whatever
//! else is generated, so tests can name a chat by index and benchmarks can generate in
//! parallel. Must not do I/O; callers decide where documents go.

#![recursion_limit = "256"]

use chrono::{Duration, NaiveDate, NaiveDateTime};
use serde_json::{json, Value};

/// SplitMix64: tiny, fast, and a bijection on u64, which also makes ChatUIDs unique.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Site {
    key: i64,
    name: &'static str,
    operators: &'static [&'static str],
    bot: &'static str,
    depts: &'static [&'static str],
}

const SITES: &[Site] = &[
    Site {
        key: 1,
        name: "Acme Software US",
        operators: &["Jordan Lee", "Sam Carter", "Riley Chen", "Morgan Diaz"],
        bot: "AcmeBot",
        depts: &["Sales", "Support", "Billing"],
    },
    Site {
        key: 2,
        name: "Acme Software DE",
        operators: &["Lena Vogel", "Jonas Weber", "Mia Schulz"],
        bot: "HilfeBot",
        depts: &["Vertrieb", "Support"],
    },
    Site {
        key: 3,
        name: "Acme Software UK",
        operators: &[
            "Amelia Brook",
            "Oliver Hart",
            "Isla Grant",
            "Harry Shaw",
            "Ava Price",
        ],
        bot: "HelpBot",
        depts: &["Sales", "Support", "Renewals"],
    },
    Site {
        key: 4,
        name: "Northwind Travel",
        operators: &["Chloé Martin", "Lucas Bernard", "Inès Petit"],
        bot: "TravelBot",
        depts: &["Bookings", "Changes", "Complaints"],
    },
    Site {
        key: 5,
        name: "Contoso Bank",
        operators: &["Marcus Reyes", "Priya Nair", "Tom Okoro", "Yuki Tanaka"],
        bot: "HelpBot",
        depts: &["Accounts", "Cards", "Mortgages", "Fraud"],
    },
    Site {
        key: 6,
        name: "Fabrikam Retail",
        operators: &["Sofia Rossi", "Diego Alvarez"],
        bot: "ShopBot",
        depts: &["Orders", "Returns"],
    },
];

struct Geo {
    country: &'static str,
    iso: &'static str,
    cities: &'static [(&'static str, f64, f64)],
    lang: &'static str,
}

const GEOS: &[Geo] = &[
    Geo {
        country: "United Kingdom",
        iso: "GB",
        cities: &[
            ("London", 51.5072, -0.1276),
            ("Leeds", 53.7965, -1.5478),
            ("Manchester", 53.4808, -2.2426),
        ],
        lang: "en",
    },
    Geo {
        country: "United States",
        iso: "US",
        cities: &[
            ("New York", 40.7128, -74.006),
            ("Austin", 30.2672, -97.7431),
            ("Seattle", 47.6061, -122.3328),
        ],
        lang: "en",
    },
    Geo {
        country: "Germany",
        iso: "DE",
        cities: &[("Berlin", 52.52, 13.405), ("München", 48.1351, 11.582)],
        lang: "de",
    },
    Geo {
        country: "France",
        iso: "FR",
        cities: &[("Paris", 48.8566, 2.3522), ("Lyon", 45.764, 4.8357)],
        lang: "fr",
    },
    Geo {
        country: "Spain",
        iso: "ES",
        cities: &[("Madrid", 40.4168, -3.7038)],
        lang: "es",
    },
    Geo {
        country: "Japan",
        iso: "JP",
        cities: &[("東京", 35.6762, 139.6503)],
        lang: "ja",
    },
    Geo {
        country: "India",
        iso: "IN",
        cities: &[("Bengaluru", 12.9716, 77.5946)],
        lang: "en",
    },
];

const VISITOR_LINES: &[(&str, &str)] = &[
    ("en", "Hi, I have a question about my order."),
    ("en", "Can you tell me the price for 40 licences?"),
    (
        "en",
        "My card was declined, \"error 51\" — what does that mean?",
    ),
    ("en", "Thanks, that's really helpful 👍"),
    ("en", "Line one\nline two, with a comma"),
    ("de", "Guten Tag, ich habe eine Frage zu meiner Rechnung."),
    (
        "de",
        "Können Sie mir bitte helfen? Größe 42 ist ausverkauft.",
    ),
    ("fr", "Bonjour, je voudrais modifier ma réservation."),
    ("es", "Hola, ¿cuánto cuesta el envío a Canarias?"),
    ("ja", "注文のキャンセルはできますか？"),
];

const OPERATOR_LINES: &[&str] = &[
    "Hello, how can I help you today?",
    "Let me check that for you.",
    "I've emailed you a quote; it should arrive in a few minutes.",
    "Is there anything else I can help with?",
    "Here is the link: https://www.example.com/help?topic=billing&lang=en",
    "I'm sorry about that — I have refunded the charge.",
];

const TAGS: &[&str] = &[
    "Sales",
    "Support",
    "Quote sent",
    "Complaint",
    "Refund",
    "VIP",
    "Bug",
    "Upsell",
    "Follow-up",
];
const WRAP_UPS: &[&str] = &[
    "resolved",
    "pricing",
    "escalated",
    "no-answer",
    "refund",
    "information",
    "",
];
const BROWSERS: &[&str] = &[
    "Chrome 127",
    "Edge 126",
    "Firefox 128",
    "Safari 17",
    "Samsung Internet 25",
];
const OSES: &[&str] = &[
    "Windows 11",
    "Windows 10",
    "macOS 14",
    "iOS 17",
    "Android 14",
    "Ubuntu",
];
const PAGES: &[&str] = &[
    "/",
    "/pricing",
    "/pricing/volume",
    "/products",
    "/support",
    "/contact",
    "/checkout",
    "/account/orders",
];
const FIRST_NAMES: &[&str] = &[
    "Daniel", "Grace", "Liam", "Zoe", "Mateo", "Hannah", "Aarav", "Emma", "Kenji", "Fatima",
];
const LAST_NAMES: &[&str] = &[
    "Okafor", "Smith", "Müller", "Dubois", "García", "Sato", "Khan", "O'Brien",
];

fn ts(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()
}

const UNSET: &str = "0001-01-01T00:00:00";

/// Generation parameters; chats are spread evenly over `[start, start + days)`.
#[derive(Debug, Clone)]
pub struct Generator {
    pub seed: u64,
    pub start: NaiveDate,
    pub days: u32,
}

impl Generator {
    pub fn new(seed: u64) -> Generator {
        Generator {
            seed,
            start: NaiveDate::from_ymd_opt(2024, 1, 1).unwrap_or_default(),
            days: 366,
        }
    }

    /// The ChatUID of chat `index`: 24 lowercase hex digits, unique per (seed, index).
    pub fn chat_uid(&self, index: u64) -> String {
        format!(
            "{:08x}{:016x}",
            mix(self.seed) as u32,
            mix(index ^ self.seed.rotate_left(17))
        )
    }

    /// Chat number `index`; always the same document for the same seed and index.
    pub fn chat(&self, index: u64) -> Value {
        let mut rng = Rng(mix(self.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ index));
        let site = rng.pick(SITES);
        let geo = rng.pick(GEOS);
        let (city, lat, lon) = *rng.pick(geo.cities);
        let day = self.start + Duration::days(rng.below(u64::from(self.days)) as i64);
        // Business hours are busier: three draws, keep the one nearest mid-afternoon.
        let hour = (0..3)
            .map(|_| rng.below(24) as i64)
            .min_by_key(|h| (h - 14).abs())
            .unwrap_or(12);
        let started = day.and_hms_opt(0, 0, 0).unwrap_or_default()
            + Duration::hours(hour)
            + Duration::seconds(rng.below(3600) as i64)
            + Duration::milliseconds(rng.below(1000) as i64);
        let missed = rng.chance(12);
        let by_bot = !missed && rng.chance(18);
        let transferred = !missed && rng.chance(if by_bot { 60 } else { 10 });
        let translated = !missed && geo.lang != "en" && rng.chance(40);
        let mut operators: Vec<&str> = Vec::new();
        if by_bot {
            operators.push(site.bot);
        }
        if !missed && (!by_bot || transferred) {
            operators.push(*rng.pick(site.operators));
        }
        if transferred && !by_bot {
            let other = *rng.pick(site.operators);
            if !operators.contains(&other) {
                operators.push(other);
            }
        }
        let waited = if missed {
            rng.range(60, 600)
        } else if by_bot {
            rng.range(0, 2)
        } else {
            rng.range(2, 240)
        };
        let n_lines = rng.range(5, 60) as usize;
        let mut t = started;
        let mut lines = Vec::with_capacity(n_lines);
        lines.push(json!({"Dated": ts(t), "OperatorIndex": 99, "Message": "Please wait. An operator will be with you shortly."}));
        for i in 1..n_lines {
            t += Duration::milliseconds(rng.range(1500, 90_000));
            let (index, message) = if missed {
                if i == 1 {
                    (0, "I'll leave a message: please call me back.".to_owned())
                } else {
                    (
                        99,
                        "No operators are available. Your message has been recorded.".to_owned(),
                    )
                }
            } else if transferred && i == n_lines / 2 {
                (
                    99,
                    format!(
                        "Chat transferred to {}",
                        operators.last().copied().unwrap_or_default()
                    ),
                )
            } else if i % 2 == 1 {
                let candidates: Vec<&(&str, &str)> = VISITOR_LINES
                    .iter()
                    .filter(|(l, _)| *l == geo.lang || rng.chance(20))
                    .collect();
                let (_, text) = if candidates.is_empty() {
                    &VISITOR_LINES[0]
                } else {
                    *rng.pick(&candidates)
                };
                (0, (*text).to_owned())
            } else {
                let who = if transferred && i > n_lines / 2 {
                    operators.len()
                } else {
                    1
                };
                (who as i64, (*rng.pick(OPERATOR_LINES)).to_owned())
            };
            lines.push(json!({"Dated": ts(t), "OperatorIndex": index, "Message": message}));
            if missed && i >= 2 {
                break;
            }
        }
        let finished = t + Duration::seconds(rng.range(1, 30));
        let first = rng.pick(FIRST_NAMES);
        let last = rng.pick(LAST_NAMES);
        let name = format!("{first} {last}");
        let email = format!(
            "{}.{}@example.org",
            first.to_lowercase(),
            last.to_lowercase().replace('\'', "")
        );
        let rating = if missed || rng.chance(50) {
            0
        } else {
            rng.range(1, 5)
        };
        let followed_up = missed && rng.chance(70);
        let seen_on = finished + Duration::minutes(rng.range(5, 3000));
        let dept = rng.pick(site.depts);
        let n_tags = rng.below(3) as usize;
        let tags: Vec<&str> = (0..n_tags).map(|_| *rng.pick(TAGS)).collect();
        let ip = format!(
            "{}.{}.{}.{}",
            rng.range(11, 223),
            rng.below(256),
            rng.below(256),
            rng.range(1, 254)
        );
        let n_pages = rng.range(1, 8) as usize;
        let session_started = started - Duration::seconds(rng.range(30, 1800));
        let mut page_time = session_started;
        let pages: Vec<Value> = (0..n_pages)
            .map(|_| {
                let p = json!({"Dated": ts(page_time), "Name": rng.pick(PAGES)});
                page_time += Duration::seconds(rng.range(5, 200));
                p
            })
            .collect();
        let first_page = pages
            .first()
            .and_then(|p| p["Name"].as_str())
            .unwrap_or("/")
            .to_owned();
        let tracking = format!("{}.{}", rng.range(1000, 9999), rng.range(10000, 99999));
        let visit_no = rng.range(1, 12);
        let post_survey = if rating > 0 {
            json!([{"Name": "Rating", "Value": rating.to_string()}, {"Name": "Comments", "Value": if rng.chance(50) { "Quick and friendly" } else { "" }}])
        } else {
            json!([])
        };
        let channel = *rng.pick(&["", "", "", "whatsapp", "sms", "facebook"]);
        json!({
            "ChatHeader": {
                "ChatUID": self.chat_uid(index),
                "SiteKey": site.key,
                "IP": ip,
                "DNS": format!("host-{}.example.net", ip.replace('.', "-")),
                "Location": format!("{} - {city}", geo.country),
                "TrackingId": tracking,
                "VisitNo": visit_no,
                "TakenByUsers": operators.join(","),
                "TakenByDept": if missed { "" } else { dept },
                "TakenByBot": by_bot,
                "Started": ts(started),
                "Finished": ts(finished),
                "WaitedSeconds": waited,
                "DurationSeconds": (finished - started).num_seconds(),
                "Lang": geo.lang,
                "Translation": translated,
                "Rating": rating,
                "Name": name,
                "Email": email,
                "Phone": if rng.chance(40) { format!("+44 113 496 {:04}", rng.below(10000)) } else { String::new() },
                "Missed": missed,
                "MissedMessage": if missed { "Please call me back about my invoice." } else { "" },
                "MissedSeen": followed_up,
                "MissedSeenByUserName": if followed_up { *rng.pick(site.operators) } else { "" },
                "MissedSeenOn": if followed_up { ts(seen_on) } else { UNSET.to_owned() },
                "MissedCallback": followed_up && rng.chance(50),
                "MissedCallbackOn": UNSET,
                "RequestedDept": dept,
                "SentimentScore": if missed { 0 } else { rng.range(5, 100) },
                "WrapUpValue": if missed { "" } else { *rng.pick(WRAP_UPS) },
                "Tags": tags,
                "Summary": if missed { "Missed chat; visitor left a message." } else { "Visitor asked a question; operator answered." },
                "Channel": channel,
                "State": if missed { 2 } else { 0 },
                "SkillNames": dept,
                "TranscriptURL": ""
            },
            "PreChatSurvey": [
                {"Name": "VisitorName", "Value": name},
                {"Name": "Email", "Value": email}
            ],
            "PostChatSurvey": post_survey,
            "Lines": lines,
            "VisitDetail": {
                "SiteKey": site.key,
                "SiteName": site.name,
                "IP": ip,
                "TrackingId": tracking,
                "DNS": format!("host-{}.example.net", ip.replace('.', "-")),
                "VisitNo": visit_no,
                "TotalVisits": visit_no + rng.range(0, 3),
                "Browser": rng.pick(BROWSERS),
                "OS": rng.pick(OSES),
                "Referrer": if rng.chance(50) { "https://www.example.com/search?q=acme" } else { "" },
                "SessionStarted": ts(session_started),
                "Chatting": false,
                "ChattingLanguage": if translated { geo.lang } else { "" },
                "ChattingTranslate": translated,
                "PageViews": n_pages,
                "FirstPage": first_page,
                "FirstVisit": ts(session_started - Duration::days(rng.range(0, 400))),
                "ContactName": name,
                "ContactEmail": email,
                "ContactCompany": "",
                "ContactTelephone": "",
                "ContactNotes": "",
                "ContactStreet": "",
                "ContactCity": city,
                "ContactPostCode": "",
                "ContactCountry": geo.country,
                "ContactWebAddress": "",
                "ContactOrganization": "",
                "CRMId": "",
                "Pages": pages,
                "GeoIP": {
                    "IP": ip,
                    "CountryName": geo.country,
                    "CountryISO": geo.iso,
                    "City": city,
                    "PostCode": "",
                    "MetroCode": "",
                    "Latitude": lat,
                    "Longitude": lon,
                    "Radius": rng.range(5, 100),
                    "ISP": "Example Broadband",
                    "Organization": "Example Broadband Ltd"
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn same_seed_same_documents_different_seed_different_documents() {
        let a = Generator::new(7);
        assert_eq!(a.chat(42), Generator::new(7).chat(42));
        assert_ne!(a.chat(42), Generator::new(8).chat(42));
        assert_ne!(a.chat(42), a.chat(43));
    }

    #[test]
    fn chat_uids_are_unique_24_hex_digits() {
        let g = Generator::new(1);
        let uids: HashSet<String> = (0..20_000).map(|i| g.chat_uid(i)).collect();
        assert_eq!(uids.len(), 20_000);
        assert!(uids
            .iter()
            .all(|u| u.len() == 24 && u.chars().all(|c| c.is_ascii_hexdigit())));
    }

    #[test]
    fn the_mix_covers_what_reports_need() {
        let g = Generator::new(3);
        let docs: Vec<Value> = (0..2000).map(|i| g.chat(i)).collect();
        let count = |f: &dyn Fn(&Value) -> bool| docs.iter().filter(|d| f(d)).count();
        assert!(count(&|d| d["ChatHeader"]["Missed"] == true) > 100);
        assert!(count(&|d| d["ChatHeader"]["TakenByBot"] == true) > 100);
        assert!(
            count(&|d| d["ChatHeader"]["TakenByUsers"]
                .as_str()
                .is_some_and(|s| s.contains(',')))
                > 50
        );
        assert!(count(&|d| d["ChatHeader"]["Translation"] == true) > 20);
        assert!(count(&|d| d["ChatHeader"]["MissedSeen"] == true) > 50);
        let sites: HashSet<i64> = docs
            .iter()
            .filter_map(|d| d["ChatHeader"]["SiteKey"].as_i64())
            .collect();
        assert_eq!(sites.len(), SITES.len());
        for d in &docs {
            let n = d["Lines"].as_array().map_or(0, Vec::len);
            let missed = d["ChatHeader"]["Missed"] == true;
            assert!((missed && n >= 2) || (5..=60).contains(&n), "{n} lines");
        }
    }
}
