import { execFileSync } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { DEB_SCHEMA_PY, debSchemaCommand } from '../../tasks/synapse/apt-schema.js'
import { canRun, schemaChange, type DatabaseSchema } from '../../tasks/synapse/schema-compat.js'
import { parseCodeSchema } from '../../tasks/synapse/schema-probe.js'
import { artefactDir } from '../support/packages.js'

const dir = artefactDir('matrix-synapse-py3')
const debs = readdirSync(dir)
  .filter((f) => f.endsWith('.deb'))
  .sort()
/** What the plan reads on the host, run here on the real package files (dpkg-deb and python3 as on a Debian host). */
const schemaOf = (file: string) => {
  const version = /_([^_]+)_[^_]+\.deb$/.exec(file)![1]!.replace(/\+.*$/, '')
  const tar = execFileSync('dpkg-deb', ['--fsys-tarfile', join(dir, file)], { maxBuffer: 1 << 30 })
  return parseCodeSchema(execFileSync('python3', ['-c', DEB_SCHEMA_PY, version], { input: tar, maxBuffer: 1 << 26 }).toString())
}

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

  it('on the host: apt cache first, else apt-get download into a directory _apt owns, removed on exit', () => {
    const text = debSchemaCommand('1.157.0+bookworm1').text
    expect(text).toContain('/var/cache/apt/archives/matrix-synapse-py3_1.157.0+bookworm1_*.deb')
    expect(text).toMatch(/apt-get download -q '?matrix-synapse-py3=1\.157\.0\+bookworm1/)
    expect(text).toMatch(/trap 'rm -rf "\$d"' EXIT/)
    expect(debSchemaCommand('1:2.0+bookworm1').text).toContain('matrix-synapse-py3_1%3a2.0+bookworm1_')
  })
})
