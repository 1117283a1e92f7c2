import { describe, expect, it } from 'vitest'
import { installOlderTasks, olderReleaseFits, pinnedAt, pythonCovers, restoreRoute } from '../../src/commands/backup/restore-route.js'
import { RestoreRefused } from '../../src/commands/backup/restore-types.js'
import { loadInventoryFromString } from '../../src/inventory/load.js'
import { LOCK_DIR } from '../support/artifacts.js'
import { FakeHost } from './fake-host.js'
import { DEBIAN_12 } from './fixtures/hosts/distros.js'

const installed = { version: '1.163.2', schemaVersion: 94, schemaCompatVersion: 92 }
const refusal = (f: () => unknown) => {
  try {
    f()
  } catch (e) {
    expect(e).toBeInstanceOf(RestoreRefused)
    return (e as Error).message
  }
  throw new Error('not refused')
}
const inventory = (synapse: string, file = '/tmp/restore-route/inventory.yaml') =>
  loadInventoryFromString(
    `defaults:
  vars:
    serverName: example.test
    synapse: ${synapse}
hosts:
  hs:
    address: 127.0.0.1
    roles: [apt-keyring, postgres, redis, synapse, workers, apache]
`,
    file,
    {},
  )

describe('restore: the route from the backup to the inventory', () => {
  it("the inventory's version: restored as it is; an older one: restored onto it, then upgraded", () => {
    expect(restoreRoute({ version: '1.163.2', schemaVersion: 94 }, installed, '1.163.2', 'hs')).toEqual({
      kind: 'same',
      version: '1.163.2',
    })
    expect(restoreRoute({ version: '1.158.0', schemaVersion: 94 }, installed, '1.163.2', 'hs')).toEqual({
      kind: 'older',
      from: '1.158.0',
      to: '1.163.2',
    })
    // apt without a pin: what the host runs is the inventory's version.
    expect(restoreRoute({ version: '1.141.0', schemaVersion: 92 }, installed, undefined, 'hs')).toEqual({
      kind: 'older',
      from: '1.141.0',
      to: '1.163.2',
    })
  })

  it('refuses a newer backup, a schema the code does not know, and a host not at the inventory yet, saying what to do', () => {
    expect(refusal(() => restoreRoute({ version: '1.164.0', schemaVersion: 94 }, installed, '1.163.2', 'hs'))).toMatch(
      /taken with Synapse 1\.164\.0, newer than the inventory's 1\.163\.2: .*Set synapse\.version to "1\.164\.0" or newer in the inventory, provision hs, then restore/,
    )
    // an rc sorts before its release: 1.163.2 is newer than 1.163.2rc1
    expect(refusal(() => restoreRoute({ version: '1.163.2', schemaVersion: 94 }, installed, '1.163.2rc1', 'hs'))).toMatch(
      /runs Synapse 1\.163\.2, the inventory pins 1\.163\.2rc1: provision hs from the inventory first/,
    )
    expect(refusal(() => restoreRoute({ version: '1.163.2', schemaVersion: 95 }, installed, '1.163.2', 'hs'))).toMatch(
      /schema version 95 \(Synapse 1\.163\.2\), newer than Synapse 1\.163\.2 on hs knows \(94\)/,
    )
  })

  it("reads a lock's Python range", () => {
    expect(pythonCovers('>=3.10', '3.11')).toBe(true)
    expect(pythonCovers('>=3.10', '3.9')).toBe(false)
    expect(pythonCovers('>=3.9', '3.13')).toBe(true)
    expect(pythonCovers('>=3.8,<3.12', '3.13')).toBe(false)
    expect(pythonCovers('>=3.8,<3.12', '3.11')).toBe(true)
    expect(pythonCovers('==3.11.*', '3.11')).toBe(true)
    expect(pythonCovers('==3.11.*', '3.12')).toBe(false)
  })
})

describe('restore: can the older version run on this host (before anything changes)', () => {
  it('pip: its lock read and every host of the homeserver within its Python range; the inventory pinned at it for the first start', async () => {
    const inv = await inventory(`{ install: pip, version: "1.163.2", lockDir: ${JSON.stringify(LOCK_DIR)} }`)
    const host = inv.hosts[0]!
    const hs = new FakeHost(DEBIAN_12, 'hs')
    hs.packages.set('python3', '3.11.2-1')
    const older = await olderReleaseFits({
      host,
      version: '1.158.0',
      inventoryFile: inv.file,
      postgresMajor: 15,
      hosts: [{ name: 'hs', conn: hs }],
    })
    expect(older).toMatchObject({ method: 'pip', version: '1.158.0', lock: { synapseVersion: '1.158.0' } })
    expect(older.source).toMatch(/from the lock .*1\.158\.0\.txt$/)
    const pinned = pinnedAt(inv, 'hs', older)
    expect(pinned.hosts[0]!.vars.synapse).toMatchObject({ version: '1.158.0', lock: { synapseVersion: '1.158.0' } })
    // installed on main by its synapse task, on a worker host by its workers task (a host runs the tasks of its roles)
    const [onMain, onWorkerHost] = installOlderTasks(older as Extract<typeof older, { method: 'pip' }>, undefined)
    const ctx = (roles: string[]) => ({ host: { ...host, roles } }) as unknown as Parameters<NonNullable<typeof onMain>['resources']>[0]
    expect([onMain!.name, onWorkerHost!.name]).toEqual(['synapse', 'workers'])
    expect((await onMain!.resources(ctx(['synapse', 'workers']))).map((r) => r.id)).toEqual(['venv:/opt/venvs/matrix-synapse-1.158.0'])
    expect(await onWorkerHost!.resources(ctx(['synapse', 'workers']))).toEqual([])
    expect((await onWorkerHost!.resources(ctx(['workers']))).map((r) => r.id)).toEqual(['venv:/opt/venvs/matrix-synapse-1.158.0'])
    // the inventory itself is not changed: its apply upgrades afterwards
    expect(host.vars.synapse).toMatchObject({ version: '1.163.2', lock: { synapseVersion: '1.163.2' } })
  })

  it('refuses a missing lock, a PostgreSQL too old, a Python outside the lock, with what to do', async () => {
    const inv = await inventory(`{ install: pip, version: "1.163.2", lockDir: ${JSON.stringify(LOCK_DIR)} }`)
    const host = inv.hosts[0]!
    const hs = new FakeHost(DEBIAN_12, 'hs')
    hs.packages.set('python3', '3.11.2-1')
    const hosts = [{ name: 'hs', conn: hs }]
    const refused = (p: Promise<unknown>) =>
      p.then(
        () => {
          throw new Error('not refused')
        },
        (e: Error) => {
          expect(e).toBeInstanceOf(RestoreRefused)
          return e.message
        },
      )
    expect(await refused(olderReleaseFits({ host, version: '1.150.0', inventoryFile: inv.file, postgresMajor: 15, hosts }))).toMatch(
      /no lock for Synapse 1\.150\.0.*run `provision lock --inventory \/tmp\/restore-route\/inventory\.yaml --synapse-version 1\.150\.0`.*then restore again/,
    )
    expect(await refused(olderReleaseFits({ host, version: '1.158.0', inventoryFile: inv.file, postgresMajor: 13, hosts }))).toMatch(
      /Synapse 1\.158\.0 needs PostgreSQL 14 or newer, the database host runs 13/,
    )
    const old = new FakeHost(DEBIAN_12, 'w1')
    old.packages.set('python3', '3.9.2-1')
    Object.assign(old, { distro: { ...DEBIAN_12, python: '3.9' } })
    expect(
      await refused(
        olderReleaseFits({
          host,
          version: '1.158.0',
          inventoryFile: inv.file,
          postgresMajor: 15,
          hosts: [...hosts, { name: 'w1', conn: old }],
        }),
      ),
    ).toMatch(/lock .*1\.158\.0\.txt covers Python >=3\.10; w1 has Python 3\.9: 1\.158\.0 cannot be installed there/)
  })
})
