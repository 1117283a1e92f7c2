/**
 * A Prometheus scrape configuration for the main process and each worker (docs/metrics-howto.md,
 * "Monitoring workers"): one job "synapse" with metrics_path /_synapse/metrics; each target carries
 * the labels the contrib/grafana dashboard groups by: instance (the server name), job ("master" for
 * the main process, the worker's name otherwise) and index.
 *
 * Targets are 127.0.0.1 because every metrics listener binds to loopback: Prometheus has to run on
 * the Synapse host (or scrape through a tunnel). The file has a top-level `scrape_configs`, so it can
 * be listed under `scrape_config_files` (Prometheus 2.43+) or pasted into prometheus.yml.
 */
import type { MatrixSettings } from '../../src/inventory/types.js'
import { workerInstances } from '../../src/topology/instances.js'
import { renderYaml } from '../synapse/templates.js'

export function renderPrometheusScrape(vars: MatrixSettings): string {
  const header = '# Managed by matrix-provision: changes here are overwritten on the next run.\n'
  if (!vars.monitoring.enableMetrics) {
    return header + '# monitoring.enableMetrics is false: Synapse exposes no metrics to scrape.\n' + renderYaml({ scrape_configs: [] })
  }
  const target = (port: number, job: string) => ({
    targets: [`127.0.0.1:${port}`],
    // Label values are strings for Prometheus.
    labels: { instance: vars.serverName, job, index: '1' },
  })
  const staticConfigs = [target(vars.monitoring.mainMetricsPort, 'master')]
  for (const w of workerInstances(vars)) staticConfigs.push(target(w.metricsPort, w.name))
  return (
    header +
    renderYaml({
      scrape_configs: [
        {
          job_name: 'synapse',
          scrape_interval: '15s',
          metrics_path: '/_synapse/metrics',
          static_configs: staticConfigs,
        },
      ],
    })
  )
}
