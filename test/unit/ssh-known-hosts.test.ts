import { execFile } from 'node:child_process'
import { mkdtemp, readFile, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { beforeAll, describe, expect, it } from 'vitest'
import { checkHostKey } from '../../src/ssh/host-key.js'
import {
  appendKnownHost,
  fingerprint,
  hostKeyAlgorithmOrder,
  lookupHostKeys,
  parseKnownHosts,
  patternsMatch,
  readKnownHosts,
} from '../../src/ssh/known-hosts.js'

const run = promisify(execFile)

interface Key {
  type: string
  b64: string
  key: Buffer
  /** What `ssh-keygen -lf` prints. */
  fp: string
}

async function makeKey(dir: string, type: 'ed25519' | 'rsa' | 'ecdsa', name: string): Promise<Key> {
  const file = join(dir, name)
  await run('ssh-keygen', ['-q', '-t', type, ...(type === 'rsa' ? ['-b', '2048'] : []), '-N', '', '-f', file])
  const [keyType, b64] = (await readFile(`${file}.pub`, 'utf8')).trim().split(' ') as [string, string]
  const fp = (await run('ssh-keygen', ['-lf', `${file}.pub`])).stdout.split(' ')[1]!
  return { type: keyType, b64, key: Buffer.from(b64, 'base64'), fp }
}

describe('known_hosts', () => {
  let dir: string
  let ed: Key
  let rsa: Key
  let other: Key
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mp-kh-'))
    ;[ed, rsa, other] = await Promise.all([makeKey(dir, 'ed25519', 'ed'), makeKey(dir, 'rsa', 'rsa'), makeKey(dir, 'ed25519', 'other')])
  })

  it('computes the fingerprint exactly as ssh-keygen -l prints it', () => {
    expect(fingerprint(ed.key)).toBe(ed.fp)
    expect(fingerprint(rsa.key)).toBe(rsa.fp)
  })

  it('parses patterns, [host]:port, markers, comments, blank lines, and skips junk', () => {
    const text = [
      '# a comment',
      '',
      `alpha,10.0.0.1 ${ed.type} ${ed.b64} user@box`,
      `[beta.example.org]:2222 ${rsa.type} ${rsa.b64}`,
      `@revoked * ${other.type} ${other.b64}`,
      `@cert-authority *.example.org ${ed.type} ${ed.b64}`,
      'broken-line-without-key',
      `gamma ssh-ed25519 not!base64`,
      `delta ssh-rsa ${ed.b64}`, // type does not match the key data
      `@frobnicate x ${ed.type} ${ed.b64}`,
    ].join('\n')
    const { entries, invalid } = parseKnownHosts(text)
    expect(entries.map((e) => [e.marker, e.patterns, e.keyType, e.line])).toEqual([
      [null, ['alpha', '10.0.0.1'], 'ssh-ed25519', 3],
      [null, ['[beta.example.org]:2222'], 'ssh-rsa', 4],
      ['revoked', ['*'], 'ssh-ed25519', 5],
      ['cert-authority', ['*.example.org'], 'ssh-ed25519', 6],
    ])
    expect(invalid.map((i) => i.line)).toEqual([7, 8, 9, 10])
  })

  it('matches host patterns like OpenSSH: port 22 bare, other ports only as [host]:port, globs, negation', () => {
    expect(patternsMatch(['alpha'], 'alpha', 22)).toBe(true)
    expect(patternsMatch(['alpha'], 'alpha', 2222)).toBe(false)
    expect(patternsMatch(['[alpha]:2222'], 'alpha', 2222)).toBe(true)
    expect(patternsMatch(['[alpha]:2222'], 'alpha', 22)).toBe(false)
    expect(patternsMatch(['*.example.org'], 'matrix.example.org', 22)).toBe(true)
    expect(patternsMatch(['*.example.org'], 'example.org', 22)).toBe(false) // the same glob again (compiled once)
    expect(patternsMatch(['*.example.org', '!db.example.org'], 'db.example.org', 22)).toBe(false)
    expect(patternsMatch(['!db.example.org', '*.example.org'], 'web.example.org', 22)).toBe(true)
    expect(patternsMatch(['host?'], 'host1', 22)).toBe(true)
    expect(patternsMatch(['host?'], 'host12', 22)).toBe(false)
    expect(patternsMatch(['[127.0.0.1]:22*'], '127.0.0.1', 2201)).toBe(true)
    expect(patternsMatch(['ALPHA'], 'alpha', 22)).toBe(true)
    // A dot in a pattern is a dot, not "any character".
    expect(patternsMatch(['10.0.0.1'], '10a0b0c1', 22)).toBe(false)
  })

  it('matches hashed entries written by ssh-keygen -H (HMAC-SHA1), for port 22 and [host]:port', async () => {
    const file = join(dir, 'hashed')
    await writeFile(file, `alpha.example.org ${ed.type} ${ed.b64}\n[127.0.0.1]:2201 ${rsa.type} ${rsa.b64}\n`)
    await run('ssh-keygen', ['-H', '-f', file])
    const text = await readFile(file, 'utf8')
    expect(text).not.toContain('alpha.example.org')
    expect(text).toMatch(/^\|1\|/)
    const { entries } = parseKnownHosts(text)
    expect(lookupHostKeys(entries, 'alpha.example.org', 22).known.map((e) => e.keyBase64)).toEqual([ed.b64])
    expect(lookupHostKeys(entries, '127.0.0.1', 2201).known.map((e) => e.keyBase64)).toEqual([rsa.b64])
    expect(lookupHostKeys(entries, '127.0.0.1', 22).known).toEqual([])
    expect(lookupHostKeys(entries, 'beta.example.org', 22).known).toEqual([])
  })

  it('lookupHostKeys ignores @cert-authority lines and separates @revoked ones', () => {
    const { entries } = parseKnownHosts(
      [`@cert-authority * ${ed.type} ${ed.b64}`, `@revoked alpha ${other.type} ${other.b64}`, `alpha ${rsa.type} ${rsa.b64}`].join('\n'),
    )
    const keys = lookupHostKeys(entries, 'alpha', 22)
    expect(keys.known.map((e) => e.keyType)).toEqual(['ssh-rsa'])
    expect(keys.revoked.map((e) => e.keyBase64)).toEqual([other.b64])
  })

  describe('checkHostKey', () => {
    const base = { address: '127.0.0.1', port: 2201, file: '/x/known_hosts' }

    it('accepts a listed key under either policy', () => {
      const { entries } = parseKnownHosts(`[127.0.0.1]:2201 ${rsa.type} ${rsa.b64}\n[127.0.0.1]:2201 ${ed.type} ${ed.b64}\n`)
      for (const policy of ['strict', 'accept-new'] as const) {
        expect(checkHostKey({ ...base, entries, key: ed.key, policy })).toEqual({ accept: true, learn: false })
      }
    })

    it('refuses an unknown host under strict, with the file, the fix, and the fingerprint', () => {
      const verdict = checkHostKey({ ...base, entries: [], key: ed.key, policy: 'strict' })
      expect(verdict.accept).toBe(false)
      if (verdict.accept) return
      expect(verdict.reason).toBe('unknown')
      expect(verdict.message).toContain('host key for [127.0.0.1]:2201 is not in /x/known_hosts; verify it and add it (ssh-keyscan')
      expect(verdict.message).toContain('or set ssh.hostKeyPolicy: accept-new')
      expect(verdict.message).toContain(ed.fp)
    })

    it('learns an unknown host under accept-new', () => {
      expect(checkHostKey({ ...base, entries: [], key: ed.key, policy: 'accept-new' })).toEqual({
        accept: true,
        learn: true,
        keyType: 'ssh-ed25519',
        keyBase64: ed.b64,
      })
    })

    it('refuses a CHANGED key under both policies, naming file, pattern, fingerprint and ssh-keygen -R', () => {
      const { entries } = parseKnownHosts(`# c\n[127.0.0.1]:2201 ${ed.type} ${ed.b64}\n`)
      for (const policy of ['strict', 'accept-new'] as const) {
        const verdict = checkHostKey({ ...base, entries, key: other.key, policy })
        expect(verdict.accept).toBe(false)
        if (verdict.accept) continue
        expect(verdict.reason).toBe('changed')
        expect(verdict.fingerprint).toBe(other.fp)
        expect(verdict.message).toContain('/x/known_hosts')
        expect(verdict.message).toContain('pattern [127.0.0.1]:2201')
        expect(verdict.message).toContain('line 2')
        expect(verdict.message).toContain(other.fp)
        expect(verdict.message).toContain("ssh-keygen -R '[127.0.0.1]:2201' -f /x/known_hosts")
      }
    })

    it('refuses a revoked key even when it is also listed as known', () => {
      const { entries } = parseKnownHosts(`[127.0.0.1]:2201 ${ed.type} ${ed.b64}\n@revoked * ${ed.type} ${ed.b64}\n`)
      const verdict = checkHostKey({ ...base, entries, key: ed.key, policy: 'accept-new' })
      expect(verdict).toMatchObject({ accept: false, reason: 'revoked' })
    })
  })

  it('puts the algorithms of known key types first (the algorithm-order trap)', () => {
    expect(hostKeyAlgorithmOrder(['ssh-rsa']).slice(0, 3)).toEqual(['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'])
    expect(hostKeyAlgorithmOrder(['ecdsa-sha2-nistp256'])[0]).toBe('ecdsa-sha2-nistp256')
    expect(hostKeyAlgorithmOrder([])[0]).toBe('ssh-ed25519')
    // Nothing is dropped: a host that lost its known key type still negotiates, and is then reported as changed.
    expect(new Set(hostKeyAlgorithmOrder(['ssh-rsa']))).toEqual(new Set(hostKeyAlgorithmOrder([])))
  })

  describe('appendKnownHost', () => {
    it('creates the directory 0700 and the file 0600, writes [host]:port for other ports, bare host for 22', async () => {
      const file = join(dir, 'new', 'sub', 'known_hosts')
      await appendKnownHost(file, '127.0.0.1', 2201, ed.type, ed.b64)
      await appendKnownHost(file, 'alpha.example.org', 22, rsa.type, rsa.b64)
      expect((await stat(join(dir, 'new', 'sub'))).mode & 0o777).toBe(0o700)
      expect((await stat(file)).mode & 0o777).toBe(0o600)
      expect(await readFile(file, 'utf8')).toBe(`[127.0.0.1]:2201 ${ed.type} ${ed.b64}\nalpha.example.org ${rsa.type} ${rsa.b64}\n`)
      const { entries } = await readKnownHosts(file)
      expect(lookupHostKeys(entries, '127.0.0.1', 2201).known).toHaveLength(1)
    })

    it('keeps lines whole when the file does not end with a newline, and ssh-keygen -F finds the entry', async () => {
      const file = join(dir, 'no-newline')
      await writeFile(file, `alpha ${ed.type} ${ed.b64}`)
      await appendKnownHost(file, '127.0.0.1', 2299, rsa.type, rsa.b64)
      expect((await readFile(file, 'utf8')).split('\n')).toEqual([
        `alpha ${ed.type} ${ed.b64}`,
        `[127.0.0.1]:2299 ${rsa.type} ${rsa.b64}`,
        '',
      ])
      const found = await run('ssh-keygen', ['-F', '[127.0.0.1]:2299', '-f', file])
      expect(found.stdout).toContain(rsa.b64)
    })

    it('treats a missing file as empty', async () => {
      expect(await readKnownHosts(join(dir, 'does-not-exist'))).toEqual({ entries: [], invalid: [] })
    })
  })
})
