import { request } from 'node:https'

/** A Matrix client talking HTTPS to Apache through a mapped port, trusting only the given CA (no -k). */
export class MatrixClient {
  token?: string
  /** `target.token`: an access token to start with (one issued before, e.g. before an adoption). */
  constructor(
    readonly target: { port: number; hostname: string; ca: string; token?: string | undefined },
    readonly host = '127.0.0.1',
  ) {
    this.token = target.token
  }

  async call<T = Record<string, unknown>>(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; json: T; headers: Record<string, string | string[] | undefined>; text: string }> {
    // A Buffer is sent as it is (media uploads); anything else as JSON.
    const payload = body === undefined ? undefined : Buffer.isBuffer(body) ? body : JSON.stringify(body)
    const contentType = Buffer.isBuffer(body) ? 'application/octet-stream' : 'application/json'
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
            ...(payload ? { 'content-type': contentType, 'content-length': Buffer.byteLength(payload) } : {}),
            ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
          },
          timeout: 120_000,
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

  /** Raw bytes in and out (media upload and download). */
  async raw(
    method: string,
    path: string,
    body?: Buffer,
    contentType?: string,
  ): Promise<{ status: number; body: Buffer; headers: Record<string, string | string[] | undefined> }> {
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
            ...(body ? { 'content-type': contentType ?? 'application/octet-stream', 'content-length': body.length } : {}),
            ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
          },
          timeout: 180_000,
        },
        (res) => {
          const chunks: Buffer[] = []
          res.on('data', (c: Buffer) => chunks.push(c))
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), headers: res.headers }))
        },
      )
      req.on('error', reject)
      req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)))
      if (body) req.write(body)
      req.end()
    })
  }

  /** Upload a file to the media repository; resolves with its mxc:// URI. */
  async upload(content: Buffer, contentType: string, filename: string): Promise<string> {
    const r = await this.raw('POST', `/_matrix/media/v3/upload?filename=${encodeURIComponent(filename)}`, content, contentType)
    const json = JSON.parse(r.body.toString('utf8') || '{}') as { content_uri?: string }
    if (r.status !== 200 || !json.content_uri) throw new Error(`upload failed: ${r.status} ${r.body.toString('utf8').slice(0, 300)}`)
    return json.content_uri
  }

  async login(user: string, password: string): Promise<void> {
    const r = await this.call<{ access_token: string }>('POST', '/_matrix/client/v3/login', {
      type: 'm.login.password',
      identifier: { type: 'm.id.user', user },
      password,
    })
    if (r.status !== 200) throw new Error(`login as ${user} failed: ${r.status} ${r.text}`)
    this.token = r.json.access_token
  }
}

/** Raw bytes over HTTPS to the same target (media upload and download). */
export function binaryRequest(
  client: MatrixClient,
  method: string,
  path: string,
  body?: Buffer,
  contentType = 'application/octet-stream',
): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: client.host,
        port: client.target.port,
        servername: client.target.hostname,
        ca: client.target.ca,
        method,
        path,
        headers: {
          host: client.target.hostname,
          ...(body ? { 'content-type': contentType, 'content-length': body.length } : {}),
          ...(client.token ? { authorization: `Bearer ${client.token}` } : {}),
        },
        timeout: 180_000,
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }))
      },
    )
    req.on('error', reject)
    req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)))
    req.end(body)
  })
}

/** The bodies of a room's latest events (newest first; undefined for events without one). */
export async function roomBodies(client: MatrixClient, roomId: string, limit = 100): Promise<(string | undefined)[]> {
  const r = await client.call<{ chunk: { content: { body?: string } }[] }>(
    'GET',
    `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=${limit}`,
  )
  if (r.status !== 200) throw new Error(`reading ${roomId}'s messages failed: ${r.status} ${r.text}`)
  return r.json.chunk.map((e) => e.content.body)
}

/** A media file by its mxc:// URI, through the authenticated download API. */
export function downloadMedia(client: MatrixClient, mxc: string): Promise<{ status: number; body: Buffer }> {
  const [, server, id] = /^mxc:\/\/([^/]+)\/(.+)$/.exec(mxc) ?? []
  if (!server || !id) throw new Error(`${mxc} is not an mxc:// URI`)
  return binaryRequest(client, 'GET', `/_matrix/client/v1/media/download/${server}/${id}`)
}
