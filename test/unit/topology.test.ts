import { describe, expect, it } from 'vitest'
import { parse } from 'yaml'
import { inventoryJsonSchema } from '../../src/inventory/json-schema.js'
import { checkWorkerEntries, workerInstances } from '../../src/inventory/workers.js'
import { KINDS, WORKER_KINDS, workerUnitName } from '../../src/synapse/worker-kinds.js'
import { PRESETS, WORKER_PRESETS } from '../../src/synapse/worker-presets.js'
import { routeTable, STREAMS } from '../../src/synapse/routes.js'
import { routingPlan } from '../../src/topology/routing.js'
import { apacheModules, APACHE_MODULES, renderMatrixVhost, renderServerNameVhost } from '../../tasks/apache/templates.js'
import { LONG_POLL_ACQUIRE_MS, LONG_POLLS_PER_CHILD, mpmSizing, renderMpmConf, THREADS_PER_CHILD } from '../../tasks/apache/mpm.js'
import { memoryForClients } from '../../tasks/apache/index.js'
import type { TaskContext } from '../../src/engine/task.js'
import { renderPrometheusScrape } from '../../tasks/monitoring/templates.js'
import { renderSynapseConfig } from '../../tasks/synapse/templates/homeserver.js'
import { renderWorkerFiles } from '../../tasks/workers/templates.js'
import { cliOutput, runCli } from '../support/cli.js'
import { FIXTURE_HOST, matrixSettings, synapseContext } from './fixtures/matrix-settings.js'
import type { PrometheusYaml, SynapseYaml } from './fixtures/rendered.js'

const oneOfEach = () => matrixSettings({ workers: { preset: 'one-of-each' } })
const shared = (vars = oneOfEach(), synapseVersion = '1.163.2') =>
  parse(
    renderSynapseConfig(vars, synapseContext({ synapseVersion })).find((f) => f.path.endsWith('/40-workers.yaml'))!.content,
  ) as SynapseYaml
const workerFile = (vars: ReturnType<typeof matrixSettings>, name: string) =>
  parse(renderWorkerFiles(vars).find((f) => f.path === `/etc/matrix-synapse/workers/${name}.yaml`)!.content) as SynapseYaml
/** A worker of settings without hosts: on loopback, beside main. */
const LOCAL = { host: FIXTURE_HOST, address: '127.0.0.1', remote: false }
const tls = { certFile: '/etc/ssl/matrix-provision/m.crt', keyFile: '/etc/ssl/matrix-provision/m.key' }

describe('worker sets', () => {
  it('guide: the two workers on the guide ports, named as before', () => {
    expect(workerInstances(matrixSettings())).toEqual([
      { name: 'federation_reader', kind: 'federation_reader', port: 32902, metricsPort: 32981, ...LOCAL },
      { name: 'federation_sender', kind: 'federation_sender', metricsPort: 32980, ...LOCAL },
    ])
    expect(workerInstances(matrixSettings({ workers: { enabled: false } }))).toEqual([])
  })

  it('one-of-each: 15 workers (16 processes with main), ports from the position, listeners only where needed', () => {
    const ws = workerInstances(oneOfEach())
    expect(ws.map((w) => w.name)).toEqual(PRESETS['one-of-each'].entries.map((e) => e.name))
    expect(ws).toHaveLength(15)
    expect(ws.find((w) => w.name === 'generic')).toEqual({ name: 'generic', kind: 'generic', port: 18100, metricsPort: 18300, ...LOCAL })
    // typing serves its route and writes its stream: both listeners, on separate ports.
    expect(ws.find((w) => w.name === 'typing')).toEqual({
      name: 'typing',
      kind: 'typing',
      port: 18108,
      replicationPort: 18208,
      metricsPort: 18308,
      ...LOCAL,
    })
    // The events persister gets no public listener: generic workers forward events to it.
    expect(ws.find((w) => w.name === 'events')).toEqual({
      name: 'events',
      kind: 'events',
      replicationPort: 18207,
      metricsPort: 18307,
      ...LOCAL,
    })
    expect(ws.find((w) => w.name === 'pusher')).toEqual({ name: 'pusher', kind: 'pusher', metricsPort: 18302, ...LOCAL })
    const ports = ws.flatMap((w) => [w.port, w.replicationPort, w.metricsPort].filter((p) => p !== undefined))
    expect(new Set(ports).size).toBe(ports.length)
  })

  it('specialized: pools of sync, event creators, client and federation readers', () => {
    const names = workerInstances(matrixSettings({ workers: { preset: 'specialized' } })).map((w) => w.name)
    expect(names.slice(0, 6)).toEqual([
      'synchrotron_1',
      'synchrotron_2',
      'event_creator_1',
      'event_creator_2',
      'client_reader_1',
      'federation_reader_1',
    ])
    expect(names).toHaveLength(20)
    expect(names).not.toContain('generic')
  })

  it('appending a worker to a list moves no other worker (no restart of the others)', () => {
    const list = [
      { name: 'generic_1', kind: 'generic' as const },
      { name: 'typing', kind: 'typing' as const },
    ]
    const before = matrixSettings({ workers: { instances: list } })
    const after = matrixSettings({ workers: { instances: [...list, { name: 'generic_2', kind: 'generic' as const }] } })
    const files = (v: typeof before) => Object.fromEntries(renderWorkerFiles(v).map((f) => [f.path, f.content]))
    const b = files(before)
    const a = files(after)
    for (const [path, content] of Object.entries(b)) expect(a[path], path).toBe(content)
    expect(Object.keys(a).filter((p) => !(p in b))).toEqual([
      '/etc/matrix-synapse/workers/generic_2.yaml',
      '/etc/matrix-synapse/generic_2-log.yaml',
    ])
    // The shared config (which every process watches) is unchanged: a generic worker is in no list of it.
    expect(shared(after)).toEqual(shared(before))
  })

  it('adding an event persister changes the shared config, which every process watches (Synapse: restart all)', () => {
    const list = [{ name: 'events_1', kind: 'events' as const }]
    const one = shared(matrixSettings({ workers: { instances: list } }))
    const two = shared(matrixSettings({ workers: { instances: [...list, { name: 'events_2', kind: 'events' as const }] } }))
    expect(one.stream_writers).toEqual({ events: ['events_1'] })
    expect(two.stream_writers).toEqual({ events: ['events_1', 'events_2'] })
  })

  it('explicit lists are checked: reserved and duplicate names, single-instance kinds, listeners a kind does not have', () => {
    expect(
      checkWorkerEntries([
        { name: 'main', kind: 'generic' },
        { name: 'a', kind: 'presence' },
        { name: 'a', kind: 'presence' },
        { name: 'b', kind: 'pusher', port: 1234 },
        { name: 'c', kind: 'generic', replicationPort: 1235 },
      ]).map((i) => [i.index, i.key]),
    ).toEqual([
      [0, 'name'],
      [2, 'name'],
      [2, 'kind'],
      [3, 'port'],
      [4, 'replicationPort'],
    ])
  })
})

describe('shared configuration (conf.d/40-workers.yaml)', () => {
  it('guide: main in instance_map and the federation sender, nothing else', () => {
    const c = shared(matrixSettings())
    expect(Object.keys(c)).toEqual(['redis', 'instance_map', 'worker_replication_secret', 'federation_sender_instances'])
    expect(c.instance_map).toEqual({ main: { host: '127.0.0.1', port: 32993 } })
  })

  it('one-of-each: every stream writer in instance_map and stream_writers, each duty named, media off for the others', () => {
    const c = shared()
    const writers = workerInstances(oneOfEach()).filter((w) => w.replicationPort !== undefined)
    expect(Object.keys(c.instance_map!)).toEqual(['main', ...writers.map((w) => w.name)])
    expect(c.instance_map!.typing).toEqual({ host: '127.0.0.1', port: 18208 })
    expect(c.stream_writers).toEqual({
      quarantined_media_changes: ['media_repository'],
      events: ['events'],
      typing: ['typing'],
      to_device: ['to_device'],
      account_data: ['account_data'],
      receipts: ['receipts'],
      presence: ['presence'],
      push_rules: ['push_rules'],
      device_lists: ['device_lists'],
    })
    expect(c).toMatchObject({
      federation_sender_instances: ['federation_sender'],
      pusher_instances: ['pusher'],
      notify_appservices_from_worker: 'appservice',
      update_user_directory_from_worker: 'user_dir',
      run_background_tasks_on: 'background',
      media_instance_running_background_jobs: 'media_repository',
      enable_media_repo: false,
    })
    expect(workerFile(oneOfEach(), 'media_repository')).toMatchObject({ enable_media_repo: true })
  })

  it('a release before 1.152 has no quarantined_media_changes stream: it is not named (Synapse would refuse it)', () => {
    expect(shared(oneOfEach(), '1.140.0').stream_writers!.quarantined_media_changes).toBeUndefined()
    expect(routeTable('1.140.0').knownStreams).not.toContain('quarantined_media_changes')
    expect(routeTable('1.163.2').knownStreams).toEqual(STREAMS)
  })

  it('worker files: public http listener, a separate replication listener, metrics; all on loopback', () => {
    const typing = workerFile(oneOfEach(), 'typing')
    expect(typing.worker_listeners).toEqual([
      { type: 'http', port: 18108, bind_addresses: ['127.0.0.1'], x_forwarded: true, resources: [{ names: ['client'] }] },
      { type: 'http', port: 18208, bind_addresses: ['127.0.0.1'], resources: [{ names: ['replication'] }] },
      { type: 'metrics', port: 18308, bind_addresses: ['127.0.0.1'] },
    ])
    expect(workerFile(oneOfEach(), 'media_repository').worker_listeners![0]!.resources).toEqual([{ names: ['media'] }])
    expect(workerFile(oneOfEach(), 'generic').worker_listeners![0]!.resources).toEqual([{ names: ['client', 'federation'] }])
  })
})

describe('routing from the worker set', () => {
  it('stream writers come before the generic routes they overlap; media, then the generic groups', () => {
    const plan = routingPlan(workerInstances(oneOfEach()), routeTable('1.163.2'))
    expect(plan.map((g) => `${g.title} -> ${g.members.map((m) => m.name).join(',')}`)).toEqual([
      'Typing stream writer typing -> typing',
      'To-device stream writer to_device -> to_device',
      'Account data stream writer account_data -> account_data',
      'Receipts stream writer receipts -> receipts',
      'Presence stream writer presence -> presence',
      'Push rules stream writer push_rules -> push_rules',
      'Device lists stream writer device_lists -> device_lists',
      'Media repository worker -> media_repository',
      'Sync (generic) worker -> generic',
      'Event sending (generic) worker -> generic',
      'User directory worker -> user_dir',
      'Client requests (generic) worker -> generic',
      'Federation (generic) worker -> generic',
    ])
  })

  it('a pool of more than one becomes an Apache balancer; the sync pool shares the long-poll cap among its members', () => {
    const vars = matrixSettings({ workers: { preset: 'specialized' } })
    const vhost = renderMatrixVhost(vars, { ...tls, workers: true }).content
    expect(vhost).toContain(
      '    <Proxy "balancer://long-polls-synchrotron">\n        BalancerMember "http://127.0.0.1:18100" max=24 acquire=200\n        BalancerMember "http://127.0.0.1:18101" max=24 acquire=200\n        ProxySet lbmethod=byrequests\n    </Proxy>',
    )
    expect(vhost).toContain('ProxyPassMatch "^(/_matrix/client/(r0|v3)/sync(?:\\?.*)?)$" "balancer://long-polls-synchrotron$1" nocanon')
    // Element X's simplified sliding sync goes with /sync (every generic_worker registers it).
    expect(vhost).toContain(
      'ProxyPassMatch "^(/_matrix/client/unstable/org.matrix.simplified_msc3575/sync(?:\\?.*)?)$" "balancer://long-polls-synchrotron$1" nocanon',
    )
    // The long-poll routes always go through a capped pool: the balancer modules are always on.
    for (const v of [vars, oneOfEach(), matrixSettings()])
      expect(apacheModules(v, true)).toEqual([...APACHE_MODULES, 'proxy_balancer', 'lbmethod_byrequests', 'slotmem_shm', 'status'])
  })

  it('long-polls cannot take every Apache thread: the sync routes go through a pool capped below the threads of a child', () => {
    // Default inventory (guide preset: no sync worker), with and without the workers role: main's own capped pool.
    for (const workers of [true, false]) {
      const vhost = renderMatrixVhost(matrixSettings(), { ...tls, workers }).content
      expect(vhost).toContain(
        `    <Proxy "balancer://long-polls-main">\n        BalancerMember "http://127.0.0.1:8008" max=${LONG_POLLS_PER_CHILD} acquire=${LONG_POLL_ACQUIRE_MS}\n        ProxySet lbmethod=byrequests\n    </Proxy>`,
      )
      for (const route of [
        '(r0|v3)/sync',
        '(api/v1|r0|v3)/events',
        '(api/v1|r0|v3)/initialSync',
        '(api/v1|r0|v3)/rooms/[^/]+/initialSync',
      ]) {
        const line = `ProxyPassMatch "^(/_matrix/client/${route}(?:\\?.*)?)$" "balancer://long-polls-main$1" nocanon`
        expect(vhost).toContain(line)
        // Before the catch-all, which would take it otherwise.
        expect(vhost.indexOf(line)).toBeLessThan(vhost.indexOf('ProxyPass /_matrix http://127.0.0.1:8008/_matrix nocanon'))
      }
    }
    // One-of-each's sync goes to its single generic worker: a capped pool of its own, the whole cap for it.
    const one = renderMatrixVhost(oneOfEach(), { ...tls, workers: true }).content
    expect(one).toMatch(
      new RegExp(
        `<Proxy "balancer://long-polls-generic">\\n {8}BalancerMember "http://127\\.0\\.0\\.1:\\d+" max=${LONG_POLLS_PER_CHILD} acquire=${LONG_POLL_ACQUIRE_MS}\\n`,
      ),
    )
    expect(one).not.toContain('long-polls-main')
    // Port-8448 delegation proxies the same routes: capped there too.
    const delegation = renderServerNameVhost(matrixSettings({ apache: { delegation: 'port-8448' } }), { ...tls, workers: true })[0]!.content
    expect(delegation).toContain('"balancer://long-polls-main$1"')
  })

  it("default sizing (maxClients 1000): each client's long-poll fits under the cap, and a quarter of the threads stays in reserve", () => {
    const s = mpmSizing(1000)
    expect(s).toEqual({ serverLimit: 21, maxRequestWorkers: 1344, longPolls: 1008, reserve: 336, memoryMiB: 588 })
    expect(LONG_POLLS_PER_CHILD).toBeLessThan(THREADS_PER_CHILD)
    for (const n of [64, 150, 1000, 2500, 100_000]) {
      const x = mpmSizing(n)
      expect(x.longPolls).toBeGreaterThanOrEqual(n)
      expect(x.reserve).toBe(x.serverLimit * (THREADS_PER_CHILD - LONG_POLLS_PER_CHILD))
      expect(x.longPolls + x.reserve).toBe(x.maxRequestWorkers)
    }
    const conf = renderMpmConf(matrixSettings()).content
    expect(conf).toMatch(/MaxRequestWorkers\s+1344\n/)
    // All children from the start, never reaped: the cap is per child (a herd met 11 of 21 children and got 1,576 503s).
    expect(conf).toMatch(/StartServers\s+21\n/)
    expect(conf).toMatch(/MaxSpareThreads\s+1344\n/)
    // A graceful reload starts children only as MinSpareThreads asks (MinSpareThreads 64: one child after it).
    expect(conf).toMatch(/MinSpareThreads\s+1344\n/)
    expect(conf).toContain('The sync routes may hold 48 connections per child\n# (1008 in all); the other 336 threads stay free')
  })

  it('one-of-each: the typing route goes to the typing writer, media to the media worker, before the catch-all', () => {
    const vhost = renderMatrixVhost(oneOfEach(), { ...tls, workers: true }).content
    const at = (s: string) => vhost.indexOf(s)
    expect(vhost).toContain(
      'ProxyPassMatch "^(/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/typing.*)$" "http://127.0.0.1:18108$1" nocanon',
    )
    expect(vhost).toContain('ProxyPassMatch "^(/_matrix/media/.*)$" "http://127.0.0.1:18103$1" nocanon')
    expect(at('/sendToDevice/')).toBeLessThan(at('ProxyPass /_matrix http://127.0.0.1:8008/_matrix nocanon'))
    // device_lists' keys/upload is routed to the writer before the generic worker's copy of it.
    const keysUpload = [...vhost.matchAll(/keys\/upload\.\*\)\$" "(http:\/\/127\.0\.0\.1:\d+)/g)].map((m) => m[1])
    expect(keysUpload[0]).toBe('http://127.0.0.1:18114')
  })
})

describe('monitoring and documentation follow the set', () => {
  it('the scrape file lists main and every worker of one-of-each', () => {
    const scrape = parse(renderPrometheusScrape(oneOfEach())) as PrometheusYaml
    const jobs = scrape.scrape_configs[0]!.static_configs.map((c) => c.labels.job)
    expect(jobs).toEqual(['master', ...workerInstances(oneOfEach()).map((w) => w.name)])
  })

  it('provision schema (the built CLI) documents every preset and every kind', async () => {
    const r = await runCli(['schema'])
    expect(r.code, cliOutput(r)).toBe(0)
    const text = JSON.stringify(JSON.parse(r.stdout))
    expect(text).toBe(JSON.stringify(inventoryJsonSchema()))
    for (const p of WORKER_PRESETS) expect(text).toContain(`${p}: `)
    for (const k of WORKER_KINDS) expect(text).toContain(`${k}: ${KINDS[k].summary}`.replace(/"/g, '\\"'))
    expect(workerUnitName('typing')).toBe('matrix-synapse-worker@typing.service')
  })
})

describe('Apache sized for long-polls', () => {
  it('apache.maxClients becomes whole children of 64 threads (48 of them for long-polls), with the memory that takes', () => {
    expect(mpmSizing(150)).toMatchObject({ serverLimit: 4, maxRequestWorkers: 256 })
    expect(mpmSizing(2500)).toMatchObject({ serverLimit: 53, maxRequestWorkers: 3392 })
    expect(mpmSizing(2500).memoryMiB).toBeGreaterThan(mpmSizing(1000).memoryMiB)
    const conf = renderMpmConf(matrixSettings({ apache: { maxClients: 2500 } })).content
    expect(conf).toContain('<IfModule mpm_event_module>')
    expect(conf).toMatch(/ServerLimit\s+53\n/)
    expect(conf).toMatch(/MaxRequestWorkers\s+3392\n/)
    expect(conf).toMatch(/ThreadsPerChild\s+64\n/)
  })
})

describe('memory checked before Apache is sized', () => {
  const check = async (vars: ReturnType<typeof matrixSettings>, haveMiB: number) =>
    await memoryForClients({
      host: { name: FIXTURE_HOST, roles: ['synapse', 'workers', 'apache'], vars },
    } as unknown as TaskContext).evaluate({
      get: () => haveMiB,
    } as never)

  it('counts Apache for maxClients and every Synapse process of the set', async () => {
    const small = await check(matrixSettings({ workers: { preset: 'one-of-each' }, apache: { maxClients: 2500 } }), 1024)
    expect(small.ok).toBe(false)
    expect(small.detail).toContain('Apache holding 2500 long-polls needs about')
    expect(small.detail).toContain("Synapse's 16 processes about 1450 MiB")
    expect(small.detail).toContain('lower apache.maxClients, choose a smaller worker preset, or add memory')
    expect((await check(matrixSettings(), 4096)).ok).toBe(true)
  })
})
