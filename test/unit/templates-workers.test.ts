import { describe, expect, it } from 'vitest'
import { parse } from 'yaml'
import { renderSynapseTarget, renderWorkerFiles, renderWorkerUnit } from '../../tasks/workers/templates.js'
import { FEDERATION_ROUTES } from '../../src/synapse/routes.js'
import { workerUnitName } from '../../src/synapse/worker-kinds.js'
import { matrixSettings } from './fixtures/matrix-settings.js'
import type { LogYaml, SynapseYaml } from './fixtures/rendered.js'

const load = <T = SynapseYaml>(content: string): T => {
  const v12 = parse(content) as T
  expect(parse(content, { version: '1.1' })).toEqual(v12)
  return v12
}

function files(vars = matrixSettings()) {
  return Object.fromEntries(renderWorkerFiles(vars).map((f) => [f.path, f]))
}

describe('renderWorkerFiles', () => {
  it('renders both workers and their log configs in the systemd-with-workers locations', () => {
    expect(Object.keys(files())).toEqual([
      '/etc/matrix-synapse/workers/federation_reader.yaml',
      '/etc/matrix-synapse/federation_reader-log.yaml',
      '/etc/matrix-synapse/workers/federation_sender.yaml',
      '/etc/matrix-synapse/federation_sender-log.yaml',
    ])
    for (const f of renderWorkerFiles(matrixSettings())) {
      expect(f).toMatchObject({ owner: 'root', group: 'matrix-synapse', mode: 0o644, sensitive: false })
    }
  })

  it('makes federation_reader a named generic_worker with a loopback http listener (client+federation) and metrics', () => {
    const reader = load(files()['/etc/matrix-synapse/workers/federation_reader.yaml']!.content)
    expect(reader).toEqual({
      worker_app: 'synapse.app.generic_worker',
      worker_name: 'federation_reader',
      worker_listeners: [
        { type: 'http', port: 32902, bind_addresses: ['127.0.0.1'], x_forwarded: true, resources: [{ names: ['client', 'federation'] }] },
        { type: 'metrics', port: 32981, bind_addresses: ['127.0.0.1'] },
      ],
      worker_log_config: '/etc/matrix-synapse/federation_reader-log.yaml',
    })
  })

  it('makes federation_sender a named generic_worker (not the historical app) with only its metrics listener', () => {
    const sender = load(files()['/etc/matrix-synapse/workers/federation_sender.yaml']!.content)
    expect(sender).toEqual({
      worker_app: 'synapse.app.generic_worker',
      worker_name: 'federation_sender',
      worker_listeners: [{ type: 'metrics', port: 32980, bind_addresses: ['127.0.0.1'] }],
      worker_log_config: '/etc/matrix-synapse/federation_sender-log.yaml',
    })
  })

  it('drops the metrics listeners when metrics are off', () => {
    const f = files(matrixSettings({ monitoring: { enableMetrics: false } }))
    const reader = load(f['/etc/matrix-synapse/workers/federation_reader.yaml']!.content)
    const sender = load(f['/etc/matrix-synapse/workers/federation_sender.yaml']!.content)
    expect(reader.worker_listeners!.map((l) => l.type)).toEqual(['http'])
    expect(sender.worker_listeners).toEqual([])
  })

  it('points each worker_log_config at a rendered log config that writes its own log file', () => {
    const f = files()
    for (const name of ['federation_reader', 'federation_sender']) {
      const worker = load(f[`/etc/matrix-synapse/workers/${name}.yaml`]!.content)
      const log = load<LogYaml>(f[worker.worker_log_config!]!.content)
      expect(log.handlers.file!.filename).toBe(`/var/log/matrix-synapse/${name}.log`)
      expect(log.loggers['synapse.access.http']!.level).toBe('INFO')
    }
  })

  it('binds every worker listener to loopback only', () => {
    for (const f of renderWorkerFiles(matrixSettings())) {
      const config = load(f.content)
      for (const listener of config.worker_listeners ?? []) expect(listener.bind_addresses).toEqual(['127.0.0.1'])
    }
  })
})

describe('FEDERATION_ROUTES', () => {
  it("is today's list: anchored regexes, inbound transactions included, removed endpoints gone", () => {
    expect(FEDERATION_ROUTES).toContain('^/_matrix/federation/v1/send/')
    expect(FEDERATION_ROUTES).toContain('^/_matrix/key/v2/query')
    expect(FEDERATION_ROUTES).toContain('^/_matrix/federation/(v1|v2)/send_join/')
    expect(FEDERATION_ROUTES).toContain('^/_matrix/federation/v1/hierarchy/')
    expect(FEDERATION_ROUTES.join('\n')).not.toMatch(/get_groups_publicised|query_auth|\/media\//)
    for (const route of FEDERATION_ROUTES) {
      expect(route.startsWith('^/_matrix/')).toBe(true)
      expect(() => new RegExp(route)).not.toThrow()
    }
    expect(new Set(FEDERATION_ROUTES).size).toBe(FEDERATION_ROUTES.length)
  })

  it('matches federation paths and no client paths', () => {
    const matches = (path: string) => FEDERATION_ROUTES.some((r) => new RegExp(r).test(path))
    expect(matches('/_matrix/federation/v1/send/1234')).toBe(true)
    expect(matches('/_matrix/federation/v2/invite/!room:example.org/$event')).toBe(true)
    expect(matches('/_matrix/federation/v1/version')).toBe(true)
    expect(matches('/_matrix/federation/v1/versions')).toBe(false)
    expect(matches('/_matrix/client/v3/sync')).toBe(false)
  })
})

describe('systemd units for workers', () => {
  it("renderWorkerUnit is upstream's template unit: generic_worker, shared config, per-instance file", () => {
    const lines = renderWorkerUnit().split('\n')
    for (const line of [
      'AssertPathExists=/etc/matrix-synapse/workers/%i.yaml',
      'PartOf=matrix-synapse.target',
      'ReloadPropagatedFrom=matrix-synapse.target',
      'After=matrix-synapse.service',
      'Type=notify',
      'NotifyAccess=main',
      'User=matrix-synapse',
      'WorkingDirectory=/var/lib/matrix-synapse',
      'EnvironmentFile=-/etc/default/matrix-synapse',
      'ExecStart=/opt/venvs/matrix-synapse/bin/python -m synapse.app.generic_worker --config-path=/etc/matrix-synapse/homeserver.yaml --config-path=/etc/matrix-synapse/conf.d/ --config-path=/etc/matrix-synapse/workers/%i.yaml',
      'ExecReload=/bin/kill -HUP $MAINPID',
      'Restart=always',
      'RestartSec=3',
      'TimeoutStartSec=300',
      'SyslogIdentifier=matrix-synapse-%i',
      'WantedBy=matrix-synapse.target',
    ]) {
      expect(lines, line).toContain(line)
    }
    expect(renderWorkerUnit()).not.toMatch(/daemonize/)
  })

  it('renderSynapseTarget groups the processes under multi-user.target', () => {
    const lines = renderSynapseTarget().split('\n')
    expect(lines).toEqual(
      expect.arrayContaining([
        '[Unit]',
        'Description=Synapse parent target',
        'After=network.target',
        '[Install]',
        'WantedBy=multi-user.target',
      ]),
    )
  })

  it('names unit instances after the workers', () => {
    expect(workerUnitName('federation_reader')).toBe('matrix-synapse-worker@federation_reader.service')
  })
})
