import type { AfterCheck, Task } from '../../src/engine/task.js'
import { directory, file } from '../../src/resources/file.js'
import type { Resource } from '../../src/resources/resource.js'
import { workerInstances } from '../../src/topology/instances.js'
import { httpOnHost } from '../common/checks.js'
import { renderPrometheusScrape } from './templates.js'

/**
 * The guide's monitoring section: Synapse metrics (enable_metrics, loopback listeners for the main
 * process and each worker, written by the synapse and workers tasks) and a Prometheus scrape file.
 */
export const monitoringTask: Task = {
  name: 'monitoring',
  title: 'Prometheus metrics of the main process and the workers',
  before: (ctx) => [
    {
      name: 'metrics enabled',
      evaluate: () =>
        ctx.host.vars.monitoring.enableMetrics
          ? { ok: true, detail: 'enable_metrics: true' }
          : { ok: false, detail: 'the monitoring role needs monitoring.enableMetrics: true (or drop the role)' },
    },
  ],
  resources(ctx) {
    const path = ctx.host.vars.monitoring.prometheusScrapeFile
    const out: Resource[] = []
    if (path) out.push(directory({ path: path.replace(/\/[^/]+$/, '') || '/' }), file({ path, content: renderPrometheusScrape(ctx.host.vars) }))
    return out
  },
  after(ctx) {
    const m = ctx.host.vars.monitoring
    // Every worker of the set, whatever it is (workerInstances is empty without the workers role).
    const ports: [string, number][] = [['main process', m.mainMetricsPort], ...workerInstances(ctx.host.vars).map((w): [string, number] => [w.name, w.metricsPort])]
    return ports.map(
      ([name, port]): AfterCheck => ({
        name: `${name} metrics on 127.0.0.1:${port}`,
        run: (conn) => httpOnHost(conn, `http://127.0.0.1:${port}/_synapse/metrics`, { waitS: 60, expect: /process_cpu_seconds_total|python_info/ }),
      }),
    )
  },
}
