import { request } from 'node:https'

/** A Matrix client talking HTTPS to Apache through a mapped port, trusting only the given CA (no -k). */
export class MatrixClient {
  token?: string
  constructor(
    readonly target: { port: number; hostname: string; ca: string },
    readonly host = '127.0.0.1',
  ) {}

  async call<T = Record<string, unknown>>(method: string, path: string, body?: unknown): Promise<{ status: number; json: T; headers: Record<string, string | string[] | undefined>; text: string }> {
    const payload = body === undefined ? undefined : JSON.stringify(body)
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host: this.host,
          port: this.target.port,
          servername: this.target.hostname,
          ca: this.target.ca,
          method,
          path,
          headers: {
            host: this.target.hostname,
            ...(payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}),
            ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
          },
          timeout: 30_000,
        },
        (res) => {
          let text = ''
          res.setEncoding('utf8')
          res.on('data', (c: string) => (text += c))
          res.on('end', () => {
            let json = {} as T
            try {
              json = JSON.parse(text) as T
            } catch {
              /* not JSON: callers look at text */
            }
            resolve({ status: res.statusCode ?? 0, json, headers: res.headers, text })
          })
        },
      )
      req.on('error', reject)
      req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)))
      if (payload) req.write(payload)
      req.end()
    })
  }

  async login(user: string, password: string): Promise<void> {
    const r = await this.call<{ access_token: string }>('POST', '/_matrix/client/v3/login', { type: 'm.login.password', identifier: { type: 'm.id.user', user }, password })
    if (r.status !== 200) throw new Error(`login as ${user} failed: ${r.status} ${r.text}`)
    this.token = r.json.access_token
  }
}
