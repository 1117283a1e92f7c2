/**
 * The rest of a hand-built host in the inventory's terms: the guide's workers, its Apache vhosts for our
 * names (retired), and the admin's drop-ins of the main unit (retired).
 */
import { workerInstances } from '../../inventory/workers.js'
import { FEDERATION_ROUTES } from '../../synapse/routes.js'
import { SYNAPSE_CONFIG_DIR, SYNAPSE_UNIT_DROP_IN_PATH, SYNAPSE_WORKERS_DIR, WORKER_UNIT_PATH } from '../../synapse/paths.js'
import { DELEGATION_SITE_PATH, ELEMENT_SITE_PATH, MATRIX_SITE_PATH } from '../../../tasks/apache/templates.js'
import { isMap, listenerResources, parseYaml, text, type Reading } from './reading.js'

const WORKERS_DIR = `${SYNAPSE_WORKERS_DIR}/`
/** Our own drop-in of the apt method: not the admin's. */
const OWN_DROP_IN = SYNAPSE_UNIT_DROP_IN_PATH

export function analyzeHostFiles(r: Reading): void {
  const { found, host, v, refusals, backup, retire, note } = r
  // Workers: the guide's two, by their app and listeners.
  const workerFiles = [...found.files.keys()].filter((p) => p.startsWith(WORKERS_DIR) && p.endsWith('.yaml')).sort()
  for (const path of workerFiles) {
    const w = parseYaml(found.files.get(path)!, path, refusals)
    backup.push(path)
    const file = path.replace(`${SYNAPSE_CONFIG_DIR}/`, '')
    const app = text(w.worker_app ?? '')
    const name = text(w.worker_name ?? path.slice(WORKERS_DIR.length, -'.yaml'.length))
    const wl = (Array.isArray(w.worker_listeners) ? w.worker_listeners : []).filter(isMap)
    const http = wl.find((l) => l.type === 'http' && listenerResources(l).includes('federation'))
    const metrics = wl.find((l) => l.type === 'metrics')
    const replication = w.worker_replication_host !== undefined || w.worker_replication_http_port !== undefined
    if (!host.roles.includes('workers')) {
      note('not mapped', `${file} (${app})`, 'the host has no workers role in the inventory: the worker is stopped and its unit left alone')
      continue
    }
    // The inventory's worker of the same job (the guide preset names them as the guide does).
    const instances = workerInstances(v)
    const sender = instances.find((i) => i.kind === 'federation_sender')
    const reader = instances.find((i) => i.kind === 'federation_reader' || i.kind === 'generic')
    if ((app === 'synapse.app.federation_sender' || name === 'federation_sender') && sender) {
      note(
        metrics && Number(metrics.port) !== sender.metricsPort ? 'changes' : 'mapped',
        `${file}: ${app}${metrics ? `, metrics ${String(metrics.port)}` : ''}`,
        `worker ${sender.name}: synapse.app.generic_worker in federation_sender_instances, metrics ${sender.metricsPort}`,
      )
    } else if (http && (app === 'synapse.app.generic_worker' || app === 'synapse.app.federation_reader') && reader) {
      note(
        Number(http.port) !== reader.port ? 'changes' : 'mapped',
        `${file}: ${app} ${name}, http ${String(http.port)}${metrics ? `, metrics ${String(metrics.port)}` : ''}`,
        `worker ${reader.name} (${reader.kind}): http ${reader.port}, metrics ${reader.metricsPort}`,
      )
    } else {
      note(
        'not mapped',
        `${file} (${app} ${name})`,
        `the inventory's workers (${instances.map((i) => i.name).join(', ') || 'none'}) have no counterpart: this file and its unit are left alone`,
      )
      continue
    }
    if (replication)
      note(
        'replaced',
        `${file}: worker_replication_host/_http_port`,
        'instance_map.main in conf.d/40-workers.yaml (a ConfigError since Synapse 1.88)',
      )
  }

  // Apache: the guide's vhosts for our names are retired (their link moved into the backup).
  const ours = new Set([MATRIX_SITE_PATH, DELEGATION_SITE_PATH, ELEMENT_SITE_PATH])
  const names = new Set([v.publicHost, v.serverName.replace(/:\d+$/, '')])
  for (const [link, target] of found.enabledSites) {
    if (ours.has(target)) continue
    const text = found.files.get(target) ?? ''
    const serves = [...text.matchAll(/^\s*Server(?:Name|Alias)\s+(.+)$/gim)]
      .flatMap((m) => m[1]!.trim().split(/\s+/))
      .filter((n) => names.has(n))
    if (serves.length === 0) continue
    backup.push(target)
    retire.push(link)
    const routes = [
      ...text.matchAll(/^\s*ProxyPass\s+"?(\/_matrix\/(?:federation|key)\/[^"\s]+)"?\s+"?http:\/\/127\.0\.0\.1:(\d+)/gim),
    ].filter((m) => Number(m[2]) !== v.synapse.listenPort)
    const dropped = routes
      .map((m) => m[1]!)
      .filter((p) => !FEDERATION_ROUTES.some((r) => new RegExp(r).test(p.endsWith('/') ? `${p}x` : p)))
    note(
      'retired',
      `${target} (${[...new Set(serves)].join(', ')}${routes.length ? `; ${routes.length} ProxyPass routes to the federation_reader` : ''})`,
      `disabled; ${MATRIX_SITE_PATH}${v.apache.delegation === 'well-known' ? ` and ${DELEGATION_SITE_PATH}` : ''} serve these names${routes.length ? ` with today's ${FEDERATION_ROUTES.length} federation_reader routes` : ''}${dropped.length ? ` (no longer routed to it: ${dropped.join(', ')})` : ''}`,
    )
  }

  // systemd: the admin's drop-ins of the main unit (the guide's daemonize needs Type=forking).
  for (const dropIn of found.unitDropIns) {
    if (dropIn === OWN_DROP_IN) continue
    backup.push(dropIn)
    retire.push(dropIn)
    note('retired', dropIn, 'moved into the backup: matrix-provision writes the unit whole (Type=notify, matrix-synapse.target)')
  }
  for (const path of [WORKER_UNIT_PATH, '/etc/redis/redis.conf']) if (found.files.has(path)) backup.push(path)
}
