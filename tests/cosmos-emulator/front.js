#!/usr/bin/env node
// Test-only Azure Cosmos DB emulator for the chatvault-ingest Cosmos source tests.
//
// @vercel/cosmosdb-server speaks HTTP/1.1 only, while the Rust SDK (azure_data_cosmos)
// negotiates HTTP/2 only, so the emulator's request handler is served here from an
// HTTP/2 TLS server (HTTP/1.1 still allowed) with three adaptations the driver needs:
//   - no `connection` response header (forbidden in HTTP/2);
//   - `host` taken from `:authority` when absent (the handler builds URLs from it);
//   - partition-key-range ids as strings, as the real service sends them.
// Two things the emulator does not do are added so the tests can exercise them:
//   - the master-key signature of every request is checked (the emulator accepts any
//     key), answering 401 like the service, so a wrong key can be tested;
//   - `POST /__chatvault/faults` makes the next N document queries fail (429 with
//     x-ms-retry-after-ms, or 503), so throttling and outages can be tested; with
//     `match`, only queries whose text contains it count, and `skip` lets that many of
//     them through first (so a listing can fail after its first page).
//
// Listens on 127.0.0.1 on a free port and prints the port alone on the first line of
// stdout. Exits when stdin closes, so a test that dies never leaves it behind.
//
// Environment (all optional):
//   COSMOS_EMULATOR_KEY   the account key clients must sign with (default: the
//                         well-known public emulator key)
//   COSMOS_FRONT_CERT, COSMOS_FRONT_KEY   PEM files to serve instead of the package's
//                         self-signed certificate
//   COSMOS_FRONT_DEBUG    when set, every refused signature and every query a `match`
//                         fault applies to is described on stderr

"use strict";

const crypto = require("crypto");
const fs = require("fs");
const http2 = require("http2");
const path = require("path");
const { Readable } = require("stream");
const { createHttpsServer } = require("@vercel/cosmosdb-server");

const WELL_KNOWN_EMULATOR_KEY =
  "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";
const accountKey = Buffer.from(
  process.env.COSMOS_EMULATOR_KEY || WELL_KNOWN_EMULATOR_KEY,
  "base64"
);

const packageDir = path.dirname(
  require.resolve("@vercel/cosmosdb-server/package.json")
);
const tls = {
  cert: fs.readFileSync(process.env.COSMOS_FRONT_CERT || path.join(packageDir, "cert.pem")),
  key: fs.readFileSync(process.env.COSMOS_FRONT_KEY || path.join(packageDir, "key.pem")),
};

// The package's server is never started: only its request handler is used. The
// handler learns the account's advertised address on the inner server's 'listening'
// event, which is replayed once the front knows its own address.
const inner = createHttpsServer();
const emulatorHandler = inner.listeners("request")[0];

// Pending injected failures for document queries:
// { status, remaining, retryAfterMs, match, skip }.
let fault = null;

function signatureCandidates(method, urlPath, date) {
  // The signed string names the resource type and the resource link. A feed
  // (odd number of segments: /dbs/d/colls/c/docs) is signed with the parent's
  // link; a single resource (even number) with its own. Links may be ids or rids.
  const segments = urlPath.split("/").filter((s) => s.length > 0).map(decodeURIComponent);
  let type = "";
  let link = "";
  if (segments.length % 2 === 1) {
    type = segments[segments.length - 1];
    link = segments.slice(0, -1).join("/");
  } else if (segments.length > 0) {
    type = segments[segments.length - 2];
    link = segments.join("/");
  }
  const links = new Set([link, link.toLowerCase()]);
  if (segments.length >= 2) {
    // rid-addressed requests sign only the last rid, lowercased.
    const last = segments.length % 2 === 1 ? segments[segments.length - 2] : segments[segments.length - 1];
    links.add(last.toLowerCase());
  }
  return [...links].map(
    (l) => `${method.toLowerCase()}\n${type.toLowerCase()}\n${l}\n${date.toLowerCase()}\n\n`
  );
}

function authorized(req, urlPath) {
  const header = req.headers["authorization"];
  const date = req.headers["x-ms-date"] || req.headers["date"] || "";
  if (!header) return false;
  // Not URLSearchParams: it would turn the '+' of the base64 signature into a space.
  const token = new Map();
  try {
    for (const part of decodeURIComponent(header).split("&")) {
      const eq = part.indexOf("=");
      if (eq > 0) token.set(part.slice(0, eq), part.slice(eq + 1));
    }
  } catch (err) {
    return false;
  }
  const sig = token.get("sig");
  if (token.get("type") !== "master" || !sig) return false;
  const given = Buffer.from(sig, "base64");
  return signatureCandidates(req.method, urlPath, date).some((text) => {
    const expected = crypto.createHmac("sha256", accountKey).update(text, "utf8").digest();
    return expected.length === given.length && crypto.timingSafeEqual(expected, given);
  });
}

function reply(res, status, headers, body) {
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(JSON.stringify(body));
}

function handleControl(req, res) {
  let raw = "";
  req.setEncoding("utf8");
  req.on("data", (chunk) => (raw += chunk));
  req.on("end", () => {
    try {
      const spec = JSON.parse(raw || "{}");
      fault = spec.count > 0
        ? {
            status: spec.status || 429,
            remaining: spec.count,
            retryAfterMs: spec.retryAfterMs || 50,
            match: spec.match || null,
            skip: spec.skip || 0,
          }
        : null;
      reply(res, 200, {}, { ok: true });
    } catch (err) {
      reply(res, 400, {}, { message: String(err) });
    }
  });
}

function handle(req, res) {
  if (!req.headers.host && req.headers[":authority"]) {
    req.headers.host = req.headers[":authority"];
  }
  const urlPath = (req.url || "/").split("?")[0];
  if (urlPath === "/__chatvault/faults" && req.method === "POST") {
    handleControl(req, res);
    return;
  }
  if (!authorized(req, urlPath)) {
    if (process.env.COSMOS_FRONT_DEBUG) {
      process.stderr.write(`401 ${req.method} ${req.url} date=${req.headers["x-ms-date"]} auth=${req.headers["authorization"]}\n`);
    }
    req.resume();
    reply(res, 401, { "x-ms-activity-id": crypto.randomUUID() }, {
      code: "Unauthorized",
      message:
        "The input authorization token can't serve the request. The wrong key is being used " +
        "or the expected payload is not built as per the protocol.",
    });
    return;
  }
  const isQuery = req.method === "POST" && /\/docs\/?$/.test(urlPath) &&
    String(req.headers["content-type"] || "").startsWith("application/query+json");
  if (fault && isQuery && fault.remaining > 0) {
    if (!fault.match) {
      req.resume();
      injectFailure(res);
      return;
    }
    // Only the query text can tell queries apart: read the (small) body, then hand the
    // emulator a stream that replays it (its handler reads only headers, method, url
    // and the body stream).
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      let hit = fault && fault.remaining > 0 && fault.match && body.toString("utf8").includes(fault.match);
      if (hit && fault.skip > 0) {
        fault.skip -= 1;
        hit = false;
      }
      if (process.env.COSMOS_FRONT_DEBUG && fault && fault.match && body.toString("utf8").includes(fault.match)) {
        process.stderr.write(`${hit ? "failing" : "serving"} query ${body.toString("utf8").slice(0, 120)}\n`);
      }
      if (hit) {
        injectFailure(res);
        return;
      }
      const replay = new Readable({ read() {} });
      replay.push(body);
      replay.push(null);
      replay.headers = req.headers;
      replay.method = req.method;
      replay.url = req.url;
      forward(replay, res, urlPath);
    });
    return;
  }
  forward(req, res, urlPath);
}

function injectFailure(res) {
  fault.remaining -= 1;
  const { status, retryAfterMs } = fault;
  if (fault.remaining === 0) fault = null;
  const headers = { "x-ms-activity-id": crypto.randomUUID() };
  if (status === 429) {
    headers["x-ms-retry-after-ms"] = String(retryAfterMs);
    headers["x-ms-substatus"] = "3200";
  }
  reply(res, status, headers, {
    code: status === 429 ? "TooManyRequests" : "ServiceUnavailable",
    message: status === 429 ? "Request rate is large (injected by the test)." : "Injected outage.",
  });
}

// Serves a request with the emulator, adapted to HTTP/2 and the Rust SDK.
function forward(req, res, urlPath) {
  // HTTP/2 forbids connection-specific headers; the emulator always sets one.
  const setHeader = res.setHeader.bind(res);
  res.setHeader = (name, value) => {
    if (String(name).toLowerCase() === "connection") return res;
    return setHeader(name, value);
  };
  if (/\/pkranges\/?$/.test(urlPath)) {
    const end = res.end.bind(res);
    res.end = (chunk, ...rest) => {
      try {
        const body = JSON.parse(String(chunk));
        if (Array.isArray(body.PartitionKeyRanges)) {
          for (const range of body.PartitionKeyRanges) range.id = String(range.id);
          chunk = JSON.stringify(body);
        }
      } catch (err) {
        // Not JSON: pass it through unchanged.
      }
      return end(chunk, ...rest);
    };
  }
  emulatorHandler(req, res);
}

const server = http2.createSecureServer({ ...tls, allowHTTP1: true }, handle);
server.on("sessionError", () => {});
server.listen(0, "127.0.0.1", () => {
  const address = server.address();
  inner.address = () => address;
  inner.emit("listening");
  process.stdout.write(`${address.port}\n`);
});

process.stdin.on("data", () => {});
process.stdin.on("end", () => process.exit(0));
process.stdin.on("error", () => process.exit(0));
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
