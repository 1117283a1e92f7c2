/**
 * Workers on other hosts: the inventory's placement, what a spread homeserver binds and names, and
 * the loader's refusals (file:line). Real-host proof: test/e2e/two-hosts.test.ts.
 */
import { createHash } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { FactValues } from '../../src/facts/fact.js'
import { fileState } from '../../src/facts/files.js'
import { unitState } from '../../src/facts/systemd.js'
import { Prediction } from '../../src/resources/resource.js'
import type { Connection } from '../../src/ssh/connection.js'
import { stopWorkersBeforeSharedChange } from '../../tasks/synapse/worker-handover.js'
import { parse } from 'yaml'
import { InventoryError } from '../../src/inventory/errors.js'
import { loadInventoryFromString } from '../../src/inventory/load.js'
import { instancesOn, spansHosts, workerInstances } from '../../src/inventory/workers.js'
import { workerInstancesOnHost, workerUnits } from '../../src/topology/instances.js'
import { routingPlan } from '../../src/topology/routing.js'
import { routeTable } from '../../src/synapse/routes.js'
import { renderFirewall } from '../../tasks/common/firewall.js'
import { metricsTargets } from '../../tasks/monitoring/targets.js'
import { renderPrometheusConfig } from '../../tasks/monitoring/templates.js'
import { renderSynapseConfig } from '../../tasks/synapse/templates/homeserver.js'
import { renderWorkerFiles } from '../../tasks/workers/templates.js'
import { releaseSpec } from '../../tasks/synapse/index.js'
import { anyNumber, type SynapseYaml } from './fixtures/rendered.js'
import { lock163, venvListing } from './fixtures/release.js'
import type { TaskContext } from '../../src/engine/task.js'
import { sharedPorts, workersTask } from '../../tasks/workers/index.js'

const env = { DB: 'db-pw', REDIS: 'redis-pw', MAC: 'mac', FORM: 'form', REG: 'reg', REPL: 'repl', KEY: 'ed25519 a_x c2VjcmV0' }
const SHARED = `
    postgres: { password: { env: DB } }
    redis: { password: { env: REDIS } }
    synapse: { install: pip, version: "1.163.2", macaroonSecret: { env: MAC }, formSecret: { env: FORM }, registrationSharedSecret: { env: REG }, signingKey: { env: KEY } }`
const spread = (workers: string, extra = SHARED, w1 = '10.0.0.2') => `defaults:
  vars:
    serverName: example.org
${extra}
    workers:
      replicationSecret: { env: REPL }
${workers}
hosts:
  hs:
    address: 10.0.0.1
    roles: [postgres, redis, synapse, workers, apache, monitoring]
  w1:
    address: ${w1}
    roles: [workers]
`
const load = (text: string) => loadInventoryFromString(text, 'inv.yaml', env, { locks: false })
const issues = async (text: string) => {
  try {
    await load(text)
  } catch (e) {
    if (e instanceof InventoryError) return e.issues.map((i) => `${i.line}:${i.col} ${i.message}`)
    throw e
  }
  return []
}
const ONE_OF_EACH_SPLIT = '      preset: one-of-each\n      placement: { generic: w1, media_repository: w1 }'
const settings = (vars: object) => ({
  postgresHost: '127.0.0.1',
  redisHost: '127.0.0.1',
  secrets: {
    postgresPassword: 'p',
    macaroonSecret: 'm',
    formSecret: 'f',
    registrationSharedSecret: 'r',
    replicationSecret: 's',
    redisPassword: 'x',
  },
  synapseVersion: '1.163.2',
  ...vars,
})

describe('workers on other hosts', () => {
  it("placement by kind puts generic and media on w1; the worker host takes the homeserver's set", async () => {
    const inv = await load(spread(ONE_OF_EACH_SPLIT))
    const hs = inv.hosts.find((h) => h.name === 'hs')!
    const w1 = inv.hosts.find((h) => h.name === 'w1')!
    expect(spansHosts(hs.vars)).toBe(true)
    expect(workerInstancesOnHost(inv, 'w1').map((w) => w.name)).toEqual(['generic', 'media_repository'])
    expect(workerInstancesOnHost(inv, 'hs')).toHaveLength(13)
    expect(workerUnits(inv, 'w1')).toEqual(['matrix-synapse-worker@generic.service', 'matrix-synapse-worker@media_repository.service'])
    expect(w1.vars.workers.homeserverHost).toBe('hs')
    expect(w1.vars.workers.addresses).toEqual({ hs: '10.0.0.1', w1: '10.0.0.2' })
    expect(instancesOn(w1.vars, 'w1').map((w) => [w.name, w.address, w.remote])).toEqual([
      ['generic', '10.0.0.2', true],
      ['media_repository', '10.0.0.2', true],
    ])
  })

  it("an instance's own host wins over placement by name, which wins over kind", async () => {
    const inv = await load(
      spread(`      instances:
        - { name: generic_1, kind: generic, host: hs }
        - { name: generic_2, kind: generic }
        - { name: generic_3, kind: generic }
      placement: { generic: w1, generic_3: hs }`),
    )
    expect(workerInstances(inv.hosts[0]!.vars).map((w) => `${w.name}@${w.host}`)).toEqual(['generic_1@hs', 'generic_2@w1', 'generic_3@hs'])
  })

  it('a spread homeserver binds what other hosts reach to the private address; instance_map, Apache and Prometheus use it', async () => {
    const inv = await load(spread(ONE_OF_EACH_SPLIT))
    const hs = inv.hosts[0]!.vars
    const files = renderSynapseConfig(hs, settings({}))
    const server = parse(files.find((f) => f.path.endsWith('10-server.yaml'))!.content) as SynapseYaml
    expect(server.listeners!.find((l) => l.resources![0]!.names.includes('replication'))!.bind_addresses).toEqual(['127.0.0.1', '10.0.0.1'])
    // Main's client listener stays on loopback: Apache is beside it.
    expect(server.listeners![0]!.bind_addresses).toEqual(['127.0.0.1'])
    const shared = parse(files.find((f) => f.path.endsWith('40-workers.yaml'))!.content) as SynapseYaml
    expect(shared.instance_map!.main).toEqual({ host: '10.0.0.1', port: 32993 })
    expect(shared.instance_map!.typing!.host).toBe('10.0.0.1')
    const generic = parse(renderWorkerFiles(hs, 'w1').find((f) => f.path.endsWith('/generic.yaml'))!.content) as SynapseYaml
    expect(generic.worker_listeners!.map((l) => l.bind_addresses)).toEqual([
      ['127.0.0.1', '10.0.0.2'],
      ['127.0.0.1', '10.0.0.2'],
    ])
    // A stream writer on main's host: replication on the private address, its client listener on loopback.
    const typing = parse(renderWorkerFiles(hs, 'hs').find((f) => f.path.endsWith('/typing.yaml'))!.content) as SynapseYaml
    expect(typing.worker_listeners!.map((l) => l.bind_addresses)).toEqual([['127.0.0.1'], ['127.0.0.1', '10.0.0.1'], ['127.0.0.1']])
    expect(renderWorkerFiles(hs, 'w1').filter((f) => f.path.startsWith('/etc/matrix-synapse/workers/'))).toHaveLength(2)
    const media = routingPlan(workerInstances(hs), routeTable('1.163.2')).find((g) => g.pool === 'media_repository')!
    expect(media.members).toEqual([{ name: 'media_repository', port: anyNumber(), address: '10.0.0.2' }])
    expect(routingPlan(workerInstances(hs), routeTable('1.163.2')).find((g) => g.pool === 'typing')!.members[0]!.address).toBe('127.0.0.1')
    const targets = metricsTargets(hs)
    expect(targets.find((t) => t.process === 'generic')!.address).toBe('10.0.0.2')
    expect(targets.find((t) => t.process === 'typing')!.address).toBe('127.0.0.1')
    expect(metricsTargets(hs, 'w1').map((t) => t.process)).toEqual(['generic', 'media_repository'])
    expect(metricsTargets(hs, 'hs').map((t) => t.process)).toContain('main')
    const prometheus = renderPrometheusConfig(hs, 'hs')
    expect(prometheus).toContain(`10.0.0.2:${workerInstances(hs).find((w) => w.name === 'generic')!.metricsPort}`)
    expect(prometheus).toContain(`127.0.0.1:${workerInstances(hs).find((w) => w.name === 'typing')!.metricsPort}`)
  })

  it("the firewall covers exactly the ports other hosts reach, for the homeserver's hosts only", async () => {
    const inv = await load(spread(ONE_OF_EACH_SPLIT))
    const hs = inv.hosts[0]!.vars
    const generic = workerInstances(hs).find((w) => w.name === 'generic')!
    expect(sharedPorts(hs, instancesOn(hs, 'w1'), false).sort()).toEqual(
      [
        generic.port!,
        generic.metricsPort,
        ...instancesOn(hs, 'w1')
          .filter((w) => w.name === 'media_repository')
          .flatMap((w) => [w.port!, w.replicationPort!, w.metricsPort]),
      ].sort(),
    )
    const onHs = sharedPorts(hs, instancesOn(hs, 'hs'), true)
    expect(onHs).toContain(32993)
    expect(onHs).toContain(workerInstances(hs).find((w) => w.name === 'typing')!.replicationPort)
    expect(onHs).not.toContain(workerInstances(hs).find((w) => w.name === 'typing')!.port)
    const nft = renderFirewall('synapse', [32993, 18208], ['10.0.0.1', '10.0.0.2'])
    expect(nft).toContain('table inet mp_synapse {')
    expect(nft).toContain('ip saddr { 10.0.0.1, 10.0.0.2 } tcp dport { 18208, 32993 } accept')
    expect(nft).toContain('tcp dport { 18208, 32993 } drop')
    // One port keeps the form the Postgres and Redis tables always had.
    expect(renderFirewall('redis', 32992, ['10.0.0.1'])).toContain('tcp dport 32992 drop')
  })

  it('an upgrade on the synapse host knows the workers of the worker hosts (stopped before main switches)', async () => {
    const inv = await load(spread(ONE_OF_EACH_SPLIT))
    const r = releaseSpec(inv.hosts[0]!, inv, '1.163.2')
    expect(r.workerUnits).toHaveLength(13)
    expect(r.remoteWorkers).toEqual([
      { host: 'w1', units: ['matrix-synapse-worker@generic.service', 'matrix-synapse-worker@media_repository.service'] },
    ])
    expect(
      releaseSpec(inv.hosts[0]!, await load(spread('      preset: one-of-each').replace('roles: [workers]', 'roles: [apache]')), '1.163.2')
        .remoteWorkers,
    ).toEqual([])
  })

  it('one host: nothing changes (loopback everywhere, no table)', async () => {
    const inv = await load(spread('      preset: one-of-each').replace('roles: [workers]', 'roles: [apache]'))
    const hs = inv.hosts[0]!.vars
    expect(spansHosts(hs)).toBe(false)
    expect(workerInstances(hs).every((w) => w.address === '127.0.0.1' && !w.remote)).toBe(true)
  })

  it('refuses what cannot work, each at its line', async () => {
    // w1 then has no workers: that is said at its role.
    expect(await issues(spread('      preset: one-of-each\n      placement: { genric: w1 }'))).toEqual([
      expect.stringMatching(
        /^11:\d+ workers.placement names "genric", neither a worker of the set nor one of its kinds; did you mean "generic"/,
      ),
      expect.stringMatching(/^18:13 the workers role needs the synapse role on the same host, or a homeserver that places workers on w1/),
    ])
    expect(await issues(spread('      placement: { federation_reader: w2 }'))).toEqual([
      expect.stringMatching(/^10:\d+ the host of worker federation_reader "w2" is not a host of this inventory/),
      expect.stringMatching(/^17:13 the workers role needs the synapse role on the same host, or a homeserver that places workers on w1/),
    ])
    expect(await issues(spread(ONE_OF_EACH_SPLIT).replace('roles: [workers]', 'roles: [apache]'))).toEqual([
      expect.stringMatching(/^11:\d+ worker generic is placed on w1, which does not have the workers role/),
      expect.stringMatching(/^11:\d+ worker media_repository is placed on w1/),
    ])
    // Secrets generated on hs cannot be read on w1; Redis needs a password; the key must be given.
    const generated = await issues(spread(ONE_OF_EACH_SPLIT, '    synapse: { install: pip, version: "1.163.2" }'))
    expect(generated.join('\n')).toMatch(/postgres.password is generated .* the workers on w1 read it too/)
    expect(generated.join('\n')).toMatch(/synapse.macaroonSecret is generated/)
    expect(generated.join('\n')).toMatch(/redis.password must be set/)
    expect(generated.join('\n')).toMatch(/synapse.signingKey must be set/)
    expect(await issues(spread(ONE_OF_EACH_SPLIT, SHARED, 'w1.example.org'))).toEqual([
      expect.stringMatching(
        /^17:\d+ w1 runs workers of a homeserver spread over several hosts: its listeners bind to its private address, which must be an IP address/,
      ),
    ])
    expect(await issues(spread(ONE_OF_EACH_SPLIT, SHARED.replace('install: pip, ', 'install: apt, ')))).toEqual([
      expect.stringMatching(/^7:25 synapse.install is apt, but hs has no apt-keyring role/),
      expect.stringMatching(/workers on other hosts install Synapse with the pip method/),
    ])
    expect(
      await issues(
        spread(
          ONE_OF_EACH_SPLIT,
          SHARED.replace('postgres: { password: { env: DB } }', 'postgres: { password: { env: DB }, allowFrom: [hs] }'),
        ),
      ),
    ).toEqual([
      expect.stringMatching(/^5:\d+ w1 runs workers of hs and connects to Postgres on hs, but postgres.allowFrom does not list it/),
    ])
    expect(
      await issues(spread('      preset: guide', SHARED.replace('signingKey: { env: KEY }', 'signingKey: { generate: true }'))),
    ).toEqual(expect.arrayContaining([expect.stringMatching(/synapse.signingKey cannot be \{ generate: true \}/)]))
  })
})

describe('handing a changed shared worker configuration over', () => {
  const path = '/etc/matrix-synapse/conf.d/40-workers.yaml'
  const content = 'instance_map: {}\n'
  const sha = createHash('sha256').update(content).digest('hex')
  const factsWith = (fileSha: string | undefined, active: boolean[]) => {
    const f = new FactValues()
    f.set(
      fileState(path).id,
      fileSha === undefined
        ? { exists: false }
        : { exists: true, type: 'file', owner: 'root', group: 'matrix-synapse', mode: 0o640, sha256: fileSha },
    )
    ;['a', 'b'].forEach((n, i) =>
      f.set(unitState(`matrix-synapse-worker@${n}.service`).id, {
        loaded: true,
        active: active[i]!,
        activeState: active[i] ? 'active' : 'inactive',
        enabled: true,
        unitFileState: 'enabled',
        activeEnterMonotonic: '1',
      }),
    )
    return f
  }
  const spec = {
    path,
    content,
    localUnits: ['matrix-synapse-worker@a.service', 'matrix-synapse-worker@b.service'],
    remote: [{ host: 'w1', units: ['matrix-synapse-worker@generic.service'] }],
  }
  const plan = (f: FactValues) =>
    stopWorkersBeforeSharedChange(spec).plan({ conn: {} as Connection, facts: f, predicted: new Prediction(), dryRun: true })

  it("nothing when the file is new or unchanged; else the running workers here and the worker hosts' are stopped first", async () => {
    expect(await plan(factsWith(undefined, [true, true]))).toBeNull()
    expect(await plan(factsWith(sha, [true, true]))).toBeNull()
    const change = (await plan(factsWith('0'.repeat(64), [true, false])))!
    expect(change.steps!.map((s) => `${s.target}${s.host ? ` on ${s.host}` : ''}`)).toEqual([
      'matrix-synapse-worker@a.service',
      'matrix-synapse-worker@generic.service on w1',
    ])
    expect(change.reach).toBe('anything')
    const calls: string[] = []
    const conn = (name: string, states = '') =>
      ({
        host: name,
        run: (c: { text: string }) => {
          calls.push(`${name}: ${c.text}`)
          return Promise.resolve({
            code: 0,
            stdout: c.text.includes('is-active') ? states : '',
            stderr: '',
            signal: null,
            durationMs: 1,
            command: c.text,
          })
        },
      }) as unknown as Connection
    await stopWorkersBeforeSharedChange(spec).apply(change, {
      conn: conn('hs'),
      state: { aptListsStale: false },
      peer: () => Promise.resolve(conn('w1', 'active\n')),
    })
    expect(calls).toEqual([
      'hs: systemctl stop matrix-synapse-worker@a.service',
      'w1: systemctl is-active matrix-synapse-worker@generic.service',
      'w1: systemctl stop matrix-synapse-worker@generic.service',
    ])
    // A worker host whose units do not exist yet (a new placement): nothing to stop there.
    calls.length = 0
    await stopWorkersBeforeSharedChange(spec).apply(change, {
      conn: conn('hs'),
      state: { aptListsStale: false },
      peer: () => Promise.resolve(conn('w1', 'inactive\n')),
    })
    expect(calls).toEqual([
      'hs: systemctl stop matrix-synapse-worker@a.service',
      'w1: systemctl is-active matrix-synapse-worker@generic.service',
    ])
  })
})

describe("check on a worker host (no main there, so no synapse task's lock check)", () => {
  const hostRunning = (stdout: string) =>
    ({ run: () => Promise.resolve({ code: 0, stdout, stderr: '', signal: null, durationMs: 1 }) }) as unknown as Connection
  const afterChecksOf = async (name: string) => {
    const inv = await load(spread(ONE_OF_EACH_SPLIT))
    inv.hosts.find((h) => h.name === 'hs')!.vars.synapse.lock = lock163
    const host = inv.hosts.find((h) => h.name === name)!
    const ctx = { host, inventory: inv, hostByName: (n: string) => inv.hosts.find((h) => h.name === n)! } as unknown as TaskContext
    return workersTask.after!(ctx)
  }

  it("fails when the venv this host's workers run from drifted from the homeserver's lock, naming the processes and the venv", async () => {
    const checks = await afterChecksOf('w1')
    const lockCheck = checks.find((c) => c.name.includes('holds the lock'))!
    expect(lockCheck.name).toBe(
      'the venv matrix-synapse-worker@generic.service, matrix-synapse-worker@media_repository.service run from holds the lock synapse-lock/1.163.2.txt',
    )
    const live = '/opt/venvs/matrix-synapse-1.163.2\n'
    const drifted = await lockCheck.run(hostRunning(live + venvListing({ twisted: '25.5.0' })), { waitS: () => 0 })
    expect(drifted.ok).toBe(false)
    expect(drifted.detail).toMatch(
      /^\/opt\/venvs\/matrix-synapse-1\.163\.2 differs from the lock synapse-lock\/1\.163\.2\.txt \(1: twisted 25\.5\.0 -> 26\.4\.0\b/,
    )
    expect(await lockCheck.run(hostRunning(live + venvListing()), { waitS: () => 0 })).toMatchObject({ ok: true })
    // On main's host the synapse task's after-checks carry it (once).
    expect((await afterChecksOf('hs')).some((c) => c.name.includes('holds the lock'))).toBe(false)
  })
})
