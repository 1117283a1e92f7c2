/**
 * A scripted OAuth 2.0 client of the Matrix Authentication Service: discovery through the homeserver,
 * dynamic client registration, the authorization-code flow with PKCE through MAS's own login and consent
 * forms (cookies + csrf, as a browser posts them), the token exchange, refresh and revocation. Every
 * request goes to the test host's mapped https port with the real host name (SNI, Host), trusting only
 * the test CA. Flow as run against MAS 1.22 (notes research-24 §8).
 */
import { createHash, randomBytes } from 'node:crypto'
import { request } from 'node:https'

export interface HttpsResponse {
  status: number
  headers: Record<string, string | string[] | undefined>
  text: string
}

/** HTTPS to https://<name>/... on 127.0.0.1:<port> with SNI and Host set to <name>. */
export function httpsTo(port: number, ca: string) {
  return (url: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<HttpsResponse> =>
    new Promise((resolve, reject) => {
      const u = new URL(url)
      const req = request(
        {
          host: '127.0.0.1',
          port,
          servername: u.hostname,
          ca,
          method: init.method ?? 'GET',
          path: u.pathname + u.search,
          headers: {
            host: u.hostname,
            ...(init.body !== undefined ? { 'content-length': String(Buffer.byteLength(init.body)) } : {}),
            ...init.headers,
          },
          timeout: 60_000,
        },
        (res) => {
          let text = ''
          res.setEncoding('utf8')
          res.on('data', (c: string) => (text += c))
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }))
        },
      )
      req.on('error', reject)
      req.on('timeout', () => req.destroy(new Error(`${url} timed out`)))
      if (init.body !== undefined) req.write(init.body)
      req.end()
    })
}

type Fetch = ReturnType<typeof httpsTo>

export interface AuthMetadata {
  issuer: string
  registration_endpoint: string
  authorization_endpoint: string
  token_endpoint: string
  revocation_endpoint: string
}

export interface Tokens {
  access_token: string
  refresh_token: string
  expires_in: number
}

const b64url = (b: Buffer) => b.toString('base64url')
const form = (o: Record<string, string>) => ({
  method: 'POST',
  headers: { 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams(o).toString(),
})

function parsed<T>(r: HttpsResponse, what: string): T {
  if (r.status < 200 || r.status >= 300) throw new Error(`${what}: HTTP ${r.status}: ${r.text.slice(0, 400)}`)
  return JSON.parse(r.text) as T
}

export class OAuthClient {
  readonly #fetch: Fetch
  readonly #jar = new Map<string, string>()
  readonly redirectUri = 'http://127.0.0.1:9/callback'
  clientId = ''
  meta!: AuthMetadata

  constructor(
    fetch: Fetch,
    readonly homeserver: string,
  ) {
    this.#fetch = fetch
  }

  /** Synapse serves MAS's metadata (MSC2965); then a native public client registers itself (MSC2966). */
  async discoverAndRegister(): Promise<AuthMetadata> {
    this.meta = parsed<AuthMetadata>(await this.#fetch(`${this.homeserver}/_matrix/client/v1/auth_metadata`), 'auth_metadata')
    const body = JSON.stringify({
      client_name: 'matrix-provision e2e',
      client_uri: 'https://e2e.matrix-provision.invalid/',
      application_type: 'native',
      redirect_uris: [this.redirectUri],
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
    })
    this.clientId = parsed<{ client_id: string }>(
      await this.#fetch(this.meta.registration_endpoint, { method: 'POST', headers: { 'content-type': 'application/json' }, body }),
      'client registration',
    ).client_id
    return this.meta
  }

  async #req(url: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}) {
    const cookie = [...this.#jar].map(([k, v]) => `${k}=${v}`).join('; ')
    const r = await this.#fetch(url, { ...init, headers: { ...init.headers, ...(cookie ? { cookie } : {}) } })
    const set = r.headers['set-cookie']
    for (const c of Array.isArray(set) ? set : set ? [set] : []) {
      const pair = c.split(';')[0]!
      const i = pair.indexOf('=')
      this.#jar.set(pair.slice(0, i).trim(), pair.slice(i + 1).trim())
    }
    return r
  }

  /** Follows redirects inside MAS until a page (200) or the client's redirect URI. */
  async #follow(
    url: string,
    init?: { method?: string; headers?: Record<string, string>; body?: string },
  ): Promise<{ done?: string; url: string; html: string }> {
    let r = await this.#req(url, init)
    for (let i = 0; i < 10 && r.status >= 300 && r.status < 400; i++) {
      const next = new URL(String(r.headers.location), url).toString()
      if (next.startsWith(this.redirectUri)) return { done: next, url, html: '' }
      url = next
      r = await this.#req(url)
    }
    if (r.status !== 200) throw new Error(`${url}: HTTP ${r.status}: ${r.text.slice(0, 300)}`)
    return { url, html: r.text }
  }

  /** The authorization-code flow with PKCE (S256) through MAS's login and consent forms. */
  async login(username: string, password: string, deviceId: string, extraScope = ''): Promise<Tokens> {
    const verifier = b64url(randomBytes(32))
    const state = b64url(randomBytes(12))
    const authz = new URL(this.meta.authorization_endpoint)
    const params = {
      response_type: 'code',
      response_mode: 'query',
      client_id: this.clientId,
      redirect_uri: this.redirectUri,
      scope: `openid urn:matrix:client:api:* urn:matrix:client:device:${deviceId}${extraScope ? ` ${extraScope}` : ''}`,
      state,
      code_challenge: b64url(createHash('sha256').update(verifier).digest()),
      code_challenge_method: 'S256',
    }
    for (const [k, v] of Object.entries(params)) authz.searchParams.set(k, v)
    const csrf = (html: string) => /name="csrf" value="([^"]+)"/.exec(html)?.[1] ?? ''
    let step = await this.#follow(authz.toString())
    if (!step.done && /name="password"/.test(step.html))
      step = await this.#follow(step.url, form({ csrf: csrf(step.html), username, password }))
    if (!step.done && /name="csrf"/.test(step.html) && !/name="password"/.test(step.html))
      step = await this.#follow(step.url, form({ csrf: csrf(step.html) }))
    if (!step.done) {
      const message = /(?:text-critical font-medium|cpd-form-error-message)[^>]*>\s*([^<]+)/.exec(step.html)?.[1]?.trim()
      throw new Error(`the login did not reach the redirect URI; at ${step.url}: ${message ?? step.html.slice(0, 300)}`)
    }
    const callback = new URL(step.done)
    if (callback.searchParams.get('state') !== state) throw new Error(`state mismatch in ${step.done}`)
    const code = callback.searchParams.get('code')
    if (!code) throw new Error(`no code in ${step.done}`)
    return parsed<Tokens>(
      await this.#fetch(
        this.meta.token_endpoint,
        form({ grant_type: 'authorization_code', code, redirect_uri: this.redirectUri, client_id: this.clientId, code_verifier: verifier }),
      ),
      'token',
    )
  }

  async refresh(refreshToken: string): Promise<Tokens> {
    return parsed<Tokens>(
      await this.#fetch(
        this.meta.token_endpoint,
        form({ grant_type: 'refresh_token', refresh_token: refreshToken, client_id: this.clientId }),
      ),
      'refresh',
    )
  }

  /** Logout (RFC 7009 revocation): MAS ends the session and deletes the device in Synapse. */
  async revoke(accessToken: string): Promise<number> {
    return (
      await this.#fetch(
        this.meta.revocation_endpoint,
        form({ token: accessToken, token_type_hint: 'access_token', client_id: this.clientId }),
      )
    ).status
  }
}
