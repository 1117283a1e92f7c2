import type { AfterCheck } from '../../src/engine/task.js'
import type { MatrixSettings } from '../../src/inventory/types.js'
import { instancesOn, workerInstances } from '../../src/inventory/workers.js'
import { workerUnitName } from '../../src/synapse/worker-kinds.js'
import { httpOnHost, unitActive } from './checks.js'

/** Are the workers serving? (the workers task's after-checks, and an upgrade's). */
export function workerAfterChecks(vars: MatrixSettings, hostName?: string): AfterCheck[] {
  const metrics = vars.monitoring.enableMetrics
  const here = hostName === undefined ? workerInstances(vars) : instancesOn(vars, hostName)
  const checks: AfterCheck[] = here.map((w) => unitActive(workerUnitName(w.name)))
  for (const w of here) {
    const unit = workerUnitName(w.name)
    if (w.port !== undefined) {
      checks.push({
        name: `${w.name} /health answers`,
        run: (conn, c) => httpOnHost(conn, `http://127.0.0.1:${w.port}/health`, { waitS: c.waitS(90), unit, expect: /OK/ }),
      })
    } else if (metrics) {
      checks.push({
        name: `${w.name} metrics answer (its liveness probe)`,
        run: (conn, c) =>
          httpOnHost(conn, `http://127.0.0.1:${w.metricsPort}/_synapse/metrics`, {
            waitS: c.waitS(90),
            unit,
            expect: /python_info|process_cpu/,
          }),
      })
    }
  }
  return checks
}
