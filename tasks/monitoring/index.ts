import type { AfterCheck, Task } from '../../src/engine/task.js'
import { aptPackages } from '../../src/resources/apt-packages.js'
import { directory, file } from '../../src/resources/file.js'
import type { Resource } from '../../src/resources/resource.js'
import { service } from '../../src/resources/systemd-service.js'
import { sh } from '../../src/core/shell.js'
import { httpOnHost, portAvailable } from '../common/checks.js'
import { metricsTargets } from './targets.js'
import {
  GRAFANA_DASHBOARD,
  GRAFANA_PROVISIONING,
  NODE_EXPORTER_DEFAULTS,
  PROMETHEUS_CONFIG,
  PROMETHEUS_DEFAULTS,
  PROMETHEUS_RULES,
  renderAlertRules,
  renderGrafanaDashboard,
  renderGrafanaProvisioning,
  renderNodeExporterDefaults,
  renderPrometheusConfig,
  renderPrometheusDefaults,
  renderPrometheusScrape,
} from './templates.js'

const parent = (path: string) => path.replace(/\/[^/]+$/, '') || '/'

/**
 * The guide's monitoring section: Synapse metrics (enable_metrics, loopback listeners for the main
 * process and each worker, written by the synapse and workers tasks), a scrape file for an existing
 * Prometheus, or Prometheus itself with the guide's alerts (`monitoring.prometheus.enabled`).
 */
export const monitoringTask: Task = {
  name: 'monitoring',
  title: 'Prometheus metrics of the main process and the workers',
  before: (ctx) => {
    const p = ctx.host.vars.monitoring.prometheus
    return [
      {
        name: 'metrics enabled',
        evaluate: () =>
          ctx.host.vars.monitoring.enableMetrics
            ? { ok: true, detail: 'enable_metrics: true' }
            : { ok: false, detail: 'the monitoring role needs monitoring.enableMetrics: true (or drop the role)' },
      },
      ...(p.enabled
        ? [
            portAvailable(p.port, ['prometheus'], 'Prometheus'),
            portAvailable(p.nodeExporterPort, ['prometheus-node', 'prometheus'], 'the node exporter'),
          ]
        : []),
    ]
  },
  resources(ctx) {
    const m = ctx.host.vars.monitoring
    const out: Resource[] = []
    if (m.prometheusScrapeFile)
      out.push(
        directory({ path: parent(m.prometheusScrapeFile) }),
        file({ path: m.prometheusScrapeFile, content: renderPrometheusScrape(ctx.host.vars) }),
      )
    if (m.prometheus.enabled) {
      // The unit's environment goes in before the packages: Debian starts both services at install,
      // and with our ARGS already there they never listen beyond loopback (dpkg keeps the existing
      // file: --force-confold).
      out.push(
        directory({ path: '/etc/prometheus/rules' }),
        file({ path: PROMETHEUS_DEFAULTS, content: renderPrometheusDefaults(ctx.host.vars) }),
        file({ path: NODE_EXPORTER_DEFAULTS, content: renderNodeExporterDefaults(ctx.host.vars) }),
        file({ path: PROMETHEUS_RULES, content: renderAlertRules(ctx.host.vars) }),
        file({ path: PROMETHEUS_CONFIG, content: renderPrometheusConfig(ctx.host.vars, ctx.host.name) }),
        aptPackages({
          packages: ['prometheus', 'prometheus-node-exporter'],
          provides: { units: ['prometheus.service', 'prometheus-node-exporter.service'], paths: ['/etc/prometheus'] },
        }),
        service({
          unit: 'prometheus.service',
          watch: [PROMETHEUS_CONFIG, PROMETHEUS_RULES, PROMETHEUS_DEFAULTS, 'pkg:prometheus'],
          // A config Prometheus rejects is rolled back before the restart, and the running one keeps scraping.
          validate: sh`promtool check config ${PROMETHEUS_CONFIG}`,
        }),
        service({ unit: 'prometheus-node-exporter.service', watch: [NODE_EXPORTER_DEFAULTS, 'pkg:prometheus-node-exporter'] }),
        directory({ path: parent(GRAFANA_DASHBOARD) }),
        directory({ path: parent(GRAFANA_PROVISIONING) }),
        file({ path: GRAFANA_DASHBOARD, content: renderGrafanaDashboard(ctx.host.vars) }),
        file({ path: GRAFANA_PROVISIONING, content: renderGrafanaProvisioning() }),
      )
    }
    return out
  },
  after(ctx) {
    const targets = metricsTargets(ctx.host.vars)
    // A worker on another host is asked at its private address, as Prometheus asks it (its unit is not here).
    const checks: AfterCheck[] = targets.map((t) => ({
      name: `${t.process} metrics on ${t.address}:${t.port}`,
      run: (conn, c) =>
        httpOnHost(conn, `http://${t.address}:${t.port}/_synapse/metrics`, {
          waitS: c.waitS(60),
          ...(t.address === '127.0.0.1' ? { unit: t.unit } : {}),
          expect: /process_cpu_seconds_total|python_info/,
        }),
    }))
    const p = ctx.host.vars.monitoring.prometheus
    if (p.enabled) {
      checks.push(
        {
          name: `Prometheus scrapes ${targets.map((t) => t.job).join(', ')}, all up`,
          run: (conn, c) =>
            prometheusTargetsUp(
              conn,
              p.port,
              targets.map((t) => t.job),
              c.waitS(60),
            ),
        },
        {
          name: 'the alert rules are loaded',
          async run(conn, c) {
            const r = await httpOnHost(conn, `http://127.0.0.1:${p.port}/api/v1/rules`, {
              waitS: c.waitS(30),
              unit: 'prometheus.service',
              expect: /"name":"matrix-synapse"/,
            })
            return r.ok ? { ok: true, detail: 'rule group matrix-synapse loaded' } : r
          },
        },
        {
          name: `node exporter on 127.0.0.1:${p.nodeExporterPort}`,
          run: (conn, c) =>
            httpOnHost(conn, `http://127.0.0.1:${p.nodeExporterPort}/metrics`, {
              waitS: c.waitS(30),
              unit: 'prometheus-node-exporter.service',
              expect: /node_memory_MemAvailable_bytes/,
            }),
        },
      )
    }
    return checks
  },
}

/** Every Synapse job among Prometheus's active targets, healthy; polled for up to waitS (the first scrape follows a restart by up to one interval). */
async function prometheusTargetsUp(conn: Parameters<AfterCheck['run']>[0], port: number, jobs: string[], waitS: number) {
  let last = ''
  const tries = Math.floor(waitS / 3) + 1
  for (let i = 0; i < tries; i++) {
    const r = await conn.run(sh`curl -sS --max-time 5 ${`http://127.0.0.1:${port}/api/v1/targets?state=active`}`, { allowFailure: true })
    if (r.code === 0) {
      try {
        const data = JSON.parse(r.stdout) as {
          data: { activeTargets: { labels: Record<string, string>; health: string; lastError: string }[] }
        }
        const health = new Map(data.data.activeTargets.map((t) => [t.labels.job ?? '', t]))
        const bad = jobs.filter((j) => health.get(j)?.health !== 'up')
        if (bad.length === 0) return { ok: true, detail: `${jobs.length} Synapse targets up` }
        last = bad
          .map((j) => `${j}: ${health.get(j) ? `${health.get(j)!.health} ${health.get(j)!.lastError}`.trim() : 'not a target'}`)
          .join('; ')
      } catch {
        last = `unexpected answer: ${r.stdout.slice(0, 200)}`
      }
    } else last = (r.stdout + r.stderr).trim().slice(0, 200)
    if (i + 1 < tries) await new Promise((res) => setTimeout(res, 3000))
  }
  return { ok: false, detail: `Prometheus targets not all up${waitS ? ` after ${waitS} s` : ''}: ${last}` }
}
