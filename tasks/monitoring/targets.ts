import type { MatrixSettings } from '../../src/inventory/types.js'
import { workerInstances, workerUnitName } from '../../src/topology/instances.js'

/** One Synapse process's metrics listener: what Prometheus scrapes and `provision status` reads. */
export interface MetricsTarget {
  /** `main` or the worker's name. */
  process: string
  /** The Grafana dashboard's `job` label: "master" for the main process, the worker's name otherwise. */
  job: string
  unit: string
  port: number
}

/**
 * The metrics listeners of a homeserver, main first, then every worker of the set (src/topology):
 * the one list the scrape file, Prometheus, its alerts, the after-checks and `provision status` read.
 * Each listener binds to loopback on its own port.
 */
export function metricsTargets(vars: MatrixSettings): MetricsTarget[] {
  if (!vars.monitoring.enableMetrics) return []
  return [
    { process: 'main', job: 'master', unit: 'matrix-synapse.service', port: vars.monitoring.mainMetricsPort },
    ...workerInstances(vars).map((w) => ({ process: w.name, job: w.name, unit: workerUnitName(w.name), port: w.metricsPort })),
  ]
}
