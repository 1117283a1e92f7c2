import { describe, expect, it } from 'vitest'
import { Secret } from '../../src/core/secret.js'
import { loadInventoryFromString } from '../../src/inventory/load.js'
import { newLayout } from '../../src/commands/move/layout.js'
import { identityChecks } from '../../src/commands/move/preflight.js'
import type { OldConfig } from '../../src/commands/move/old-host.js'
import { signingKeyIdentity } from '../../src/resources/homeserver-state.js'
import { parseExecStart } from '../../src/commands/move/old-host.js'
import { renderMove } from '../../src/commands/move/index.js'
import type { MoveReport } from '../../src/commands/move/report.js'

describe('provision move: reading OLD and the report', () => {
  it("takes OLD's Python and config paths from its unit's ExecStart, as systemctl show prints it", () => {
    const guide =
      '{ path=/opt/venvs/matrix-synapse/bin/python ; argv[]=/opt/venvs/matrix-synapse/bin/python -m synapse.app.homeserver --config-path=/etc/matrix-synapse/homeserver.yaml --config-path=/etc/matrix-synapse/conf.d/ ; ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }'
    expect(parseExecStart(guide)).toEqual({
      python: '/opt/venvs/matrix-synapse/bin/python',
      configPaths: ['/etc/matrix-synapse/homeserver.yaml', '/etc/matrix-synapse/conf.d/'],
    })
    expect(
      parseExecStart('{ path=/usr/bin/python3 ; argv[]=/usr/bin/python3 -m synapse.app.homeserver -c /etc/a.yaml -c /etc/b ; }'),
    ).toEqual({ python: '/usr/bin/python3', configPaths: ['/etc/a.yaml', '/etc/b'] })
    expect(parseExecStart('{ path=/usr/bin/true ; argv[]=/usr/bin/true ; }')).toBeUndefined()
    expect(parseExecStart('')).toBeUndefined()
  })

  it('renders the failed cut-over with the way back, and the downtime of a done move', () => {
    const base: MoveReport = {
      command: 'move',
      from: 'old',
      to: 'new',
      status: 'failed',
      preflight: [{ name: 'same server name', ok: true, detail: 'old.test' }],
      steps: [
        { name: 'stop-old', hosts: [], summary: 'stop and mask', done: true, durationMs: 1200 },
        { name: 'media-1', hosts: ['new'], summary: 'copy the media', done: true, durationMs: 4000, bytes: 200 * 2 ** 20 },
        { name: 'database', hosts: ['new'], summary: 'stream the database', done: false },
      ],
      next: ['return old to service: provision move --abort'],
      error: 'database stream: new exited 137',
      durationMs: 1,
    }
    const text = renderMove(base)
    expect(text).toContain('move old -> new: failed: database stream: new exited 137')
    expect(text).toContain('  + old: stop and mask (1.2 s)')
    expect(text).toContain('    new: stream the database')
    expect(text).toContain('  + new: copy the media (4.0 s, 200.0 MiB at 50.0 MiB/s)')
    expect(text).toContain('--abort')
    expect(renderMove({ ...base, status: 'moved', error: undefined, downtimeMs: 28_000, backgroundUpdatesMs: 3000 })).toContain(
      'downtime (writes stopped on old -> new answered /health): 28.0 s',
    )
  })
})

const seed = (fill: number) => Buffer.alloc(32, fill).toString('base64').replace(/=+$/, '')
const KEY = `ed25519 a_old ${seed(1)}`
const env = {
  DB: 'db-pw',
  REDIS: 'redis-pw',
  MAC: 'mac-old',
  FORM: 'form-old',
  REG: 'reg-old',
  REPL: 'repl',
  KEY,
  OTHER_KEY: `ed25519 a_new ${seed(2)}`,
}
/** The README's spread NEW: main and Apache on new, PostgreSQL and the generic and media workers on newdb; OLD beside them (only named). */
const spreadInventory = (synapse = 'signingKey: { env: KEY }') => `defaults:
  vars:
    serverName: old.test
    postgres: { host: newdb, password: { env: DB } }
    redis: { password: { env: REDIS } }
    synapse: { install: pip, version: "1.163.2", macaroonSecret: { env: MAC }, formSecret: { env: FORM }, registrationSharedSecret: { env: REG }, ${synapse} }
    workers:
      replicationSecret: { env: REPL }
      preset: one-of-each
      placement: { generic: newdb, media_repository: newdb }
hosts:
  old:
    address: 10.0.0.1
    roles: [postgres, synapse]
  new:
    address: 10.0.0.2
    roles: [redis, synapse, workers, apache]
  newdb:
    address: 10.0.0.3
    roles: [postgres, workers]
`
const load = (text: string) => loadInventoryFromString(text, 'inv.yaml', env, { locks: false })
const oldConfig: OldConfig = {
  serverName: 'old.test',
  version: '1.141.0',
  python: '/opt/venvs/matrix-synapse/bin/python',
  configPaths: [],
  signingKeyPath: '/etc/matrix-synapse/old.test.signing.key',
  mediaStorePath: '/var/lib/matrix-synapse/media',
  database: 'synapse',
  databaseHost: '127.0.0.1',
  healthPort: 8008,
  secrets: { macaroon: new Secret('mac-old', 'm'), form: new Secret('form-old', 'f'), registration: new Secret('reg-old', 'r') },
}

describe('provision move: NEW spread over hosts', () => {
  it('lays out NEW: the database and media on newdb, units per host (workers before main), every host once', async () => {
    const inv = await load(spreadInventory())
    const layout = newLayout(
      inv,
      inv.hosts.find((h) => h.name === 'new')!,
    )
    expect(layout).toMatchObject({
      main: 'new',
      database: 'newdb',
      media: 'newdb',
      synapseHosts: ['new', 'newdb'],
      hosts: ['new', 'newdb'],
    })
    expect(layout.units.newdb).toEqual(['matrix-synapse-worker@generic.service', 'matrix-synapse-worker@media_repository.service'])
    expect(layout.units.new!.at(-1)).toBe('matrix-synapse.service')
    expect(layout.units.new).not.toContain('matrix-synapse-worker@media_repository.service')
    expect(layout.units.new!.length).toBeGreaterThan(2)
  })

  it('lays out a one-host NEW as one host holding everything', async () => {
    const inv = await load(`defaults:
  vars: { serverName: old.test, synapse: { install: pip, version: "1.163.2" } }
hosts:
  new: { address: 10.0.0.2, roles: [postgres, redis, synapse, workers, apache] }
`)
    const layout = newLayout(inv, inv.hosts[0]!)
    expect(layout).toEqual({
      main: 'new',
      database: 'new',
      media: 'new',
      synapseHosts: ['new'],
      hosts: ['new'],
      units: {
        new: [
          'matrix-synapse-worker@federation_reader.service',
          'matrix-synapse-worker@federation_sender.service',
          'matrix-synapse.service',
        ],
      },
    })
  })

  it("refuses a key or a secret the inventory gives unless it is OLD's", async () => {
    const run = async (text: string) => {
      const inv = await load(text)
      const checks: { name: string; ok: boolean; detail: string }[] = []
      identityChecks(
        { old: { name: 'old' } as never, new: inv.hosts.find((h) => h.name === 'new')! },
        oldConfig,
        signingKeyIdentity(KEY),
        (name, ok, detail) => checks.push({ name, ok, detail }),
      )
      return checks
    }
    const same = await run(spreadInventory())
    expect(same.map((c) => [c.name, c.ok])).toEqual([
      ["synapse.signingKey is OLD's", true],
      ["synapse.macaroonSecret is OLD's", true],
      ["synapse.formSecret is OLD's", true],
      ["synapse.registrationSharedSecret is OLD's", true],
    ])
    const other = await run(spreadInventory('signingKey: { env: OTHER_KEY }').replace('{ env: MAC }', '{ env: REPL }'))
    expect(other.filter((c) => !c.ok).map((c) => c.name)).toEqual(["synapse.signingKey is OLD's", "synapse.macaroonSecret is OLD's"])
    expect(other[0]!.detail).toContain('a copy of /etc/matrix-synapse/old.test.signing.key from old')
    expect(JSON.stringify(other)).not.toContain('mac-old')
  })
})
