/**
 * Prometheus for the guide's monitoring section. Synapse's docs/metrics-howto.md ("Monitoring
 * workers"): one scrape job at /_synapse/metrics with each process as a target, labelled the way the
 * contrib/grafana dashboard groups: instance (the server name), job ("master" for the main process,
 * the worker's name otherwise) and index. Every metrics listener binds to loopback, so Prometheus
 * runs on the Synapse host.
 */
import type { MatrixSettings } from '../../src/inventory/types.js'
import { THRESHOLDS } from '../../src/synapse/metrics/advice.js'
import { renderYaml } from '../synapse/templates/yaml.js'
import { metricsTargets, type MetricsTarget } from './targets.js'
import { LONG_POLL_SERVLETS } from '../../src/synapse/metrics/process-status.js'
import { mpmSizing } from '../../src/topology/proxy-capacity.js'

const HEADER = '# Managed by matrix-provision: changes here are overwritten on the next run.\n'

export const PROMETHEUS_CONFIG = '/etc/prometheus/prometheus.yml'
export const PROMETHEUS_RULES = '/etc/prometheus/rules/matrix-synapse.yml'
export const PROMETHEUS_DEFAULTS = '/etc/default/prometheus'
export const NODE_EXPORTER_DEFAULTS = '/etc/default/prometheus-node-exporter'
export const GRAFANA_DIR = '/etc/matrix-provision/grafana'
export const GRAFANA_DASHBOARD = `${GRAFANA_DIR}/dashboards/matrix-synapse.json`
export const GRAFANA_PROVISIONING = `${GRAFANA_DIR}/provisioning/matrix-synapse.yaml`

function synapseScrapeJob(vars: MatrixSettings, scrapeInterval: string) {
  return {
    job_name: 'synapse',
    scrape_interval: scrapeInterval,
    metrics_path: '/_synapse/metrics',
    // Label values are strings for Prometheus.
    static_configs: metricsTargets(vars).map((t) => ({
      targets: [`${t.address}:${t.port}`],
      labels: { instance: vars.serverName, job: t.job, index: '1' },
    })),
  }
}

/** A scrape file for an existing Prometheus (`monitoring.prometheusScrapeFile`): list it under scrape_config_files or paste it. */
export function renderPrometheusScrape(vars: MatrixSettings): string {
  if (!vars.monitoring.enableMetrics) {
    return HEADER + '# monitoring.enableMetrics is false: Synapse exposes no metrics to scrape.\n' + renderYaml({ scrape_configs: [] })
  }
  return HEADER + renderYaml({ scrape_configs: [synapseScrapeJob(vars, '15s')] })
}

/** The PromQL of the guide's indicators, shared by the alert rules and the Grafana dashboard. */
export function promql(targets: MetricsTarget[]) {
  const jobs = `job=~"${targets.map((t) => t.job).join('|')}"`
  const send = 'synapse_http_server_response_time_seconds_bucket{servlet="RoomSendEventRestServlet",code=~"2.."}'
  return {
    up: `up{${jobs}}`,
    // Synapse's own CPU collector: 1.163 exports user and system time, not process_cpu_seconds_total.
    cpu: (range: string) =>
      `(rate(process_cpu_user_seconds_total{${jobs}}[${range}]) + rate(process_cpu_system_seconds_total{${jobs}}[${range}]))`,
    sendTime: (q: number, range: string) => `histogram_quantile(${q}, sum by (instance, le) (rate(${send}[${range}])))`,
    blockCpu: (range: string) =>
      `sum by (job, block_name) (rate(synapse_util_metrics_block_ru_utime_seconds_total{${jobs}}[${range}]) + rate(synapse_util_metrics_block_ru_stime_seconds_total{${jobs}}[${range}]))`,
    longPolls: `sum by (instance) (synapse_http_server_in_flight_requests_count{servlet=~"${LONG_POLL_SERVLETS.join('|')}",${jobs}})`,
    evictions: (range: string) => `sum by (instance, job) (rate(synapse_util_caches_cache_evicted_size{reason="size",${jobs}}[${range}]))`,
  }
}

export function renderPrometheusConfig(vars: MatrixSettings, hostName: string): string {
  const p = vars.monitoring.prometheus
  return (
    HEADER +
    renderYaml({
      global: { scrape_interval: p.scrapeInterval, evaluation_interval: p.scrapeInterval },
      rule_files: [PROMETHEUS_RULES],
      scrape_configs: [
        synapseScrapeJob(vars, p.scrapeInterval),
        { job_name: 'node', static_configs: [{ targets: [`127.0.0.1:${p.nodeExporterPort}`], labels: { instance: hostName } }] },
        { job_name: 'prometheus', static_configs: [{ targets: [`127.0.0.1:${p.port}`], labels: { instance: hostName } }] },
      ],
    })
  )
}

/** Alerts for the guide's indicators; the thresholds are the ones `provision status` advises on. */
export function renderAlertRules(vars: MatrixSettings): string {
  const q = promql(metricsTargets(vars))
  const p = vars.monitoring.prometheus
  const rule = (alert: string, expr: string, forDuration: string, severity: string, summary: string, description: string) => ({
    alert,
    expr,
    for: forDuration,
    labels: { severity },
    annotations: { summary, description },
  })
  return (
    HEADER +
    renderYaml({
      groups: [
        {
          name: 'matrix-synapse',
          rules: [
            rule(
              'SynapseProcessDown',
              `${q.up} == 0`,
              p.processDownFor,
              'critical',
              'Synapse process {{ $labels.job }} on {{ $labels.instance }} is down',
              'Prometheus cannot read its metrics listener; see systemctl status and the journal of its unit.',
            ),
            rule(
              'SynapseProcessCpuSaturated',
              `${q.cpu('5m')} > ${THRESHOLDS.cpuSaturatedPercent / 100}`,
              '10m',
              'warning',
              'Synapse process {{ $labels.job }} is at its CPU limit',
              'A Synapse process works on one core; near 100% it falls behind. Move work to (more) workers.',
            ),
            rule(
              'SynapseEventSendTimeHigh',
              `${q.sendTime(0.95, '5m')} > ${THRESHOLDS.eventSendP95Ms / 1000}`,
              '10m',
              'warning',
              'Sending a message takes over {{ $value | humanizeDuration }} (p95) on {{ $labels.instance }}',
              'Normally around 100 ms. Look at CPU per process and the block metrics.',
            ),
            rule(
              'SynapseCacheEvictionsHigh',
              `${q.evictions('10m')} > ${THRESHOLDS.cacheEvictionsPerSecond}`,
              '30m',
              'warning',
              'Caches of {{ $labels.job }} evict {{ $value | humanize }} entries/s because they are full',
              'Raise synapse.cacheFactor (factor 4 needs up to about 3 GB of memory; 2 to 10 work well).',
            ),
            rule(
              'ProxyLongPollsNearLimit',
              `${q.longPolls} > ${Math.floor((mpmSizing(vars.apache.maxClients).longPolls * THRESHOLDS.longPollsNearCapPercent) / 100)}`,
              '5m',
              'warning',
              'The proxy of {{ $labels.instance }} holds {{ $value }} long-polls, near its limit of ' +
                String(mpmSizing(vars.apache.maxClients).longPolls),
              'Past the limit Apache answers /sync with 503 (plain requests keep their reserved threads). Raise apache.maxClients if the host has the memory.',
            ),
            rule(
              'HostMemoryLow',
              'node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes < 0.1',
              '10m',
              'warning',
              'Less than 10% of memory is available on {{ $labels.instance }}',
              'Lower the cache factor or add memory before Synapse is killed for lack of it.',
            ),
          ],
        },
      ],
    })
  )
}

/** The unit's environment: loopback only, and the retention (Debian's unit runs `prometheus $ARGS`). */
export function renderPrometheusDefaults(vars: MatrixSettings): string {
  const p = vars.monitoring.prometheus
  const args = [
    `--web.listen-address=127.0.0.1:${p.port}`,
    `--storage.tsdb.retention.time=${p.retention}`,
    ...(p.retentionSize ? [`--storage.tsdb.retention.size=${p.retentionSize}`] : []),
  ]
  return `${HEADER}# Prometheus listens on loopback only: reach it with an SSH tunnel (ssh -L ${p.port}:127.0.0.1:${p.port} ...).\nARGS="${args.join(' ')}"\n`
}

export function renderNodeExporterDefaults(vars: MatrixSettings): string {
  return `${HEADER}ARGS="--web.listen-address=127.0.0.1:${vars.monitoring.prometheus.nodeExporterPort}"\n`
}

/** A dashboard with the guide's four graphs, for operators who bring Grafana (it is not in Debian's archive). */
export function renderGrafanaDashboard(vars: MatrixSettings): string {
  const q = promql(metricsTargets(vars))
  const panel = (id: number, title: string, unit: string, targets: { expr: string; legendFormat: string }[], y: number, x: number) => ({
    id,
    type: 'timeseries',
    title,
    datasource: { type: 'prometheus', uid: '${DS_PROMETHEUS}' },
    gridPos: { h: 9, w: 12, x, y },
    fieldConfig: { defaults: { unit }, overrides: [] },
    targets: targets.map((t, i) => ({ refId: String.fromCharCode(65 + i), ...t })),
  })
  const dashboard = {
    title: `Synapse (${vars.serverName})`,
    uid: `matrix-provision-${vars.serverName.replace(/[^a-zA-Z0-9-]/g, '-')}`.slice(0, 40),
    tags: ['matrix', 'matrix-provision'],
    schemaVersion: 39,
    time: { from: 'now-6h', to: 'now' },
    templating: { list: [{ name: 'DS_PROMETHEUS', type: 'datasource', query: 'prometheus' }] },
    panels: [
      panel(
        1,
        'CPU per process (1.0 = one core: the limit of a Synapse process)',
        'percentunit',
        [{ expr: q.cpu('2m'), legendFormat: '{{job}}' }],
        0,
        0,
      ),
      panel(
        2,
        'Event send time (normally around 100 ms)',
        's',
        [0.5, 0.95].map((x) => ({ expr: q.sendTime(x, '2m'), legendFormat: `p${x * 100}` })),
        0,
        12,
      ),
      panel(
        3,
        'CPU by code block (which part of Synapse burns CPU)',
        'percentunit',
        [{ expr: `topk(10, ${q.blockCpu('2m')})`, legendFormat: '{{job}} {{block_name}}' }],
        9,
        0,
      ),
      panel(
        4,
        'Cache evictions because full (many: raise cacheFactor)',
        'ops',
        [{ expr: q.evictions('2m'), legendFormat: '{{job}}' }],
        9,
        12,
      ),
    ],
  }
  return JSON.stringify(dashboard, null, 2) + '\n'
}

export function renderGrafanaProvisioning(): string {
  return (
    HEADER +
    '# Copy or link this file into /etc/grafana/provisioning/dashboards/ of your Grafana.\n' +
    renderYaml({
      apiVersion: 1,
      providers: [{ name: 'matrix-provision', folder: 'Matrix', type: 'file', options: { path: `${GRAFANA_DIR}/dashboards` } }],
    })
  )
}
