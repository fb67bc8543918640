// Call an API the way a spiffe-broker token must be used (docs/apps.md), with Node's standard library only:
// the token from the sidecar's Unix socket, mTLS with the same X.509-SVID the token is bound to (RFC 8705 §3).
//
// The SVID comes from files, as `spire-agent api fetch x509 -write DIR` or spiffe-helper write them
// (svid.0.pem: the chain, svid.0.key, bundle.0.pem); spiffe-helper rewrites them on rotation, and the token is
// fetched until its cnf.x5t#S256 names the certificate in the files.
// Environment: SVID_DIR, SIDECAR_SOCKET, API_URL, AUDIENCE, and optionally SCOPE and API_ID (the API's SPIFFE
// ID; without it any server certificate that chains to the bundle is accepted).
import { createHash, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

const env = (name) => process.env[name] ?? "";

function get(module, options) {
  return new Promise((resolve, reject) => {
    const request = module.request({ method: "GET", timeout: 10_000, ...options }, (response) => {
      const chunks = [];
      response.on("data", (chunk) => chunks.push(chunk));
      response.on("end", () => resolve({ status: response.statusCode, body: Buffer.concat(chunks).toString() }));
    });
    request.on("timeout", () => request.destroy(new Error("timed out")));
    request.on("error", reject);
    request.end();
  });
}

async function sidecarToken() {
  const query = new URLSearchParams({ audience: env("AUDIENCE") });
  if (env("SCOPE")) query.set("scope", env("SCOPE"));
  const { status, body } = await get(http, { socketPath: env("SIDECAR_SOCKET"), path: `/v1/token?${query}` });
  const answer = JSON.parse(body);
  if (status !== 200) throw new Error(`sidecar: ${status} ${answer.error}: ${answer.error_description ?? ""}`);
  return answer.access_token;
}

// The token's cnf.x5t#S256, read without verifying the signature (the API verifies it).
function binding(token) {
  const payload = JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString());
  return payload?.cnf?.["x5t#S256"];
}

function readSvid() {
  const chain = readFileSync(join(env("SVID_DIR"), "svid.0.pem"), "utf8");
  const leaf = new X509Certificate(chain); // the first certificate of the chain
  return {
    cert: chain,
    key: readFileSync(join(env("SVID_DIR"), "svid.0.key"), "utf8"),
    ca: readFileSync(join(env("SVID_DIR"), "bundle.0.pem"), "utf8"),
    x5t: createHash("sha256").update(leaf.raw).digest("base64url"),
  };
}

async function boundCredentials() {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const svid = readSvid();
    const token = await sidecarToken();
    if (binding(token) === svid.x5t) return { svid, token };
    if (Date.now() > deadline) throw new Error("the sidecar's token is not bound to the SVID in SVID_DIR");
    await sleep(100); // a rotation in flight: the files or the sidecar catch up within a moment
  }
}

// SPIFFE authenticates the server by its URI SAN, not by DNS name (X509-SVID §2).
function checkSpiffeId(_host, cert) {
  const uris = (cert.subjectaltname ?? "").split(", ").filter((san) => san.startsWith("URI:"));
  if (uris.length !== 1) return new Error("server certificate is not an X509-SVID (exactly one URI SAN)");
  if (env("API_ID") && uris[0] !== `URI:${env("API_ID")}`) return new Error(`unexpected server ID ${uris[0]}`);
  return undefined;
}

const { svid, token } = await boundCredentials();
const url = new URL(env("API_URL"));
const response = await get(https, {
  host: url.hostname,
  port: url.port,
  path: url.pathname + url.search,
  headers: { Authorization: `Bearer ${token}` },
  cert: svid.cert,
  key: svid.key,
  ca: svid.ca,
  checkServerIdentity: checkSpiffeId,
  agent: false,
});
console.log(response.status, response.body);
process.exit(response.status === 200 ? 0 : 1);
