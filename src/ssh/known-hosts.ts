import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import { appendFile, mkdir, open, readFile, stat } from 'node:fs/promises'
import { dirname } from 'node:path'

/**
 * known_hosts as OpenSSH writes and reads it (sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT"):
 *
 *     [@revoked|@cert-authority] patterns keytype base64-key [comment]
 *
 * `patterns` is a comma-separated list of host names, `[host]:port` for ports other than 22,
 * wildcards `*` and `?`, negations `!pattern`, or one hashed entry `|1|base64(salt)|base64(hmac)`.
 */
export interface KnownHostEntry {
  /** `revoked`: this key must never be accepted. `cert-authority`: ignored (ssh2 has no host certificates). */
  marker: 'revoked' | 'cert-authority' | null
  /** The patterns exactly as written (a hashed entry is one pattern). */
  patterns: string[]
  keyType: string
  keyBase64: string
  /** The key in wire format: what ssh2's hostVerifier receives. */
  key: Buffer
  /** 1-based line number in the file, for messages. */
  line: number
}

export interface ParsedKnownHosts {
  entries: KnownHostEntry[]
  /** Lines that could not be read (reported, never fatal: OpenSSH skips them too). */
  invalid: { line: number; text: string; reason: string }[]
}

export function parseKnownHosts(text: string): ParsedKnownHosts {
  const entries: KnownHostEntry[] = []
  const invalid: ParsedKnownHosts['invalid'] = []
  const lines = text.split(/\r?\n/)
  lines.forEach((raw, index) => {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) return
    const fields = line.split(/\s+/)
    let marker: KnownHostEntry['marker'] = null
    if (fields[0]?.startsWith('@')) {
      const name = fields.shift()!
      if (name === '@revoked') marker = 'revoked'
      else if (name === '@cert-authority') marker = 'cert-authority'
      else {
        invalid.push({ line: index + 1, text: raw, reason: `unknown marker ${name}` })
        return
      }
    }
    const [patterns, keyType, keyBase64] = fields
    if (!patterns || !keyType || !keyBase64) {
      invalid.push({ line: index + 1, text: raw, reason: 'expected: patterns keytype key' })
      return
    }
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(keyBase64)) {
      invalid.push({ line: index + 1, text: raw, reason: 'key is not base64' })
      return
    }
    const key = Buffer.from(keyBase64, 'base64')
    // The wire format starts with the key type as an SSH string; a mismatch means a corrupt line.
    if (wireKeyType(key) !== keyType) {
      invalid.push({ line: index + 1, text: raw, reason: `key data is not a ${keyType} key` })
      return
    }
    entries.push({ marker, patterns: patterns.split(','), keyType, keyBase64, key, line: index + 1 })
  })
  return { entries, invalid }
}

/** The key type named inside a wire-format public key (its first SSH string), or null. */
export function wireKeyType(key: Buffer): string | null {
  if (key.length < 4) return null
  const len = key.readUInt32BE(0)
  if (len === 0 || len > 64 || key.length < 4 + len) return null
  return key.subarray(4, 4 + len).toString('latin1')
}

/** The name known_hosts uses for a host: `host` on port 22, `[host]:port` otherwise. */
export function knownHostName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`
}

/** OpenSSH's fingerprint: `SHA256:` + unpadded base64 of the key's SHA-256. */
export function fingerprint(key: Buffer): string {
  return `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`
}

const globs = new Map<string, RegExp>()

/** Glob as in ssh_config/known_hosts: `*` any run, `?` one character; case-insensitive. */
export function matchGlob(pattern: string, text: string): boolean {
  // Every host looks itself up in every line of the file: most patterns are plain names, compared without a RegExp.
  if (!/[*?]/.test(pattern)) return pattern.toLowerCase() === text.toLowerCase()
  let re = globs.get(pattern)
  if (!re) {
    const source = pattern
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.')
    globs.set(pattern, (re = new RegExp(`^${source}$`, 'i')))
  }
  return re.test(text)
}

function matchHashed(pattern: string, name: string): boolean {
  const parts = pattern.split('|')
  // ['', '1', salt, hmac]
  if (parts.length !== 4 || parts[1] !== '1') return false
  const salt = Buffer.from(parts[2]!, 'base64')
  const expected = Buffer.from(parts[3]!, 'base64')
  const actual = createHmac('sha1', salt).update(name).digest()
  return expected.length === actual.length && timingSafeEqual(expected, actual)
}

/**
 * Does a pattern list name this host? OpenSSH rules: any negated pattern that matches rejects the
 * line; otherwise one positive match is enough. On port 22 the bare host name is matched; on other
 * ports only `[host]:port` (OpenSSH does the same: a port-22 entry does not vouch for port 2222).
 */
export function patternsMatch(patterns: readonly string[], host: string, port: number): boolean {
  const name = knownHostName(host, port)
  let matched = false
  for (const pattern of patterns) {
    const negated = pattern.startsWith('!')
    const body = negated ? pattern.slice(1) : pattern
    const hit = body.startsWith('|') ? matchHashed(body, name) : matchGlob(body, name)
    if (hit && negated) return false
    if (hit) matched = true
  }
  return matched
}

export interface HostKeys {
  /** Keys that may be accepted for this host. */
  known: KnownHostEntry[]
  /** Keys that must be refused (from `@revoked` lines that name this host). */
  revoked: KnownHostEntry[]
}

/** The keys a known_hosts file lists for a host (cert-authority lines are ignored). */
export function lookupHostKeys(entries: readonly KnownHostEntry[], host: string, port: number): HostKeys {
  const known: KnownHostEntry[] = []
  const revoked: KnownHostEntry[] = []
  for (const entry of entries) {
    if (entry.marker === 'cert-authority') continue
    if (!patternsMatch(entry.patterns, host, port)) continue
    if (entry.marker === 'revoked') revoked.push(entry)
    else known.push(entry)
  }
  return { known, revoked }
}

/** Read and parse a known_hosts file; a missing file is an empty one. */
export async function readKnownHosts(file: string): Promise<ParsedKnownHosts> {
  try {
    return parseKnownHosts(await readFile(file, 'utf8'))
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { entries: [], invalid: [] }
    throw error
  }
}

/**
 * Add a host key (accept-new). Writes `[host]:port` when the port is not 22. A missing file is
 * created 0600 and a missing parent directory 0700, as ssh does for ~/.ssh.
 */
export async function appendKnownHost(file: string, host: string, port: number, keyType: string, keyB64: string): Promise<void> {
  const dir = dirname(file)
  await mkdir(dir, { recursive: true, mode: 0o700 })
  let prefix = ''
  const size = await stat(file).then(
    (s) => s.size,
    () => -1,
  )
  if (size > 0) {
    // Keep lines whole when the file does not end with a newline.
    const handle = await open(file, 'r')
    try {
      const last = Buffer.alloc(1)
      await handle.read(last, 0, 1, size - 1)
      if (last[0] !== 0x0a) prefix = '\n'
    } finally {
      await handle.close()
    }
  }
  // One write with O_APPEND: lines from hosts connecting in parallel do not interleave.
  await appendFile(file, `${prefix}${knownHostName(host, port)} ${keyType} ${keyB64}\n`, { mode: 0o600 })
}

/** Host-key algorithm names ssh2 negotiates for a known_hosts key type. */
export function algorithmsForKeyType(keyType: string): string[] {
  switch (keyType) {
    case 'ssh-rsa':
      return ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa']
    case 'ssh-ed25519':
    case 'ecdsa-sha2-nistp256':
    case 'ecdsa-sha2-nistp384':
    case 'ecdsa-sha2-nistp521':
    case 'ssh-dss':
      return [keyType]
    default:
      return []
  }
}

/** ssh2 1.17's own preference order (protocol/constants.js DEFAULT_SERVER_HOST_KEY, ed25519 first). */
export const DEFAULT_HOST_KEY_ALGORITHMS = [
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'rsa-sha2-512',
  'rsa-sha2-256',
  'ssh-rsa',
]

/**
 * The algorithm-order trap: the server picks the first algorithm in OUR list that it supports, so a
 * host known only by its RSA key would offer ed25519 and fail verification. Like OpenSSH, put the
 * algorithms of the keys we know first, then the rest (so a host whose known key type vanished is
 * reported as a changed key, not as a vague negotiation failure).
 */
export function hostKeyAlgorithmOrder(knownKeyTypes: readonly string[]): string[] {
  const supported = [...DEFAULT_HOST_KEY_ALGORITHMS, 'ssh-dss']
  const first = supported.filter((alg) => knownKeyTypes.some((t) => algorithmsForKeyType(t).includes(alg)))
  return [...first, ...DEFAULT_HOST_KEY_ALGORITHMS.filter((alg) => !first.includes(alg))]
}
