import { execFileSync } from 'node:child_process'
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { DEB_SCHEMA_PY, debSchemaCommand } from '../../tasks/synapse/apt-schema.js'
import { canRun, schemaChange, type DatabaseSchema } from '../../tasks/synapse/schema-compat.js'
import { codeSchemaOfWheelhouse, parseCodeSchema } from '../../tasks/synapse/schema-probe.js'
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

describe('the schema rules of a matrix-synapse-py3 package, read from the .deb before installing it', () => {
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
