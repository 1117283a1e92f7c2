import type { MatrixSettings } from '../../src/inventory/types.js'
import { workerInstances } from '../../src/inventory/workers.js'
import { workerUnitName } from '../../src/synapse/worker-kinds.js'
import { SYNAPSE_UNIT } from '../../src/synapse/paths.js'

/** One Synapse process's metrics listener: what Prometheus scrapes and `provision status` reads. */
export interface MetricsTarget {
  /** `main` or the worker's name. */
  process: string
  /** The Grafana dashboard's `job` label: "master" for the main process, the worker's name otherwise. */
  job: string
  unit: string
  port: number
  /** Inventory host the process runs on (undefined: vars without hosts, everything local). */
  host?: string
  /** Where Prometheus beside the main process scrapes it: loopback, or a worker host's private address. */
  address: string
}

/**
 * The metrics listeners of a homeserver, main first, then every worker of the set (src/topology):
 * the one list the scrape file, Prometheus, its alerts, the after-checks and `provision status` read.
 * Each listener binds to loopback on its own port; a worker on another host than main's also to its
 * private address, where Prometheus (beside main) scrapes it. `hostName`: only the processes on that host.
 */
export function metricsTargets(vars: MatrixSettings, hostName?: string): MetricsTarget[] {
  if (!vars.monitoring.enableMetrics) return []
  const main = vars.workers.homeserverHost
  const all: MetricsTarget[] = [
    ...(main === undefined || hostName === undefined || hostName === main
      ? [{ process: 'main', job: 'master', unit: SYNAPSE_UNIT, port: vars.monitoring.mainMetricsPort, host: main, address: '127.0.0.1' }]
      : []),
    ...workerInstances(vars).map((w) => ({
      process: w.name,
      job: w.name,
      unit: workerUnitName(w.name),
      port: w.metricsPort,
      host: w.host,
      address: w.remote ? w.address : '127.0.0.1',
    })),
  ]
  return hostName === undefined || main === undefined ? all : all.filter((t) => t.host === hostName)
}
