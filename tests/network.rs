//! `serve` on a network: TLS (HTTP/1.1 and HTTP/2, HSTS, certificate renewal, mutual TLS
//! on the webhook, no plain HTTP off loopback), every credential path Power BI uses
//! (keys in headers and in the URL, single sign-on tokens), Power Query's own requests,
//! what a site-restricted caller can learn, and the brake on guessing credentials.

mod common;
#[path = "common/issuer.rs"]
mod issuer;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{client, create_key, read_sample, run, Server, BIN};
use serde_json::{json, Value};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What Power Query's OData connector sends with every request.
const POWER_QUERY_ACCEPT: &str = "application/json;odata.metadata=minimal;q=1.0,application/json;odata=minimalmetadata;q=0.9,application/atomsvc+xml;q=0.8,application/atom+xml;q=0.8,application/xml;q=0.7,text/plain;q=0.7";

// ---------------------------------------------------------------------------------------
// Certificates

struct Authority {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

fn authority(name: &str) -> Authority {
    let key = rcgen::KeyPair::generate().expect("CA key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("CA certificate");
    Authority {
        pem: cert.pem(),
        issuer: rcgen::Issuer::new(params, key),
    }
}

/// A leaf certificate signed by `ca`: (certificate PEM, key PEM, certificate DER).
fn leaf(
    ca: &Authority,
    name: &str,
    usage: rcgen::ExtendedKeyUsagePurpose,
) -> (String, String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().expect("leaf key");
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned(), "localhost".to_owned()])
        .expect("leaf params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    let cert = params
        .signed_by(&key, &ca.issuer)
        .expect("leaf certificate");
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

/// Replaces a file the way a renewal tool does: written beside it, then renamed over it.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).expect("write the new file");
    std::fs::rename(&tmp, path).expect("rename over the old file");
}

/// An HTTPS client trusting only `ca`, optionally presenting a client certificate.
fn https(ca: &Authority, identity: Option<(&str, &str)>, http1_only: bool) -> reqwest13::Client {
    let mut builder = reqwest13::Client::builder()
        .tls_certs_only([reqwest13::Certificate::from_pem(ca.pem.as_bytes()).expect("CA")])
        .tls_info(true)
        // Redirects are checked, not followed (the console's sign-in answers with one).
        .redirect(reqwest13::redirect::Policy::none())
        .timeout(Duration::from_secs(60));
    if let Some((cert, key)) = identity {
        builder = builder.identity(
            reqwest13::Identity::from_pem(format!("{cert}{key}").as_bytes()).expect("identity"),
        );
    }
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().expect("HTTPS client")
}

fn peer_certificate(response: &reqwest13::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest13::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("the TLS connection's certificate")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_http2_hsts_renewal_and_client_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let ca = authority("chatvault test CA");
    let clients_ca = authority("chat servers' CA");
    let (cert, key, first_der) = leaf(&ca, "127.0.0.1", rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    let client_ca_path = dir.path().join("client-ca.pem");
    std::fs::write(&cert_path, &cert).expect("write cert");
    std::fs::write(&key_path, &key).expect("write key");
    std::fs::write(&client_ca_path, &clients_ca.pem).expect("write client CA");

    let server = Server::start(
        &data,
        &[
            ("CHATVAULT_TLS_CERT", cert_path.to_str().expect("utf-8")),
            ("CHATVAULT_TLS_KEY", key_path.to_str().expect("utf-8")),
            (
                "CHATVAULT_TLS_CLIENT_CA",
                client_ca_path.to_str().expect("utf-8"),
            ),
            ("CHATVAULT_TLS_RELOAD_SECS", "1"),
        ],
    );
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let admin = server.first_key.clone().expect("first admin key");

    // HTTP/1.1 and HTTP/2 (chosen by ALPN), both with HSTS.
    for (http1_only, version) in [
        (true, reqwest13::Version::HTTP_11),
        (false, reqwest13::Version::HTTP_2),
    ] {
        let response = https(&ca, None, http1_only)
            .get(server.url("/odata/"))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("HTTPS request");
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), version);
        assert_eq!(
            response.headers()["strict-transport-security"],
            "max-age=31536000"
        );
        assert_eq!(peer_certificate(&response), first_der);
        let body: Value = response.json().await.expect("service document");
        assert!(body["value"].as_array().is_some_and(|v| !v.is_empty()));
    }

    // Over TLS the console's session cookie is Secure, with the __Host- prefix.
    let http = https(&ca, None, false);
    let form = http
        .get(server.url("/console/"))
        .send()
        .await
        .expect("form");
    let form_cookie = form.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    assert!(form_cookie.contains("; Secure"), "{form_cookie}");
    let page = form.text().await.expect("page");
    let token = common::sign_in_token(&page);
    let signed = http
        .post(server.url("/console/sign-in"))
        .header("cookie", form_cookie.split(';').next().unwrap_or_default())
        .header("content-type", "application/x-www-form-urlencoded")
        // Key and token are hex: nothing in them needs escaping.
        .body(format!("key={admin}&token={token}&next=%2Fconsole%2F"))
        .send()
        .await
        .expect("sign in");
    assert_eq!(signed.status(), 303);
    let session = signed
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("__Host-chatvault="))
        .expect("the __Host- session cookie")
        .to_owned();
    for flag in ["; Secure", "; HttpOnly", "; SameSite=Strict", "; Path=/"] {
        assert!(session.contains(flag), "{session}");
    }

    // Plain HTTP on the TLS port is told to use HTTPS, in plain HTTP.
    let plain = server.base.replacen("https://", "http://", 1);
    let response = client()
        .get(format!("{plain}/healthz"))
        .send()
        .await
        .expect("plain request");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("error body");
    assert_eq!(body["error"]["code"], "TlsRequired");

    // The webhook takes documents only with a certificate from the chat servers' CA.
    let document = read_sample("answered-with-surveys.json");
    let post = |client: reqwest13::Client| {
        let request = client
            .post(server.url("/api/v1/chats"))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(document.clone());
        async move { request.send().await }
    };
    let refused = post(https(&ca, None, false))
        .await
        .expect("post without certificate");
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.expect("error body");
    assert_eq!(body["error"]["code"], "ClientCertificateRequired");
    let (client_cert, client_key, _) = leaf(
        &clients_ca,
        "chat-server-1",
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    );
    let accepted = post(https(&ca, Some((&client_cert, &client_key)), false))
        .await
        .expect("post with certificate");
    assert_eq!(accepted.status(), 200);
    let stranger = authority("someone else's CA");
    let (other_cert, other_key, _) = leaf(
        &stranger,
        "intruder",
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    );
    assert!(
        post(https(&ca, Some((&other_cert, &other_key)), false))
            .await
            .is_err(),
        "a certificate from an unknown CA fails the handshake"
    );
    // Other routes do not ask browsers and BI tools for a certificate.
    let feed = https(&ca, None, false)
        .get(server.url("/odata/Chats?$select=ChatUID"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("feed");
    assert_eq!(feed.status(), 200);

    // A renewal replaces the files while serving: new connections get the new certificate.
    let (renewed_cert, renewed_key, renewed_der) =
        leaf(&ca, "127.0.0.1", rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    assert_ne!(renewed_der, first_der);
    replace_file(&key_path, &renewed_key);
    replace_file(&cert_path, &renewed_cert);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = https(&ca, None, false)
            .get(server.url("/healthz"))
            .send()
            .await
            .expect("request after renewal");
        if peer_certificate(&response) == renewed_der {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Spawns `serve` with extra arguments and waits for "Ready." or its exit.
fn serve_until_ready(data: &Path, args: &[&str]) -> (bool, String) {
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("CHATVAULT_CONFIG")
        .env("CHATVAULT_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let stdout = child.stdout.take().expect("stdout");
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line == "Ready.");
    let _ = child.kill();
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    let _ = child.wait();
    (ready, stderr)
}

#[test]
fn plain_http_off_loopback_needs_to_be_asked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (ready, stderr) = serve_until_ready(&data, &["--listen", "0.0.0.0:0"]);
    assert!(
        !ready,
        "serve must not listen in plain HTTP on every interface"
    );
    for hint in ["CHATVAULT_TLS_CERT", "--allow-plain-http", "0.0.0.0"] {
        assert!(stderr.contains(hint), "the refusal says {hint}: {stderr}");
    }
    // Nothing was opened: the refusal comes before the data directory.
    assert!(!data.join("archive").exists());
    let (ready, stderr) =
        serve_until_ready(&data, &["--listen", "0.0.0.0:0", "--allow-plain-http"]);
    assert!(ready, "told so explicitly, serve listens: {stderr}");
}

// ---------------------------------------------------------------------------------------
// A data set over several sites, and the feed as Power Query reads it.

/// Generated chats of every site, imported: the data directory.
fn dataset(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let input = dir.join("input.ndjson");
    let input_text = input.to_str().expect("utf-8");
    let (code, _, err) = run(
        &[
            "gen",
            "--chats",
            "800",
            "--seed",
            "34",
            "--start",
            "2024-08-01",
            "--days",
            "20",
            "--out",
            input_text,
        ],
        &data,
    );
    assert_eq!(code, 0, "gen: {err}");
    let (code, _, err) = run(&["import", input_text], &data);
    assert_eq!(code, 0, "import: {err}");
    data
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

/// Power Query's request: its Accept list, compression and version headers, Basic auth.
fn power_query(request: reqwest::RequestBuilder, key: &str) -> reqwest::RequestBuilder {
    request
        .header("accept", POWER_QUERY_ACCEPT)
        .header("accept-encoding", "gzip, deflate")
        .header("odata-maxversion", "4.0")
        .header("maxdataserviceversion", "3.0")
        .basic_auth("powerbi", Some(key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_query_requests_and_keys_in_the_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dataset(dir.path());
    let key = create_key(&data, "read", None);
    let log = dir.path().join("serve.log");
    let server = Server::start_logging_to(&data, &[("CHATVAULT_LOG", "trace")], &log);
    let admin = create_key(&data, "admin", None);
    let http = client();

    // $metadata: XML, because Power Query accepts XML, even ranked below JSON.
    let response = power_query(http.get(server.url("/odata/$metadata")), &key)
        .send()
        .await
        .expect("$metadata");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("text")
        .to_owned();
    assert!(
        content_type.starts_with("application/xml"),
        "{content_type}"
    );
    let encoding = response.headers().get("content-encoding").cloned();
    let bytes = response.bytes().await.expect("body");
    let text = match encoding {
        Some(e) if e == "gzip" => gunzip(&bytes),
        _ => bytes.to_vec(),
    };
    assert!(
        String::from_utf8_lossy(&text).starts_with("<?xml"),
        "XML CSDL"
    );
    // JSON CSDL only when asked for alone, or by $format.
    let json_csdl = http
        .get(server.url("/odata/$metadata?$format=json"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("JSON CSDL");
    assert!(json_csdl.headers()["content-type"]
        .to_str()
        .expect("text")
        .starts_with("application/json"));

    // The service document and every page come gzip-compressed, and decompress to what
    // an uncompressed request gets.
    let compressed = power_query(http.get(server.url("/odata/")), &key)
        .send()
        .await
        .expect("service document");
    assert_eq!(compressed.headers()["content-encoding"], "gzip");
    assert!(compressed.headers()["vary"]
        .to_str()
        .expect("vary")
        .contains("accept-encoding"));
    let service: Value =
        serde_json::from_slice(&gunzip(&compressed.bytes().await.expect("body"))).expect("JSON");
    assert!(service["value"].as_array().is_some_and(|v| v.len() >= 5));
    let mut next = Some(server.url("/odata/ChatLines?$orderby=ChatUID,Seq"));
    let mut pages = 0;
    while let Some(url) = next.take() {
        let zipped = power_query(http.get(&url), &key)
            .header("prefer", "odata.maxpagesize=2000")
            .send()
            .await
            .expect("page");
        assert_eq!(zipped.status(), 200);
        assert_eq!(zipped.headers()["content-encoding"], "gzip", "page {pages}");
        let zipped: Value =
            serde_json::from_slice(&gunzip(&zipped.bytes().await.expect("body"))).expect("JSON");
        let plain: Value = http
            .get(&url)
            .basic_auth("powerbi", Some(&key))
            .header("accept-encoding", "identity")
            .header("prefer", "odata.maxpagesize=2000")
            .send()
            .await
            .expect("plain page")
            .json()
            .await
            .expect("plain JSON");
        assert_eq!(
            zipped, plain,
            "page {pages} decompresses to the uncompressed page"
        );
        next = zipped["@odata.nextLink"].as_str().map(str::to_owned);
        pages += 1;
    }
    assert!(pages >= 2, "the lines span several pages ({pages})");

    // zstd and br when a client asks for them; reports and exports are compressed too.
    for encoding in ["zstd", "br"] {
        let response = http
            .get(server.url("/odata/Chats?$top=50"))
            .bearer_auth(&key)
            .header("accept-encoding", encoding)
            .send()
            .await
            .expect("page");
        assert_eq!(response.headers()["content-encoding"], encoding);
    }
    let zstd_page = http
        .get(server.url("/odata/Chats?$top=50"))
        .bearer_auth(&key)
        .header("accept-encoding", "zstd")
        .send()
        .await
        .expect("page")
        .bytes()
        .await
        .expect("body");
    let page: Value =
        serde_json::from_slice(&zstd::decode_all(&zstd_page[..]).expect("zstd")).expect("JSON");
    assert_eq!(page["value"].as_array().map(Vec::len), Some(50));
    let report = http
        .post(server.url("/api/v1/reports/chats-per-day/run"))
        .bearer_auth(&key)
        .header("accept-encoding", "gzip")
        .json(&json!({"SiteKey": 1, "FromDate": "2024-08-01", "ToDate": "2024-08-31"}))
        .send()
        .await
        .expect("report");
    assert_eq!(report.status(), 200);
    assert_eq!(report.headers()["content-encoding"], "gzip");

    // Power BI's "Web API" credential: the key in the URL, on the feed and exports.
    let response = http
        .get(server.url(&format!("/odata/Chats?$select=ChatUID&api_key={key}")))
        .header("prefer", "odata.maxpagesize=5")
        .send()
        .await
        .expect("feed with api_key");
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await.expect("page");
    let next_link = page["@odata.nextLink"].as_str().expect("a next page");
    assert!(
        !next_link.contains(&key),
        "links never carry the key: {next_link}"
    );
    assert!(!next_link.contains("api_key"), "{next_link}");
    let export = http
        .get(server.url(&format!(
            "/api/v1/export/Chats.csv?$select=ChatUID&api_key={key}"
        )))
        .send()
        .await
        .expect("export with api_key");
    assert_eq!(export.status(), 200);
    assert!(export.text().await.expect("csv").lines().count() > 100);
    let wrong = http
        .get(server.url("/odata/Chats?api_key=cv_not_a_key"))
        .send()
        .await
        .expect("wrong api_key");
    assert_eq!(wrong.status(), 401);
    // Routes other than the feed and exports do not take a key from the URL.
    let stats = http
        .get(server.url(&format!("/api/v1/stats?api_key={key}")))
        .send()
        .await
        .expect("stats");
    assert_eq!(stats.status(), 401);

    // The key is in no log line, metric or audit record.
    let metrics = http
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(!metrics.contains(&key));
    let audit = http
        .get(server.url("/api/v1/audit?limit=1000"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("audit")
        .text()
        .await
        .expect("audit text");
    assert!(audit.contains("export.run"), "the export was audited");
    assert!(!audit.contains(&key));
    drop(server);
    let log_text = std::fs::read_to_string(&log).expect("server log");
    assert!(
        log_text.contains("request"),
        "the log was written at trace level"
    );
    assert!(!log_text.contains(&key), "the key leaked into the log");
}

// ---------------------------------------------------------------------------------------
// What a site-restricted caller can learn.

async fn get_json(http: &reqwest::Client, url: String, key: &str) -> (u16, Value) {
    let response = http.get(url).bearer_auth(key).send().await.expect("GET");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn site_keys(rows: &Value) -> BTreeSet<i64> {
    rows["value"]
        .as_array()
        .expect("a collection")
        .iter()
        .map(|r| r["SiteKey"].as_i64().expect("SiteKey"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_restricted_caller_sees_nothing_of_other_sites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dataset(dir.path());
    let site = 3;
    let limited = create_key(&data, "read", Some(&site.to_string()));
    let admin = create_key(&data, "admin", None);
    let server = Server::start(&data, &[]);
    let http = client();

    let (_, all) = get_json(
        &http,
        server.url("/odata/Chats?$apply=groupby((SiteKey))"),
        &admin,
    )
    .await;
    assert!(
        site_keys(&all).len() >= 3,
        "the data has several sites: {all}"
    );
    let (_, mine) = get_json(
        &http,
        server.url(&format!("/odata/Chats/$count?$filter=SiteKey eq {site}")),
        &admin,
    )
    .await;
    let mine = mine.as_u64().expect("a count");
    assert!(mine > 0);
    let (_, other) = get_json(
        &http,
        server.url(&format!(
            "/odata/Chats?$filter=SiteKey ne {site}&$top=1&$select=ChatUID"
        )),
        &admin,
    )
    .await;
    let other = other["value"][0]["ChatUID"]
        .as_str()
        .expect("another site's chat")
        .to_owned();

    // Statistics: only this site's chats, and no totals that span every site.
    let (status, stats) = get_json(&http, server.url("/api/v1/stats"), &limited).await;
    assert_eq!(status, 200);
    assert_eq!(stats["chats"], mine);
    assert_eq!(stats["sites"], json!([site]));
    assert!(stats.get("ingest").is_none(), "{stats}");

    // Another site's chat does not exist, by key or through its navigations.
    for path in [
        format!("/odata/Chats('{other}')"),
        format!("/odata/Chats('{other}')/Lines"),
        format!("/odata/Chats('{other}')/Lines/$count"),
        format!("/odata/Chats('{other}')/Tags"),
        format!("/odata/Chats('{other}')/SurveyAnswers"),
        format!("/odata/Chats('{other}')/PageViews"),
    ] {
        let (status, _) = get_json(&http, server.url(&path), &limited).await;
        assert_eq!(status, 404, "{path}");
        let (status, _) = get_json(&http, server.url(&path), &admin).await;
        assert_eq!(status, 200, "{path} for a key that sees every site");
    }
    // A chat that exists nowhere answers the same.
    let (status, _) = get_json(
        &http,
        server.url("/odata/Chats('000000000000000000000000')/Lines"),
        &admin,
    )
    .await;
    assert_eq!(status, 404);

    // Every set, grouped, expanded or searched, holds only this site.
    for set in [
        "Chats",
        "ChatLines",
        "SurveyAnswers",
        "PageViews",
        "ChatTags",
    ] {
        let (status, groups) = get_json(
            &http,
            server.url(&format!("/odata/{set}?$apply=groupby((SiteKey))")),
            &limited,
        )
        .await;
        assert_eq!(status, 200, "{set}");
        assert_eq!(site_keys(&groups), BTreeSet::from([site]), "{set}");
    }
    let (_, expanded) = get_json(
        &http,
        server.url("/odata/Chats?$expand=Lines&$select=ChatUID,SiteKey&$top=200"),
        &limited,
    )
    .await;
    assert_eq!(site_keys(&expanded), BTreeSet::from([site]));
    let (status, found) = get_json(
        &http,
        server.url("/odata/ChatLines?$search=the&$top=500"),
        &limited,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(site_keys(&found), BTreeSet::from([site]));

    // Exports and reports.
    let csv = http
        .get(server.url("/api/v1/export/Chats.csv?$select=ChatUID,SiteKey"))
        .bearer_auth(&limited)
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("csv");
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len() as u64, mine);
    assert!(
        rows.iter().all(|r| r.ends_with(&format!(",{site}"))),
        "{csv}"
    );
    let report = |report_site: i64| {
        http.post(server.url("/api/v1/reports/chats-per-day/run"))
            .bearer_auth(&limited)
            .json(
                &json!({"SiteKey": report_site, "FromDate": "2024-08-01", "ToDate": "2024-08-31"}),
            )
            .send()
    };
    assert_eq!(report(site).await.expect("report").status(), 200);
    let other_site = *site_keys(&all)
        .iter()
        .find(|s| **s != site)
        .expect("another site");
    assert_eq!(report(other_site).await.expect("report").status(), 403);
}

// ---------------------------------------------------------------------------------------
// Guessing credentials, and who reads the metrics.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_keys_is_slowed_then_refused_and_metrics_need_a_credential() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let reader = create_key(&data, "read", None);
    // 127.0.0.3 plays a proxy in front of serve.
    let server = Server::start(
        &data,
        &[
            ("CHATVAULT_METRICS_TOKEN", "scrape-token-1"),
            ("CHATVAULT_TRUSTED_PROXIES", "127.0.0.3"),
        ],
    );
    let admin = create_key(&data, "admin", None);
    let from_here = client();
    let elsewhere = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client on 127.0.0.2");

    let mut statuses = Vec::new();
    let mut slowest_refusal = Duration::ZERO;
    let guessing = Instant::now();
    for attempt in 0..100 {
        let started = Instant::now();
        let response = from_here
            .get(server.url("/odata/Chats"))
            .bearer_auth(format!("cv_wrong_{attempt:03}"))
            .send()
            .await
            .expect("guess");
        let status = response.status().as_u16();
        if status == 401 {
            slowest_refusal = slowest_refusal.max(started.elapsed());
        }
        if status == 429 {
            let wait: u64 = response.headers()["retry-after"]
                .to_str()
                .expect("text")
                .parse()
                .expect("seconds");
            assert!(wait >= 1);
        }
        statuses.push(status);
    }
    let failed = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(failed + refused, 100, "{statuses:?}");
    // The burst (20), and one more for every 6 s the guessing took (10 a minute).
    let earned = (guessing.elapsed().as_secs_f64() / 6.0).ceil() as usize;
    assert!(
        failed <= 20 + earned,
        "at most the burst is checked: {failed}"
    );
    assert!(refused >= 75, "{statuses:?}");
    assert!(
        slowest_refusal >= Duration::from_millis(300),
        "failures were slowed: {slowest_refusal:?}"
    );
    // The guesser's address is refused even with a right key; another address is not.
    let blocked = from_here
        .get(server.url("/odata/"))
        .bearer_auth(&reader)
        .send()
        .await
        .expect("right key from the guesser");
    assert_eq!(blocked.status(), 429);
    let other = elsewhere
        .get(server.url("/odata/"))
        .bearer_auth(&reader)
        .send()
        .await
        .expect("right key from elsewhere");
    assert_eq!(other.status(), 200);

    // Behind a trusted proxy, each client is braked by the address the proxy forwards.
    let proxy = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)))
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client on 127.0.0.3");
    let via_proxy = |client: &str, key: &str| {
        proxy
            .get(server.url("/odata/"))
            .header("x-forwarded-for", client)
            .bearer_auth(key)
            .send()
    };
    let mut proxied = Vec::new();
    for attempt in 0..30 {
        let response = via_proxy("198.51.100.7", &format!("cv_wrong_{attempt:03}"))
            .await
            .expect("guess through the proxy");
        proxied.push(response.status().as_u16());
    }
    assert_eq!(proxied.last(), Some(&429), "{proxied:?}");
    let guesser = via_proxy("198.51.100.7", &reader).await.expect("right key");
    assert_eq!(guesser.status(), 429);
    let neighbour = via_proxy("198.51.100.8", &reader).await.expect("right key");
    assert_eq!(
        neighbour.status(),
        200,
        "another client of the same proxy gets in"
    );

    // /metrics: the token or an admin key, nothing else.
    let metrics = |key: Option<&str>| {
        let request = elsewhere.get(server.url("/metrics"));
        match key {
            Some(k) => request.bearer_auth(k),
            None => request,
        }
        .send()
    };
    assert_eq!(metrics(None).await.expect("metrics").status(), 401);
    assert_eq!(metrics(Some(&reader)).await.expect("metrics").status(), 403);
    assert_eq!(metrics(Some(&admin)).await.expect("metrics").status(), 200);
    let text = metrics(Some("scrape-token-1"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for name in [
        "chatvault_auth_failures_total",
        "chatvault_auth_refused_total",
    ] {
        assert!(text.contains(name), "{name} in {text}");
    }
}

// ---------------------------------------------------------------------------------------
// Single sign-on.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_sign_on_tokens_map_to_scopes_and_sites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dataset(dir.path());
    let issuer = issuer::TestIssuer::start();
    let audience = "api://chatvault-test";
    // A rotation right after start must be followed at once, not after the usual pause
    // between two fetches of the issuer's keys.
    let config = dir.path().join("chatvault.toml");
    std::fs::write(&config, "[auth.oidc]\nmin_refresh_secs = 0\n").expect("config");
    let admin = create_key(&data, "admin", None);
    let server = Server::start(
        &data,
        &[
            ("CHATVAULT_CONFIG", config.to_str().expect("utf-8")),
            ("CHATVAULT_OIDC_ISSUER", issuer.base().as_str()),
            ("CHATVAULT_OIDC_AUDIENCE", audience),
        ],
    );
    let http = client();
    let now = chrono::Utc::now().timestamp();
    let claims = |roles: &[&str]| {
        json!({
            "iss": issuer.base(), "aud": audience, "sub": "s-1", "oid": "0000-ana",
            "preferred_username": "ana@example.com", "roles": roles,
            "iat": now, "nbf": now - 5, "exp": now + 600,
        })
    };

    // The challenge Power BI's "Organizational account" starts its sign-in from.
    let challenge = http
        .get(server.url("/odata/"))
        .send()
        .await
        .expect("anonymous");
    assert_eq!(challenge.status(), 401);
    assert_eq!(
        challenge.headers()["www-authenticate"],
        format!("Bearer authorization_uri=\"{}/authorize\"", issuer.base()).as_str()
    );
    let empty_bearer = http
        .get(server.url("/odata/"))
        .header("authorization", "Bearer")
        .send()
        .await
        .expect("empty bearer");
    assert_eq!(empty_bearer.status(), 401);

    // Roles become scopes; Chatvault.Site.N roles limit the sites.
    let reader = issuer.token(claims(&["Chatvault.Read"]));
    let (status, _) = get_json(&http, server.url("/odata/Chats?$top=1"), &reader).await;
    assert_eq!(status, 200);
    let post = http
        .post(server.url("/api/v1/chats"))
        .bearer_auth(&reader)
        .header("content-type", "application/json")
        .body(read_sample("answered-with-surveys.json"))
        .send()
        .await
        .expect("post");
    assert_eq!(post.status(), 403, "read does not carry ingest");
    let site_two = issuer.token(claims(&["Chatvault.Read", "Chatvault.Site.2"]));
    let (_, stats) = get_json(&http, server.url("/api/v1/stats"), &site_two).await;
    let (_, count) = get_json(
        &http,
        server.url("/odata/Chats/$count?$filter=SiteKey eq 2"),
        &admin,
    )
    .await;
    assert_eq!(stats["chats"], count);
    let (_, groups) = get_json(
        &http,
        server.url("/odata/Chats?$apply=groupby((SiteKey))"),
        &site_two,
    )
    .await;
    assert_eq!(site_keys(&groups), BTreeSet::from([2]));

    // An admin token's actions are audited under the user's name.
    let admin_token = issuer.token(claims(&["Chatvault.Admin"]));
    let hold = http
        .post(server.url("/api/v1/holds"))
        .bearer_auth(&admin_token)
        .json(&json!({"site_key": 2, "reason": "litigation 42"}))
        .send()
        .await
        .expect("hold");
    assert_eq!(hold.status(), 201, "{:?}", hold.text().await);
    let (_, audit) = get_json(&http, server.url("/api/v1/audit?action=hold"), &admin).await;
    let entry = &audit["entries"][0];
    assert_eq!(entry["actor"], "user:ana@example.com (0000-ana)");

    // Bad tokens are refused with 401 and say why.
    let mut expired = claims(&["Chatvault.Read"]);
    expired["exp"] = json!(now - 3600);
    let mut wrong_audience = claims(&["Chatvault.Read"]);
    wrong_audience["aud"] = json!("api://someone-else");
    let good = issuer.token(claims(&["Chatvault.Read"]));
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged_claims = b64(&serde_json::to_vec(&claims(&["Chatvault.Admin"])).expect("json"));
    parts[1] = &forged_claims;
    let tampered = parts.join(".");
    let unsigned = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(&serde_json::to_vec(&claims(&["Chatvault.Admin"])).expect("json"))
    );
    for (what, token) in [
        ("expired", issuer.token(expired)),
        ("wrong audience", issuer.token(wrong_audience)),
        ("tampered", tampered),
        ("alg none", unsigned),
    ] {
        let response = http
            .get(server.url("/odata/Chats?$top=1"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("bad token");
        assert_eq!(response.status(), 401, "{what}");
    }

    // The issuer rotates its key: tokens signed with the new one get in.
    issuer.rotate();
    let rotated = issuer.token(claims(&["Chatvault.Read"]));
    let (status, _) = get_json(&http, server.url("/odata/Chats?$top=1"), &rotated).await;
    assert_eq!(status, 200);
}
