import { describe, expect, it } from 'vitest'
import { inspect } from 'node:util'
import { parseProbeOutput, probeScript } from '../../src/facts/probe.js'
import { execFileSync } from 'node:child_process'
import { parseFileState } from '../../src/facts/files.js'
import { parseDpkgQuery } from '../../src/facts/packages.js'
import { parseUnitState } from '../../src/facts/systemd.js'
import { parseListening, parseOsRelease } from '../../src/facts/system.js'
import { defineFact } from '../../src/facts/fact.js'
import { maskSecrets, MASK, Secret } from '../../src/secret.js'
import { maskSensitiveText, unifiedDiff } from '../../src/report/unified-diff.js'
import { passwordMatches, scramVerifier } from '../../src/resources/postgres.js'
import { createHash } from 'node:crypto'

describe('fact probe', () => {
  it('frames many facts in one script and splits the output back, with exit codes', () => {
    const facts = [
      defineFact('a', 'echo one; echo two', (o) => o),
      defineFact('b', 'printf "no newline"; exit 3', (o) => o),
      defineFact('c', 'true', (o) => o),
    ]
    // Run the real script in a local sh: the same text the host runs.
    const out = execFileSync('sh', ['-s'], { input: probeScript(facts) }).toString()
    const parts = parseProbeOutput(out, 3)
    expect(parts[0]).toEqual({ stdout: 'one\ntwo\n', code: 0 })
    expect(parts[1]).toEqual({ stdout: 'no newline', code: 3 })
    expect(parts[2]).toEqual({ stdout: '', code: 0 })
  })
  it('rejects truncated output (a cut connection) instead of parsing garbage', () => {
    expect(() => parseProbeOutput('@@MP-FACT 0\nhalf', 1)).toThrow(/missing the end/)
  })
})

describe('fact parsers', () => {
  it('os-release of Debian 12 and Ubuntu 20.04', () => {
    expect(parseOsRelease('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n')).toMatchObject({ id: 'debian', versionId: '12', codename: 'bookworm' })
    expect(parseOsRelease('NAME="Ubuntu"\nVERSION_ID="20.04"\nID=ubuntu\nUBUNTU_CODENAME=focal\n')).toMatchObject({ id: 'ubuntu', versionId: '20.04', codename: 'focal' })
  })
  it('file state: regular file, symlink, missing', () => {
    expect(parseFileState('regular file|root|matrix-synapse|640\nabc123  /etc/x\n', 0)).toEqual({ exists: true, type: 'file', owner: 'root', group: 'matrix-synapse', mode: 0o640, sha256: 'abc123' })
    expect(parseFileState('symbolic link|root|root|777\n/var/www/element/v1\n', 0)).toMatchObject({ type: 'symlink', linkTarget: '/var/www/element/v1' })
    expect(parseFileState('', 1)).toEqual({ exists: false })
  })
  it('dpkg-query keeps only installed packages', () => {
    const m = parseDpkgQuery('apache2\tii \t2.4.62-1\nredis-server\trc \t5:7.0\nlibc6:amd64\tii \t2.36\n')
    expect([...m]).toEqual([['apache2', '2.4.62-1'], ['libc6', '2.36']])
  })
  it('systemctl show', () => {
    const s = parseUnitState('LoadState=loaded\nActiveState=active\nUnitFileState=enabled\nActiveEnterTimestampMonotonic=123\n')
    expect(s).toEqual({ loaded: true, active: true, activeState: 'active', enabled: true, unitFileState: 'enabled', activeEnterMonotonic: '123' })
    expect(parseUnitState('LoadState=not-found\nActiveState=inactive\nUnitFileState=\n').loaded).toBe(false)
  })
  it('ss -Htlnpe with socket owners, also when the process is hidden', () => {
    const l = parseListening(
      'LISTEN 0 511 127.0.0.1:8008 0.0.0.0:* users:(("python",pid=5,fd=3)) uid:998 ino:1 sk:1\n' +
        'LISTEN 0 244 127.0.0.1:5432 0.0.0.0:* uid:105 ino:2 sk:2\n' +
        'LISTEN 0 128 [::]:22 [::]:* users:(("sshd",pid=1,fd=4)) ino:3 sk:3\n---\nroot:0\npostgres:105\nmatrix-synapse:998\n',
    )
    expect(l).toEqual([
      { address: '127.0.0.1', port: 8008, process: 'python', user: 'matrix-synapse' },
      { address: '127.0.0.1', port: 5432, process: '', user: 'postgres' },
      { address: '::', port: 22, process: 'sshd', user: 'root' },
    ])
  })
})

describe('secrets', () => {
  it('print as a mask everywhere but reveal()', () => {
    const s = new Secret('hunter2-very-secret', 'env X')
    expect(`${s}`).toBe(MASK)
    expect(JSON.stringify({ s })).toBe(`{"s":"${MASK}"}`)
    expect(inspect({ s })).not.toContain('hunter2')
    expect(s.reveal()).toBe('hunter2-very-secret')
    expect(maskSecrets('password is hunter2-very-secret!')).toBe(`password is ${MASK}!`)
  })
  it('sensitive diffs mask secret-named keys even for values never loaded', () => {
    expect(maskSensitiveText('macaroon_secret_key: abcdefg\nserver_name: x')).toBe(`macaroon_secret_key: ${MASK}\nserver_name: x`)
    // Redis directives have no ':' or '=': the old password of a rotation is only on the host.
    expect(maskSensitiveText('port 32992\nrequirepass "old-pw-never-loaded"\nmasterauth x1')).toBe(`port 32992\nrequirepass ${MASK}\nmasterauth ${MASK}`)
  })
})

describe('unified diff', () => {
  it('shows changed lines with context and hunk headers', () => {
    const d = unifiedDiff('a\nb\nc\nd\n', 'a\nB\nc\nd\ne\n', '/etc/x')
    expect(d).toBe('--- /etc/x\n+++ /etc/x\n@@ -1,4 +1,5 @@\n a\n-b\n+B\n c\n d\n+e\n')
    expect(unifiedDiff('same\n', 'same\n', '/x')).toBe('')
  })
})

describe('postgres passwords', () => {
  it('a SCRAM verifier matches its password and no other', () => {
    const v = scramVerifier('s3cret-pass')
    expect(v).toMatch(/^SCRAM-SHA-256\$4096:/)
    expect(passwordMatches(v, 'u', 's3cret-pass')).toBe(true)
    expect(passwordMatches(v, 'u', 'other')).toBe(false)
  })
  it('an md5 hash (Postgres 12 default) is recognised', () => {
    const stored = 'md5' + createHash('md5').update('pw' + 'synapse_user').digest('hex')
    expect(passwordMatches(stored, 'synapse_user', 'pw')).toBe(true)
  })
  it('matches a verifier Postgres itself produced (RFC 7677 test vector style)', () => {
    // Verifier made by PostgreSQL 15 for password "pencil".
    const pg = scramVerifier('pencil', Buffer.from('W22ZaJ0SNY7soEsUEjb6gQ==', 'base64'), 4096)
    expect(passwordMatches(pg, 'x', 'pencil')).toBe(true)
  })
})
