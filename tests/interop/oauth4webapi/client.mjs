// panva's oauth4webapi, a client from another ecosystem, against spiffe-broker over mTLS.
//
//   node client.mjs <discover|token|introspect|revoke|dpop-flow> '<json config>'
//
// config: issuer, ca (PEM file of the trust bundle), server_id (the SPIFFE ID the server must present), and for
// the calls that authenticate: client_id, cert and key (the caller's X.509-SVID chain and key, PEM files).
// token: audience, scope; introspect and revoke: token, token_type_hint (optional).
// dpop-flow (no client certificate at all): client_id, assertion_key (PKCS#8 PEM of the registered ES256 key),
// assertion_kid, audience, scope, api_url and api_id (the demo API and the SPIFFE ID it must present). It gets a
// token with private_key_jwt (RFC 7523 §2.2) and DPoP (RFC 9449) from a fresh DPoP key, retrying once on
// use_dpop_nonce (§8) as oauth4webapi documents, then calls the API three ways: with the token and a proof
// (protectedResourceRequest), with the token as DPoP but no proof, and with the token as Bearer.
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

async function assertionKey() {
  const pem = readFileSync(config.assertion_key, 'utf8')
  const der = Buffer.from(pem.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64')
  const key = await crypto.subtle.importKey('pkcs8', der, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign'])
  return { key, kid: config.assertion_kid }
}

async function dpopToken(as, client, options) {
  const auth = oauth.PrivateKeyJwt(await assertionKey())
  const keyPair = await oauth.generateKeyPair('ES256')
  const DPoP = oauth.DPoP(client, keyPair)
  const parameters = new URLSearchParams({ audience: config.audience, scope: config.scope })
  let nonceRetries = 0
  for (;;) {
    try {
      const response = await oauth.clientCredentialsGrantRequest(as, client, auth, parameters, { ...options, DPoP })
      const token = await oauth.processClientCredentialsResponse(as, client, response)
      return { DPoP, nonceRetries, token, dpopJwk: await crypto.subtle.exportKey('jwk', keyPair.publicKey) }
    } catch (error) {
      if (nonceRetries === 0 && oauth.isDPoPNonceError(error)) {
        nonceRetries += 1 // the handle took the nonce from the DPoP-Nonce header: the next proof carries it
        continue
      }
      throw error
    }
  }
}

async function answer(response) {
  const text = await response.text()
  return { status: response.status, www_authenticate: response.headers.get('www-authenticate'), body: text }
}

async function dpopFlow(as, client, options) {
  const { DPoP, nonceRetries, token, dpopJwk } = await dpopToken(as, client, options)
  const api = new URL(config.api_url)
  const apiFetch = apiTransport()
  const withProof = await oauth.protectedResourceRequest(token.access_token, 'GET', api, new Headers(), null, {
    ...apiFetch,
    DPoP,
  })
  const plain = (scheme) =>
    apiFetch[oauth.customFetch](api.href, { headers: { authorization: `${scheme} ${token.access_token}` } })
  return {
    nonce_retries: nonceRetries,
    dpop_jwk: dpopJwk,
    token,
    with_proof: await answer(withProof),
    dpop_without_proof: await answer(await plain('DPoP')),
    as_bearer: await answer(await plain('Bearer')),
  }
}

function apiTransport() {
  const agent = new Agent({ connect: { ca: readFileSync(config.ca), checkServerIdentity: spiffeIdCheck(config.api_id) } })
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
    case 'dpop-flow':
      return await dpopFlow(as, client, options)
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
