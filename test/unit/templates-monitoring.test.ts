import { describe, expect, it } from 'vitest'
import { parse } from 'yaml'
import {
  renderAlertRules,
  renderGrafanaDashboard,
  renderGrafanaProvisioning,
  renderNodeExporterDefaults,
  renderPrometheusConfig,
  renderPrometheusDefaults,
  renderPrometheusScrape,
} from '../../tasks/monitoring/templates.js'
import { matrixSettings } from './fixtures/matrix-settings.js'
import type { AlertRulesYaml, PrometheusYaml } from './fixtures/rendered.js'

const host = (patch?: Parameters<typeof matrixSettings>[0]) => matrixSettings(patch)

const load = (content: string) => {
  const v12 = parse(content) as PrometheusYaml
  expect(parse(content, { version: '1.1' })).toEqual(v12)
  return v12
}

describe('renderPrometheusScrape', () => {
  it('scrapes the main process and each worker on loopback at /_synapse/metrics, labelled for the Grafana dashboard', () => {
    const config = load(renderPrometheusScrape(host()))
    expect(config.scrape_configs).toEqual([
      {
        job_name: 'synapse',
        scrape_interval: '15s',
        metrics_path: '/_synapse/metrics',
        static_configs: [
          { targets: ['127.0.0.1:32982'], labels: { instance: 'example.org', job: 'master', index: '1' } },
          { targets: ['127.0.0.1:32981'], labels: { instance: 'example.org', job: 'federation_reader', index: '1' } },
          { targets: ['127.0.0.1:32980'], labels: { instance: 'example.org', job: 'federation_sender', index: '1' } },
        ],
      },
    ])
  })

  it('scrapes only the main process without workers', () => {
    const config = load(renderPrometheusScrape(host({ workers: { enabled: false } })))
    expect(config.scrape_configs[0]!.static_configs.map((s) => s.labels.job)).toEqual(['master'])
  })

  it('has nothing to scrape with metrics off', () => {
    expect(load(renderPrometheusScrape(host({ monitoring: { enableMetrics: false } })))).toEqual({ scrape_configs: [] })
  })
})

describe('Prometheus on the homeserver', () => {
  const on = (prometheus: Record<string, unknown> = {}) => host({ monitoring: { prometheus: { enabled: true, ...prometheus } } })

  it('scrapes every Synapse process, the node exporter and itself on loopback, with the rule file', () => {
    const config = parse(renderPrometheusConfig(on({ scrapeInterval: '5s' }), 'matrix1')) as PrometheusYaml
    expect(config.global).toEqual({ scrape_interval: '5s', evaluation_interval: '5s' })
    expect(config.rule_files).toEqual(['/etc/prometheus/rules/matrix-synapse.yml'])
    expect(config.scrape_configs.map((j) => [j.job_name, j.static_configs.flatMap((s) => s.targets)])).toEqual([
      ['synapse', ['127.0.0.1:32982', '127.0.0.1:32981', '127.0.0.1:32980']],
      ['node', ['127.0.0.1:9100']],
      ['prometheus', ['127.0.0.1:9090']],
    ])
  })

  it("alerts on the guide's indicators, for exactly the scraped jobs, with the status command's thresholds", () => {
    const rules = (parse(renderAlertRules(on({ processDownFor: '20s' }))) as AlertRulesYaml).groups[0]!.rules
    expect(rules.map((r) => r.alert)).toEqual([
      'SynapseProcessDown',
      'SynapseProcessCpuSaturated',
      'SynapseEventSendTimeHigh',
      'SynapseCacheEvictionsHigh',
      'ProxyLongPollsNearLimit',
      'HostMemoryLow',
    ])
    expect(rules[0]).toMatchObject({ expr: 'up{job=~"master|federation_reader|federation_sender"} == 0', for: '20s' })
    expect(rules[1]!.expr).toBe(
      '(rate(process_cpu_user_seconds_total{job=~"master|federation_reader|federation_sender"}[5m]) + rate(process_cpu_system_seconds_total{job=~"master|federation_reader|federation_sender"}[5m])) > 0.9',
    )
    expect(rules[2]!.expr).toContain('servlet="RoomSendEventRestServlet",code=~"2.."')
    expect(rules[2]!.expr).toMatch(/> 1$/)
    expect(rules[3]!.expr).toContain('reason="size"')
    // The long-polls Synapse holds against the proxy's cap (1008 for the default maxClients 1000): 80% of it.
    expect(rules[4]!.expr).toBe(
      'sum by (instance) (synapse_http_server_in_flight_requests_count{servlet=~"SyncRestServlet|EventStreamRestServlet|InitialSyncRestServlet|RoomInitialSyncRestServlet",job=~"master|federation_reader|federation_sender"}) > 806',
    )
  })

  it('the unit environments keep both daemons on loopback and set the retention', () => {
    expect(renderPrometheusDefaults(on({ port: 9191, retention: '30d', retentionSize: '5GB' }))).toContain(
      'ARGS="--web.listen-address=127.0.0.1:9191 --storage.tsdb.retention.time=30d --storage.tsdb.retention.size=5GB"',
    )
    expect(renderNodeExporterDefaults(on())).toContain('ARGS="--web.listen-address=127.0.0.1:9100"')
  })

  it('a Grafana dashboard with the guide graphs and a provisioning file pointing at it', () => {
    const d = JSON.parse(renderGrafanaDashboard(on())) as { panels: { title: string }[] }
    expect(d.panels.map((p) => p.title.split(' (')[0])).toEqual([
      'CPU per process',
      'Event send time',
      'CPU by code block',
      'Cache evictions because full',
    ])
    expect((parse(renderGrafanaProvisioning()) as { providers: { options: { path: string } }[] }).providers[0]!.options.path).toBe(
      '/etc/matrix-provision/grafana/dashboards',
    )
  })
})
