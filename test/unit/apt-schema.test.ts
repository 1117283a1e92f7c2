import { execFileSync } from 'node:child_process'
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { DEB_SCHEMA_PY, debSchemaCommand } from '../../tasks/synapse/apt-schema.js'
import { canRun, decideRollback, schemaChange, type DatabaseSchema } from '../../tasks/synapse/schema-compat.js'
import { codeSchemaOfWheelhouse, knownUpdatesCommand, parseCodeSchema, parseKnownUpdates } from '../../tasks/synapse/schema-probe.js'
import { artefactDir } from '../support/packages.js'

const dir = artefactDir('matrix-synapse-py3')
const debs = readdirSync(dir)
  .filter((f) => f.endsWith('.deb'))
  .sort()
/** What the plan reads on the host, run here on the real package files (dpkg-deb and python3 as on a Debian host). */
const upstreamOf = (file: string) => /_([^_]+)_[^_]+\.deb$/.exec(file)![1]!.replace(/\+.*$/, '')
const dataTar = (file: string) => execFileSync('dpkg-deb', ['--fsys-tarfile', join(dir, file)], { maxBuffer: 1 << 30 })
const schemaOf = (file: string, tar = dataTar(file)) =>
  parseCodeSchema(execFileSync('python3', ['-c', DEB_SCHEMA_PY, upstreamOf(file)], { input: tar, maxBuffer: 1 << 26 }).toString())

/** The package's synapse/storage/schema files (stdin: its data tar) zipped into argv[1] at the paths a wheel has them. */
const WHEEL_OF_SCHEMA_PY = `
import re, sys, tarfile, zipfile
prefix = re.compile(r'^\\./opt/venvs/matrix-synapse/lib/python3\\.\\d+/site-packages/')
with tarfile.open(fileobj=sys.stdin.buffer, mode='r|*') as tar, zipfile.ZipFile(sys.argv[1], 'w') as z:
    for m in tar:
        rel = prefix.sub('', m.name)
        if rel != m.name and rel.startswith('synapse/storage/schema/') and m.isfile():
            z.writestr(rel, tar.extractfile(m).read())
`

/** What the apt rollback reads of the older package (readDebCode): its synapse/ source unpacked, the update names it registers. */
const knownUpdatesOf = (file: string) => {
  const d = mkdtempSync(join(tmpdir(), 'mp-deb-'))
  try {
    execFileSync('bash', [
      '-c',
      `dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" --wildcards './opt/venvs/matrix-synapse/lib/python3*/site-packages/synapse/*.py'`,
      '-',
      join(dir, file),
      d,
    ])
    const root = join(d, 'opt/venvs/matrix-synapse/lib', readdirSync(join(d, 'opt/venvs/matrix-synapse/lib'))[0]!, 'site-packages')
    return parseKnownUpdates(execFileSync('bash', ['-c', knownUpdatesCommand('python3', '.').text], { cwd: root }).toString())
  } finally {
    rmSync(d, { recursive: true, force: true })
  }
}

describe('the schema rules of a matrix-synapse-py3 package, read from the .deb before installing it', () => {
  it('the rollback to the older package: the update names it registers, read from its unpacked source, decide with the schema rule', () => {
    const [older, newer] = [knownUpdatesOf(debs.at(-2)!), knownUpdatesOf(debs.at(-1)!)]
    expect(older.calls).toBeGreaterThan(100)
    expect(older.unresolved).toBe(0)
    expect(older.names).toContain('populate_stats_process_rooms')
    const added = newer.names.filter((n) => !older.names.includes(n))
    const [olderCode, newerCode] = [schemaOf(debs.at(-2)!), schemaOf(debs.at(-1)!)]
    // The database after the newer package ran, with every update it added still pending.
    const now: DatabaseSchema = {
      version: 94,
      upgraded: true,
      compatVersion: 84,
      appliedDeltas: newerCode.deltas.filter((d) => d.startsWith('94/')),
      sizeBytes: 1,
      backgroundUpdates: added,
    }
    const base = { to: olderCode, knownUpdates: older.names, now, dump: '/var/backups/matrix-synapse/x.dump', served: true }
    const plain = decideRollback({ ...base, consent: false })
    // compat 84 <= 94: the older code runs on the migrated database unless an update it does not know is pending.
    expect(plain.action).toBe(added.length ? 'refuse' : 'switch')
    // A release that raised schema_compat_version beyond 94: refused without consent, the dump restored with it.
    expect(decideRollback({ ...base, now: { ...now, compatVersion: 95 }, consent: false })).toMatchObject({ action: 'refuse' })
    expect(decideRollback({ ...base, now: { ...now, compatVersion: 95 }, consent: true })).toMatchObject({
      action: 'restore',
      dump: '/var/backups/matrix-synapse/x.dump',
    })
    console.log(`background updates ${newerCode.version} registers that ${olderCode.version} does not: ${added.join(', ') || 'none'}`)
  }, 120_000)

  it('reads SCHEMA_VERSION, the multi-line SCHEMA_COMPAT_VERSION and the delta files of the real packages', () => {
    expect(debs.length).toBeGreaterThanOrEqual(2)
    const [older, newer] = [schemaOf(debs.at(-2)!), schemaOf(debs.at(-1)!)]
    // 1.156.0 and 1.157.0: both schema 94, compat 84; the newer adds delta files within 94.
    expect([older.schemaVersion, older.compatVersion, newer.schemaVersion, newer.compatVersion]).toEqual([94, 84, 94, 84])
    const added = newer.deltas.filter((d) => !older.deltas.includes(d))
    expect(added.length).toBeGreaterThan(0)
    expect(added.every((d) => d.startsWith('94/'))).toBe(true)
    expect(older.deltas.length).toBeGreaterThan(400)

    // The decisions the plan takes with them (schema-compat.ts): the newer migrated the database...
    const migrated: DatabaseSchema = {
      version: 94,
      upgraded: true,
      compatVersion: 84,
      appliedDeltas: newer.deltas.filter((d) => d.startsWith('94/')),
      sizeBytes: 1,
    }
    // ...the older code still runs on it (compat 84 <= its 94): the downgrade is allowed;
    expect(canRun(migrated, older)).toMatchObject({ ok: true })
    // the upgrade from a database of the older one has deltas to apply (the dump is needed);
    expect(schemaChange({ ...migrated, appliedDeltas: older.deltas.filter((d) => d.startsWith('94/')) }, newer).changes).toBe(true)
    // a database a newer release marked compat 95 refuses the older code: the refused downgrade.
    const refused = canRun({ ...migrated, compatVersion: 95 }, older)
    expect(refused.ok).toBe(false)
  }, 120_000)

  // pip's dry run reads the same rules from the wheelhouse's wheel on the controller (python3 through zx).
  it("the wheel reader of pip's dry run agrees with the package reader on the same release; no wheel or an unreadable one: unknown", async () => {
    const file = debs.at(-1)!
    const wheelhouse = mkdtempSync(join(tmpdir(), 'mp-wheelhouse-'))
    try {
      expect(await codeSchemaOfWheelhouse(wheelhouse)).toBeUndefined()
      // A wheel holding the package's synapse/storage/schema tree (what the reader opens), named as pip names it.
      const wheel = join(wheelhouse, `matrix_synapse-${upstreamOf(file)}-cp39-abi3-manylinux_2_28_x86_64.whl`)
      const tar = dataTar(file)
      execFileSync('python3', ['-c', WHEEL_OF_SCHEMA_PY, wheel], { input: tar, maxBuffer: 1 << 26 })
      expect(await codeSchemaOfWheelhouse(wheelhouse)).toEqual(schemaOf(file, tar))
      writeFileSync(wheel, 'not a zip')
      expect(await codeSchemaOfWheelhouse(wheelhouse)).toBeUndefined()
    } finally {
      rmSync(wheelhouse, { recursive: true, force: true })
    }
  }, 120_000)

  it('on the host: apt cache first, else apt-get download into a directory _apt owns, removed on exit', () => {
    const text = debSchemaCommand('1.157.0+bookworm1').text
    expect(text).toContain('/var/cache/apt/archives/matrix-synapse-py3_1.157.0+bookworm1_*.deb')
    expect(text).toMatch(/apt-get download -q '?matrix-synapse-py3=1\.157\.0\+bookworm1/)
    expect(text).toMatch(/trap 'rm -rf "\$d"' EXIT/)
    expect(debSchemaCommand('1:2.0+bookworm1').text).toContain('matrix-synapse-py3_1%3a2.0+bookworm1_')
  })
})
