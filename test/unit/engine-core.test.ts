import { describe, expect, it } from 'vitest'
import type { Change } from '../../src/resources/resource.js'
import { inspect } from 'node:util'
import { gatherFacts, parseProbeOutput, prepareProbe, probeScript } from '../../src/facts/probe.js'
import { execFileSync, spawn } from 'node:child_process'
import { fileState, fileStateBatch, parseFileState, readTextFile } from '../../src/facts/files.js'
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { StaleFacts } from '../../src/engine/stale-facts.js'
import type { Connection } from '../../src/ssh/connection.js'
import { raw, sh, type ShellCommand } from '../../src/core/shell.js'
import { debPackages, parseDpkgQuery } from '../../src/facts/packages.js'
import { parseUnitState, unitState, unitStateBatch } from '../../src/facts/systemd.js'
import { aptListsPresent, freeDiskMiB, parseFreeMiB, parseListening, parseOsRelease } from '../../src/facts/system.js'
import { defineFact, type Fact } from '../../src/facts/fact.js'
import { maskSecrets, MASK, Secret } from '../../src/core/secret.js'
import { maskSensitiveText, unifiedDiff } from '../../src/core/unified-diff.js'
import { passwordMatches, scramVerifier } from '../../src/resources/postgres.js'
import { createHash } from 'node:crypto'

/** The probe's `sh -s`, run by this machine's own sh: the same script text a host runs. */
const localShell = {
  host: 'localhost',
  run(built: ShellCommand, options?: { stdin?: string | Buffer }) {
    const command = built.text
    const stdout = execFileSync('sh', ['-c', command], { input: options?.stdin ?? '' }).toString()
    return Promise.resolve({ command, code: 0, signal: null, stdout, stderr: '', durationMs: 0, timedOut: false })
  },
} as unknown as Connection

describe('fact probe', () => {
  it('frames many facts in one script and splits the output back, with exit codes', () => {
    const facts = [
      defineFact('a', raw`echo one; echo two`, (o) => o),
      defineFact('b', raw`printf "no newline"; exit 3`, (o) => o),
      defineFact('c', sh`true`, (o) => o),
    ]
    // Run the real script in a local sh: the same text the host runs.
    const out = execFileSync('sh', ['-s'], { input: probeScript(facts) }).toString()
    const parts = parseProbeOutput(out, 3)
    expect(parts[0]).toEqual({ stdout: 'one\ntwo\n', code: 0 })
    expect(parts[1]).toEqual({ stdout: 'no newline', code: 3 })
    expect(parts[2]).toEqual({ stdout: '', code: 0 })
  })
  it('runs quick facts in turn and the others beside them: every fact keeps its own output and exit code (real sh)', () => {
    const facts = [
      defineFact('slow-1', sh`sleep 0.2; echo slow one; exit 4`, (o) => o),
      defineFact('quick-1', raw`echo quick one`, (o) => o, { quick: true }),
      defineFact('slow-2', raw`echo slow two`, (o) => o),
      defineFact('quick-2', sh`printf %s ${'no newline'}; exit 5`, (o) => o, { quick: true }),
      defineFact('quick-3', raw`true`, (o) => o, { quick: true }),
    ]
    const script = probeScript(facts)
    // The slow ones go to the background first; the quick ones need no temporary directory of their own.
    expect(script.split('\n').filter((l) => l.endsWith(' &'))).toHaveLength(2)
    expect(probeScript(facts.filter((f) => f.quick))).not.toContain('mktemp')
    const probe = prepareProbe(facts)!
    const values = probe.read(execFileSync('sh', ['-s'], { input: probe.script }).toString())
    expect(facts.map((f) => values.get(f))).toEqual(['slow one\n', 'quick one\n', 'slow two\n', 'no newline', ''])
    // Output order: the quick ones first (codes 0, 5, 0), then the slow ones (4, 0).
    expect(parseProbeOutput(execFileSync('sh', ['-s'], { input: script }).toString(), 5).map((p) => p.code)).toEqual([0, 5, 0, 4, 0])
  })
  it('prints its output in one piece when it is done, not a line at a time (real sh)', async () => {
    const facts = [
      defineFact('first', raw`echo one; sleep 0.2`, (o) => o, { quick: true }),
      defineFact('second', raw`echo two`, (o) => o, { quick: true }),
    ]
    const child = spawn('sh', ['-s'], { stdio: ['pipe', 'pipe', 'ignore'] })
    child.stdin.end(probeScript(facts))
    const chunks: Buffer[] = []
    for await (const chunk of child.stdout) chunks.push(chunk as Buffer)
    // Line by line, the first fact's output would arrive 0.2 s before the second's: two pieces at least.
    expect(chunks).toHaveLength(1)
    expect(parseProbeOutput(chunks[0]!.toString(), 2).map((p) => p.stdout)).toEqual(['one\n', 'two\n'])
  })
  it('reads a small text file with the shell alone as cat does, and fails on a missing one (real sh)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mp-read-'))
    const text = '  leading spaces\nback\\slash \\n kept\n\nlast line without newline'
    writeFileSync(join(dir, 'f'), text)
    const read = (p: string) =>
      execFileSync('sh', ['-c', `${readTextFile(p).text}; echo "rc=$?"`], { stdio: ['ignore', 'pipe', 'ignore'] }).toString()
    expect(read(join(dir, 'f'))).toBe(`${text}\nrc=0\n`)
    expect(read(join(dir, 'missing'))).toMatch(/rc=[12]\n$/)
  })
  it('free space through statfs is what df reports as available (real stat and df)', () => {
    const viaStat = parseFreeMiB(execFileSync('sh', ['-c', freeDiskMiB('/').command.text]).toString())
    const df = execFileSync('df', ['-Pk', '/']).toString().split('\n')[1]!.trim().split(/\s+/)
    // The file system is in use while the test runs: the two reads may differ by a few MiB.
    expect(Math.abs(viaStat - Math.floor(Number(df[3]) / 1024))).toBeLessThan(64)
  })
  it('rejects truncated output (a cut connection) instead of parsing garbage', () => {
    expect(() => parseProbeOutput('@@MP-FACT 0\nhalf', 1)).toThrow(/missing the end/)
  })
})

describe('batched facts', () => {
  it('one stat for many files gives each file the state its own probe gives (real sh and coreutils)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mp-batch-'))
    writeFileSync(join(dir, 'f'), 'x')
    writeFileSync(join(dir, 'empty'), '')
    writeFileSync(join(dir, 'a|b c'), 'y')
    symlinkSync('f', join(dir, 'l'))
    mkdirSync(join(dir, 'd'))
    const paths = ['f', 'empty', 'a|b c', 'l', 'd', 'missing'].map((n) => join(dir, n))
    const batched = paths.map(fileState)
    expect(batched.every((f) => f.batch?.with === fileStateBatch)).toBe(true)
    const run = (facts: Fact<unknown>[]) => gatherFacts(localShell, facts)
    const together = await run(batched)
    expect(probeScript(batched).match(/'@@MP-FACT \d+'/g)).toHaveLength(1)
    for (const f of batched) expect(together.get(f), f.id).toEqual((await run([{ id: f.id, command: f.command, parse: f.parse }])).get(f))
    expect(together.get(batched[2]!)).toMatchObject({ type: 'file', sha256: createHash('sha256').update('y').digest('hex') })
    expect(together.get(batched[3]!)).toMatchObject({ type: 'symlink', linkTarget: 'f' })
    expect(together.get(batched[5]!)).toEqual({ exists: false })
    // A name with a newline would break the line-based split: it is probed alone.
    expect(fileState(join(dir, 'new\nline')).batch).toBeUndefined()
  })
  it('systemctl show of many units is split by blank lines, and a count that does not add up is an error', () => {
    const out =
      'LoadState=loaded\nActiveState=active\nUnitFileState=enabled\nActiveEnterTimestampMonotonic=5\n\nLoadState=not-found\nActiveState=inactive\nUnitFileState=\nActiveEnterTimestampMonotonic=0\n'
    const [a, b] = unitStateBatch.split(out, 0, ['a.service', 'b.service'])
    expect(parseUnitState(a!.stdout)).toMatchObject({ loaded: true, active: true, enabled: true })
    expect(parseUnitState(b!.stdout)).toMatchObject({ loaded: false, active: false, enabled: false })
    expect(() => unitStateBatch.split(out, 0, ['a.service', 'b.service', 'c.service'])).toThrow(/2 blocks for 3 units/)
  })
})

describe('stale facts after applied changes', () => {
  // The reach is the change's own typed field: the id is only a name (a new resource kind is judged by what it says).
  const change = (resource: string, touches: string[], reach: Change['reach'] = 'paths'): Change => ({
    resource,
    kind: 'file',
    action: 'update',
    summary: '',
    touches,
    backupPaths: [],
    reach,
  })
  it('a file write makes stale only facts of that path, its parents and its children, and facts that name no paths or those paths', () => {
    const stale = new StaleFacts()
    expect(stale.affects([fileState('/srv/a')])).toBe(false)
    stale.noteApplied(change('file:/srv/bench/f1', ['/srv/bench/f1']))
    expect(stale.affects([fileState('/srv/bench/f2')])).toBe(false)
    expect(stale.affects([fileState('/srv/bench/f1')])).toBe(true)
    expect(stale.affects([fileState('/srv/bench')])).toBe(true)
    // Unit state and the package database change only through their own paths (or changes that reach anything).
    expect(stale.affects([unitState('cron.service')])).toBe(false)
    expect(stale.affects([debPackages, aptListsPresent])).toBe(false)
    stale.noteApplied(change('file:/etc/systemd/system/cron.service.d/x.conf', ['/etc/systemd/system/cron.service.d/x.conf']))
    expect(stale.affects([unitState('cron.service')])).toBe(true)
    expect(stale.affects([debPackages])).toBe(false)
    // A directory made or chmod-ed leaves the files in it as they were; its parents may be new.
    stale.noteApplied(change('dir:/opt/x/y', ['/opt/x/y/']))
    expect(stale.affects([fileState('/opt/x/y/z')])).toBe(false)
    expect(stale.affects([fileState('/opt/x')])).toBe(true)
    expect(stale.affects([fileState('/opt/xy')])).toBe(false)
    // Below a re-pointed symlink, paths resolve to other files.
    stale.noteApplied(change('symlink:/var/www/current', ['/var/www/current'], 'link'))
    expect(stale.affects([fileState('/var/www/current/index.html')])).toBe(true)
    expect(stale.affects([fileState('/var/www/other')])).toBe(false)
  })
  it('a package, command or service change makes every fact stale', () => {
    for (const resource of ['apt:cron', 'command:stamp', 'service:cron.service', 'pg-role:synapse']) {
      const stale = new StaleFacts()
      stale.noteApplied(change(resource, [], 'anything'))
      expect(stale.affects([fileState('/unrelated')]), resource).toBe(true)
    }
  })
})

describe('fact parsers', () => {
  it('os-release of Debian 12 and Ubuntu 20.04', () => {
    expect(
      parseOsRelease('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n'),
    ).toMatchObject({ id: 'debian', versionId: '12', codename: 'bookworm' })
    expect(parseOsRelease('NAME="Ubuntu"\nVERSION_ID="20.04"\nID=ubuntu\nUBUNTU_CODENAME=focal\n')).toMatchObject({
      id: 'ubuntu',
      versionId: '20.04',
      codename: 'focal',
    })
  })
  it('file state: regular file, symlink, missing', () => {
    expect(parseFileState('regular file|root|matrix-synapse|640\nabc123  /etc/x\n', 0)).toEqual({
      exists: true,
      type: 'file',
      owner: 'root',
      group: 'matrix-synapse',
      mode: 0o640,
      sha256: 'abc123',
    })
    expect(parseFileState('symbolic link|root|root|777\n/var/www/element/v1\n', 0)).toMatchObject({
      type: 'symlink',
      linkTarget: '/var/www/element/v1',
    })
    expect(parseFileState('', 1)).toEqual({ exists: false })
  })
  it('dpkg-query keeps only installed packages, held ones too', () => {
    const m = parseDpkgQuery(
      'apache2\tii \t2.4.62-1\nredis-server\trc \t5:7.0\nlibc6:amd64\tii \t2.36\nmatrix-synapse-py3\thi \t1.156.0+bookworm1\ntree\tiU \t2.1\n',
    )
    expect([...m]).toEqual([
      ['apache2', '2.4.62-1'],
      ['libc6', '2.36'],
      ['matrix-synapse-py3', '1.156.0+bookworm1'],
    ])
  })
  it('systemctl show', () => {
    const s = parseUnitState('LoadState=loaded\nActiveState=active\nUnitFileState=enabled\nActiveEnterTimestampMonotonic=123\n')
    expect(s).toEqual({
      loaded: true,
      active: true,
      activeState: 'active',
      enabled: true,
      unitFileState: 'enabled',
      activeEnterMonotonic: '123',
    })
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
    // eslint-disable-next-line @typescript-eslint/restrict-template-expressions -- what a template literal makes of a Secret is the test
    expect(`${s}`).toBe(MASK)
    expect(JSON.stringify({ s })).toBe(`{"s":"${MASK}"}`)
    expect(inspect({ s })).not.toContain('hunter2')
    expect(s.reveal()).toBe('hunter2-very-secret')
    expect(maskSecrets('password is hunter2-very-secret!')).toBe(`password is ${MASK}!`)
  })
  it('sensitive diffs mask secret-named keys even for values never loaded', () => {
    expect(maskSensitiveText('macaroon_secret_key: abcdefg\nserver_name: x')).toBe(`macaroon_secret_key: ${MASK}\nserver_name: x`)
    // Redis directives have no ':' or '=': the old password of a rotation is only on the host.
    expect(maskSensitiveText('port 32992\nrequirepass "old-pw-never-loaded"\nmasterauth x1')).toBe(
      `port 32992\nrequirepass ${MASK}\nmasterauth ${MASK}`,
    )
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
    const stored =
      'md5' +
      createHash('md5')
        .update('pw' + 'synapse_user')
        .digest('hex')
    expect(passwordMatches(stored, 'synapse_user', 'pw')).toBe(true)
  })
  it('matches a verifier Postgres itself produced (RFC 7677 test vector style)', () => {
    // Verifier made by PostgreSQL 15 for password "pencil".
    const pg = scramVerifier('pencil', Buffer.from('W22ZaJ0SNY7soEsUEjb6gQ==', 'base64'), 4096)
    expect(passwordMatches(pg, 'x', 'pencil')).toBe(true)
  })
})
