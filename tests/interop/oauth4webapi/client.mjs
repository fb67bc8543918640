// panva's oauth4webapi, a client from another ecosystem, against spiffe-broker over mTLS.
//
//   node client.mjs <discover|token|introspect|revoke> '<json config>'
//
// config: issuer, ca (PEM file of the trust bundle), server_id (the SPIFFE ID the server must present), and for
// the calls that authenticate: client_id, cert and key (the caller's X.509-SVID chain and key, PEM files).
// token: audience, scope; introspect and revoke: token, token_type_hint (optional).
//
// Every call goes through oauth4webapi's own request and response functions (discoveryRequest +
// processDiscoveryResponse, RFC 8414; clientCredentialsGrantRequest, RFC 6749 §4.4; introspectionRequest +
// processIntrospectionResponse, RFC 7662; revocationRequest + processRevocationResponse, RFC 7009), with
// TlsClientAuth (RFC 8705 §2.1). Transport: undici's fetch with an Agent that presents the X.509-SVID and accepts
// only a server certificate whose one URI SAN is server_id (SPIFFE X509-SVID §4: the ID, not a DNS name).
//
// Prints one JSON object: {"ok": true, "result": ...} or {"ok": false, "error": {...what oauth4webapi threw}}.
import { readFileSync } from 'node:fs'
import * as oauth from 'oauth4webapi'
import { Agent, fetch } from 'undici'

const [op, configJson] = process.argv.slice(2)
const config = JSON.parse(configJson)

function spiffeIdCheck(expected) {
  return (_host, cert) => {
    const uris = (cert.subjectaltname ?? '').split(', ').filter((san) => san.startsWith('URI:'))
    if (uris.length === 1 && uris[0] === `URI:${expected}`) return undefined
    return new Error(`server certificate is not an X.509-SVID of ${expected}`)
  }
}

function transport() {
  const connect = { ca: readFileSync(config.ca), checkServerIdentity: spiffeIdCheck(config.server_id) }
  if (config.cert) {
    connect.cert = readFileSync(config.cert)
    connect.key = readFileSync(config.key)
  }
  const agent = new Agent({ connect })
  return { [oauth.customFetch]: (url, init) => fetch(url, { ...init, dispatcher: agent }) }
}

function hinted(options) {
  if (!config.token_type_hint) return options
  return { ...options, additionalParameters: { token_type_hint: config.token_type_hint } }
}

async function run(options) {
  const issuer = new URL(config.issuer)
  const discovery = await oauth.discoveryRequest(issuer, { ...options, algorithm: 'oauth2' })
  const as = await oauth.processDiscoveryResponse(issuer, discovery)
  const client = { client_id: config.client_id ?? 'anonymous' }
  const auth = oauth.TlsClientAuth()
  switch (op) {
    case 'discover':
      return as
    case 'token': {
      const parameters = new URLSearchParams({ audience: config.audience, scope: config.scope })
      const response = await oauth.clientCredentialsGrantRequest(as, client, auth, parameters, options)
      return await oauth.processClientCredentialsResponse(as, client, response)
    }
    case 'introspect': {
      const response = await oauth.introspectionRequest(as, client, auth, config.token, hinted(options))
      const body = await oauth.processIntrospectionResponse(as, client, response)
      return { status: response.status, cache_control: response.headers.get('cache-control'), body }
    }
    case 'revoke': {
      const response = await oauth.revocationRequest(as, client, auth, config.token, hinted(options))
      await oauth.processRevocationResponse(response)
      return { status: response.status }
    }
    default:
      throw new Error(`unknown operation ${op}`)
  }
}

function described(error) {
  const cause = error.cause
  return {
    name: error.name,
    code: error.code ?? null,
    status: error.status ?? null,
    error: error.error ?? null,
    error_description: error.error_description ?? null,
    challenges: error instanceof oauth.WWWAuthenticateChallengeError ? cause : null,
    message: error.message,
    cause_code: cause?.code ?? null,
  }
}

try {
  console.log(JSON.stringify({ ok: true, result: await run(transport()) }))
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: described(error) }))
}
