//! The console, end to end in a real browser: headless Chromium driven over WebDriver
//! against the real binary, with generated chats sent through the webhook first. Every
//! page visited is checked with axe-core and saved as a screenshot (into
//! `CHATVAULT_SCREENSHOTS`, or the test's temporary directory).

#[path = "common/browser.rs"]
mod browser;
mod common;

use browser::Browser;
use common::{client, create_key, Server};
use serde_json::{json, Value};
use std::path::PathBuf;

const VISITOR_EMAIL: &str = "harriet.console@example.net";
const PHRASE: &str = "parcel QX-4471 never arrived";

/// Two chats of one visitor (one to be held, one to be erased) among others.
fn documents() -> (Vec<Value>, Value, Value) {
    // Chats of the last seven days, so the home page has something to show.
    let mut gen = chatvault_gen::Generator::new(35);
    gen.start = first_day();
    gen.days = 7;
    let mut docs: Vec<Value> = (0..120).map(|i| gen.chat(i)).collect();
    let visitor = |i: u64| {
        let mut doc = gen.chat(i);
        doc["ChatHeader"]["Email"] = json!(VISITOR_EMAIL);
        doc["ChatHeader"]["Name"] = json!("Harriet Console");
        doc["VisitDetail"]["ContactEmail"] = json!(VISITOR_EMAIL);
        doc["PreChatSurvey"] = json!([{"Name": "Email", "Value": VISITOR_EMAIL}]);
        doc["ChatHeader"]["SiteKey"] = json!(1);
        doc["VisitDetail"]["SiteKey"] = json!(1);
        doc
    };
    let mut held = visitor(1000);
    held["Lines"][1]["Message"] = json!(format!("Hello, my {PHRASE}."));
    let erased = visitor(1001);
    docs.push(held.clone());
    docs.push(erased.clone());
    (docs, held, erased)
}

fn first_day() -> chrono::NaiveDate {
    chrono::Utc::now().date_naive() - chrono::Days::new(6)
}

fn uid(doc: &Value) -> String {
    doc["ChatHeader"]["ChatUID"]
        .as_str()
        .expect("uid")
        .to_owned()
}

struct Pages {
    dir: PathBuf,
    axe: String,
}

impl Pages {
    /// Checks the page the browser shows and saves its picture.
    async fn check(&self, browser: &Browser, name: &str) {
        browser.screenshot(&self.dir, name).await;
        let violations = browser.accessibility_violations(&self.axe).await;
        assert!(
            violations.is_empty(),
            "accessibility on the {name} page ({}):\n{}",
            browser.url().await,
            violations.join("\n")
        );
    }
}

async fn sign_in(browser: &Browser, server: &Server, key: &str) {
    browser.go(&server.url("/console/")).await;
    browser.type_into("#key", key).await;
    browser
        .submit("form[action='/console/sign-in'] button")
        .await;
}

/// The session cookie the browser holds, as a `Cookie` header value.
async fn session_cookie(browser: &Browser) -> String {
    let cookies = browser.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == "chatvault")
        .unwrap_or_else(|| panic!("no session cookie among {cookies:?}"));
    format!("chatvault={}", session["value"].as_str().expect("value"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliance_officers_and_analysts_work_in_the_console() {
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = create_key(dir.path(), "admin", None);
    let reader = create_key(dir.path(), "read", None);
    let site_two = create_key(dir.path(), "read", Some("2"));
    let ingest_only = create_key(dir.path(), "ingest", None);
    // Where a Cosmos DB source has read up to (as the source records it), an hour ago.
    let catalog = chatvault_catalog::Catalog::connect(&format!(
        "sqlite://{}",
        dir.path().join("catalog.db").display()
    ))
    .await
    .expect("catalog");
    let an_hour_ago = chrono::Utc::now().timestamp() - 3600;
    catalog
        .set_checkpoint("cosmos:support/chats", &an_hour_ago.to_string(), 0)
        .await
        .expect("checkpoint");
    catalog.close().await;
    let server = Server::start(dir.path(), &[]);
    let (docs, held, erased) = documents();
    let answer = client()
        .post(server.url("/api/v1/chats"))
        .bearer_auth(&admin)
        .json(&docs)
        .send()
        .await
        .expect("webhook");
    assert_eq!(
        answer.status().as_u16(),
        200,
        "{}",
        answer.text().await.unwrap_or_default()
    );
    // The held chat changes once after it was first sent: two versions in the archive.
    let mut held = held;
    held["ChatHeader"]["Rating"] = json!(5);
    let answer = client()
        .post(server.url("/api/v1/chats"))
        .bearer_auth(&admin)
        .json(&held)
        .send()
        .await
        .expect("webhook");
    assert_eq!(answer.status().as_u16(), 200);
    let pages = Pages {
        dir: std::env::var_os("CHATVAULT_SCREENSHOTS")
            .map_or_else(|| dir.path().join("screenshots"), PathBuf::from),
        axe: std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/axe/node_modules/axe-core/axe.min.js"),
        )
        .expect("axe-core (scripts/test.sh installs it with npm ci --prefix tests/axe)"),
    };

    let browser = Browser::start().await;
    // Without a session every page leads to the sign-in form, and back after it.
    browser
        .go(&server.url(&format!("/console/chats/{}", uid(&held))))
        .await;
    assert!(
        browser.url().await.contains("/console/?next="),
        "{}",
        browser.url().await
    );
    pages.check(&browser, "sign-in").await;
    browser.type_into("#key", "cv_not_a_key").await;
    browser
        .submit("form[action='/console/sign-in'] button")
        .await;
    assert!(
        browser.texts(".error").await.concat().contains("not known"),
        "a wrong key is refused on the form"
    );
    // A key that may only send documents reads nothing here, as on the API.
    browser.type_into("#key", &ingest_only).await;
    browser
        .submit("form[action='/console/sign-in'] button")
        .await;
    assert!(
        browser
            .texts(".error")
            .await
            .concat()
            .contains("read or admin scope"),
        "an ingest-only key is refused on the form"
    );
    assert!(
        browser
            .cookies()
            .await
            .iter()
            .all(|c| c["name"] != "chatvault"),
        "an ingest-only key gets no session"
    );
    browser.type_into("#key", &admin).await;
    browser
        .submit("form[action='/console/sign-in'] button")
        .await;
    let url = browser.url().await;
    assert!(
        url.ends_with(&format!("/console/chats/{}", uid(&held))),
        "{url}"
    );

    let cookie = browser
        .cookies()
        .await
        .into_iter()
        .find(|c| c["name"] == "chatvault")
        .expect("session cookie");
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
    assert_eq!(cookie["secure"], false, "plain HTTP on loopback: {cookie}");

    browser.go(&server.url("/console/")).await;
    assert_eq!(browser.title().await, "Home · Chatvault");
    let week = browser
        .texts("table.figures tbody tr:nth-child(2) td")
        .await;
    assert_eq!(week[0], "122", "every chat sent is this week's: {week:?}");
    let cosmos = browser.texts("ul.cosmos li").await;
    assert_eq!(cosmos.len(), 1, "{cosmos:?}");
    assert!(
        cosmos[0].starts_with("Cosmos DB support/chats: changes read up to")
            && cosmos[0].contains("(1 h 00 min before now)"),
        "{cosmos:?}"
    );
    pages.check(&browser, "home").await;

    // Every chat of the week, page by page: each once, as many as the total says.
    browser
        .go(&server.url(&format!("/console/search?from={}", first_day())))
        .await;
    assert_eq!(browser.texts("#total").await, ["122"]);
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let hrefs = browser
            .run(
                "return [...document.querySelectorAll('table.results tbody a')].map(a => a.getAttribute('href'));",
                json!([]),
            )
            .await;
        let page: Vec<String> = hrefs
            .as_array()
            .expect("links")
            .iter()
            .filter_map(|h| h.as_str().map(str::to_owned))
            .collect();
        assert!(!page.is_empty() && page.len() <= 50, "{}", page.len());
        for href in page {
            assert!(seen.insert(href.clone()), "{href} shown twice");
        }
        if browser.find_all("a[rel='next']").await.is_empty() {
            break;
        }
        browser.submit("a[rel='next']").await;
    }
    assert_eq!(seen.len(), 122);

    // Find the visitor by email, and by a phrase from one of the lines.
    browser
        .go(&server.url(&format!("/console/search?email={VISITOR_EMAIL}")))
        .await;
    assert_eq!(browser.texts("#total").await, ["2"]);
    pages.check(&browser, "search").await;
    // Newest first; the Started heading turns the order round.
    let newest_first = browser.texts("table.results tbody td:first-child").await;
    browser.submit("th[aria-sort='descending'] a").await;
    let oldest_first = browser.texts("table.results tbody td:first-child").await;
    assert_eq!(newest_first.len(), 2);
    assert_eq!(
        oldest_first,
        newest_first.into_iter().rev().collect::<Vec<_>>()
    );
    browser
        .go(&server.url(&format!(
            "/console/search?q=%22{}%22",
            PHRASE.replace(' ', "+")
        )))
        .await;
    assert_eq!(browser.texts("#total").await, ["1"]);
    browser.submit("table.results tbody a").await;
    assert!(browser.url().await.ends_with(&uid(&held)));
    let shown = browser.texts(".transcript li p").await;
    let sent: Vec<String> = held["Lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| l["Message"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(shown, sent, "every line, in order");
    pages.check(&browser, "chat").await;
    browser.submit("a[href$='/versions']").await;
    let versions = browser.texts("table.versions tbody tr").await;
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert!(versions[1].contains("~/ChatHeader/Rating"), "{versions:?}");
    pages.check(&browser, "versions").await;

    // The downloads: the printable transcript and the newest document as sent.
    let cookie = session_cookie(&browser).await;
    let download = |path: String| {
        let cookie = cookie.clone();
        let url = server.url(&path);
        async move {
            let response = client()
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .expect("download");
            assert_eq!(response.status().as_u16(), 200);
            let disposition = response.headers()["content-disposition"]
                .to_str()
                .expect("header")
                .to_owned();
            assert!(disposition.starts_with("attachment;"), "{disposition}");
            response.text().await.expect("body")
        }
    };
    let transcript = download(format!("/console/chats/{}/transcript.html", uid(&held))).await;
    assert!(transcript.contains(PHRASE) && transcript.contains("@media print"));
    let csv = download(format!("/console/search.csv?email={VISITOR_EMAIL}")).await;
    assert_eq!(
        csv.lines().count(),
        3,
        "a header and the visitor's two chats: {csv}"
    );
    assert!(
        csv.contains(&uid(&held)) && csv.contains(&uid(&erased)),
        "{csv}"
    );
    let document: Value = serde_json::from_str(
        &download(format!("/console/chats/{}/document.json", uid(&held))).await,
    )
    .expect("JSON");
    assert_eq!(document["ChatHeader"]["Rating"], 5, "the newest version");

    // A report: one chart mark per result row.
    browser
        .go(&server.url(&format!(
            "/console/reports/chats-by-hour?site=1&from={}&to={}",
            first_day(),
            chrono::Utc::now().date_naive() + chrono::Days::new(1)
        )))
        .await;
    let rows = browser.find_all("table.results tbody tr").await.len();
    assert!(rows > 1, "the report found rows");
    let marks = browser
        .find_all("figure.chart svg rect[data-value]")
        .await
        .len();
    assert_eq!(marks, rows, "one bar per row");
    pages.check(&browser, "report").await;
    browser.go(&server.url("/console/reports")).await;
    pages.check(&browser, "reports").await;

    // Hold one chat, then erase the visitor: the held chat stays, the other goes.
    browser
        .go(&server.url(&format!("/console/chats/{}", uid(&held))))
        .await;
    browser.type_into("#hold-reason", "Case 2026-114").await;
    browser.submit("form[action$='/hold'] button").await;
    assert!(browser
        .texts(".held li")
        .await
        .concat()
        .contains("Case 2026-114"));
    browser.go(&server.url("/console/compliance")).await;
    pages.check(&browser, "compliance").await;
    browser.type_into("#erase-value", VISITOR_EMAIL).await;
    browser
        .submit("form[action='/console/compliance/erasures'] button")
        .await;
    assert_eq!(
        browser.texts("#planned").await,
        ["1"],
        "the preview names one chat"
    );
    pages.check(&browser, "erasure-preview").await;
    browser.type_into("#confirm", VISITOR_EMAIL).await;
    browser.submit("form.danger button").await;
    assert_eq!(browser.texts("#erased").await, ["1"]);
    assert_eq!(browser.texts("#held").await, ["1"]);
    pages.check(&browser, "erasure-receipt").await;
    browser
        .go(&server.url(&format!("/console/chats/{}", uid(&erased))))
        .await;
    assert_eq!(browser.texts("h1").await, ["Not Found"]);
    browser
        .go(&server.url(&format!("/console/chats/{}", uid(&held))))
        .await;
    assert_eq!(browser.find_all(".transcript li").await.len(), sent.len());

    browser.go(&server.url("/console/ingest")).await;
    pages.check(&browser, "ingest").await;
    browser.go(&server.url("/console/keys")).await;
    pages.check(&browser, "keys").await;

    // A posted form without the CSRF token is refused, and changes nothing.
    let admin_cookie = session_cookie(&browser).await;
    let forged = client()
        .post(server.url("/console/compliance/holds"))
        .header("cookie", &admin_cookie)
        .header("origin", "https://attacker.example")
        .form(&[("email", "someone@example.org"), ("reason", "forged")])
        .send()
        .await
        .expect("post");
    assert_eq!(forged.status().as_u16(), 403);
    let holds: Value = client()
        .get(server.url("/api/v1/holds"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("holds")
        .json()
        .await
        .expect("json");
    assert_eq!(holds.as_array().map(Vec::len), Some(1), "{holds}");

    // Opening a chat is in the audit log, under the key that did it.
    let audit: Value = client()
        .get(server.url("/api/v1/audit?action=chat.view"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    assert!(
        audit["entries"]
            .as_array()
            .is_some_and(|e| e.iter().any(|r| r["target"] == uid(&held).as_str())),
        "{audit}"
    );

    // Sign out ends the session on the server too.
    browser
        .submit("form[action='/console/sign-out'] button")
        .await;
    let after = client()
        .get(server.url("/console/keys"))
        .header("cookie", &admin_cookie)
        .send()
        .await
        .expect("get");
    assert!(
        after.url().path() == "/console/",
        "the old session is gone: {}",
        after.url()
    );

    // A read key sees no admin action, and a hand-posted admin form is refused.
    browser.delete_cookies().await;
    sign_in(&browser, &server, &reader).await;
    browser
        .go(&server.url(&format!("/console/chats/{}", uid(&held))))
        .await;
    assert!(browser.find_all(".admin-actions").await.is_empty());
    assert!(browser
        .find_all("a[href='/console/compliance']")
        .await
        .is_empty());
    let csrf = browser
        .run(
            "return document.querySelector(\"input[name='csrf']\").value",
            json!([]),
        )
        .await;
    browser
        .post_form(
            "/console/compliance/holds",
            json!({"csrf": csrf, "email": "x@example.org", "reason": "by hand"}),
        )
        .await;
    assert_eq!(browser.texts("h1").await, ["Forbidden"]);

    // A key for site 2 gets 404 for a site-1 chat, as if it did not exist.
    browser.delete_cookies().await;
    sign_in(&browser, &server, &site_two).await;
    browser
        .go(&server.url(&format!("/console/chats/{}", uid(&held))))
        .await;
    assert_eq!(browser.texts("h1").await, ["Not Found"]);
    let cookie = session_cookie(&browser).await;
    let status = client()
        .get(server.url(&format!("/console/chats/{}", uid(&held))))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("get")
        .status();
    assert_eq!(status.as_u16(), 404);
    browser
        .go(&server.url(&format!("/console/search?email={VISITOR_EMAIL}")))
        .await;
    assert_eq!(browser.texts("#total").await, ["0"]);
}

#[tokio::test]
async fn console_responses_carry_their_security_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = create_key(dir.path(), "read", None);
    let server = Server::start(dir.path(), &[]);
    let root = client().get(server.url("/")).send().await.expect("get");
    assert_eq!(root.url().path(), "/console/", "/ leads to the console");
    let headers = root.headers();
    let csp = headers["content-security-policy"].to_str().expect("csp");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let body = root.text().await.expect("body");
    assert!(
        body.contains("name=\"key\""),
        "one form whose key field is named key"
    );

    // Signing in without a browser: the form's token comes from its cookie.
    let browserless = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let form = browserless
        .get(server.url("/console/"))
        .send()
        .await
        .expect("get");
    let form_cookie = form
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("the form's cookie")
        .to_owned();
    let page = form.text().await.expect("page");
    let token = common::sign_in_token(&page);
    let signed = browserless
        .post(server.url("/console/sign-in"))
        .header("cookie", &form_cookie)
        .form(&[
            ("key", key.as_str()),
            ("token", token.as_str()),
            ("next", "/console/"),
        ])
        .send()
        .await
        .expect("sign in");
    assert_eq!(signed.status().as_u16(), 303);
    let set_cookie: Vec<&str> = signed
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let session = set_cookie
        .iter()
        .find(|c| c.starts_with("chatvault="))
        .unwrap_or_else(|| panic!("{set_cookie:?}"));
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(session.contains(flag), "{session}");
    }
    // Without the form's token, no session.
    let refused = client()
        .post(server.url("/console/sign-in"))
        .form(&[("key", key.as_str()), ("token", "guess")])
        .send()
        .await
        .expect("sign in");
    assert_eq!(refused.status().as_u16(), 403);
}
