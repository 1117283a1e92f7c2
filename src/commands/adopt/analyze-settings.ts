/**
 * The settings of a hand-built Synapse in the inventory's terms: listeners to ports, plain settings,
 * the guide's worker-era keys today's form replaces, and everything without a name kept verbatim.
 */
import { RESERVED_SYNAPSE_KEYS } from '../../../tasks/synapse/templates/homeserver.js'
import { bindOf, isMap, listenerResources, text, type Reading, type SynapseConfig } from './reading.js'

/** Notes what each remaining key of the configuration becomes; keys without a name go to extraConfig. */
export function analyzeSettings(r: Reading, c: SynapseConfig): void {
  const { v, host, extraConfig, note } = r
  const { config, at, take, handled } = c
  // Listeners -> ports.
  const listeners = (Array.isArray(take('listeners')) ? (config.listeners as unknown[]) : []).filter(isMap)
  for (const l of listeners) {
    const res = listenerResources(l)
    const port = Number(l.port)
    const where = `${at('listeners')}[${port}: ${l.type === 'metrics' ? 'metrics' : res.join(', ')}]`
    let setting: [string, number] | undefined
    if (l.type === 'metrics') setting = ['monitoring.mainMetricsPort', v.monitoring.mainMetricsPort]
    else if (res.includes('replication')) setting = ['workers.replicationPort', v.workers.replicationPort]
    else if (res.includes('client') || res.includes('federation')) setting = ['synapse.listenPort', v.synapse.listenPort]
    if (!setting) {
      note('not mapped', where, 'dropped: the inventory has no listener of this kind')
      continue
    }
    const binds = bindOf(l)
    const bindNote = binds.length && binds.join(',') !== '127.0.0.1' ? ` (bound to ${binds.join(', ')} -> 127.0.0.1)` : ''
    note(setting[1] === port ? 'mapped' : 'changes', where, `${setting[0]} ${setting[1]}${bindNote}`)
  }

  // Plain settings with an inventory name.
  const simple: [string, string, unknown][] = [
    ['report_stats', 'synapse.reportStats', v.synapse.reportStats],
    ['enable_registration', 'synapse.enableRegistration', v.synapse.enableRegistration],
    ['enable_metrics', 'monitoring.enableMetrics', v.monitoring.enableMetrics],
  ]
  for (const [key, setting, value] of simple) {
    if (config[key] === undefined) continue
    take(key)
    note(config[key] === value ? 'mapped' : 'changes', `${at(key)}: ${JSON.stringify(config[key])}`, `${setting} ${JSON.stringify(value)}`)
  }
  if (config.public_baseurl !== undefined) {
    take('public_baseurl')
    const want = v.publicBaseUrl.endsWith('/') ? v.publicBaseUrl : `${v.publicBaseUrl}/`
    note(
      config.public_baseurl === want ? 'mapped' : 'changes',
      `${at('public_baseurl')}: ${text(config.public_baseurl)}`,
      `publicBaseUrl ${want}`,
    )
  }
  const redis = take('redis')
  if (isMap(redis)) {
    const port = Number(redis.port ?? 6379)
    note(
      port === v.redis.port ? 'mapped' : 'changes',
      `${at('redis')}: enabled ${String(redis.enabled)}, port ${port}`,
      `redis.port ${v.redis.port}${host.roles.includes('workers') ? ' (enabled with the workers role)' : ''}`,
    )
    if (typeof redis.password === 'string' && !v.redis.password)
      note('changes', `${at('redis')}.password`, 'dropped: the inventory sets no redis.password')
  }
  const caches = config.caches
  if (isMap(caches) && Object.keys(caches).length === 1 && typeof caches.global_factor === 'number') {
    take('caches')
    note(
      caches.global_factor === v.synapse.cacheFactor ? 'mapped' : 'changes',
      `${at('caches')}.global_factor ${caches.global_factor}`,
      `synapse.cacheFactor ${v.synapse.cacheFactor}`,
    )
  }
  if (config.federation_custom_ca_list !== undefined) {
    take('federation_custom_ca_list')
    note('not mapped', at('federation_custom_ca_list'), 'dropped: give the CA files as synapse.federationCaFiles (controller paths)')
  }

  // The guide's worker-era settings of the main process: today's form replaces them.
  const replacedBy: Record<string, string> = {
    daemonize: 'systemd runs Synapse in the foreground (Type=notify units); the Type=forking drop-in goes too',
    worker_app: 'the main process needs none',
    send_federation: 'federation_sender_instances: [federation_sender]',
    pid_file: `${'/run/matrix-synapse/homeserver.pid'} (unused under systemd)`,
    log_config: '/etc/matrix-synapse/log.yaml (journald and /var/log/matrix-synapse/homeserver.log)',
    instance_map: 'instance_map.main from workers.replicationPort',
    federation_sender_instances: 'the workers role',
    worker_replication_host: 'instance_map.main (removed in Synapse 1.88)',
    worker_replication_http_port: 'instance_map.main (removed in Synapse 1.88)',
    start_pushers: 'the main process sends pushes',
  }
  for (const [key, by] of Object.entries(replacedBy)) {
    if (config[key] === undefined) continue
    take(key)
    note('replaced', `${at(key)}: ${typeof config[key] === 'object' ? '…' : text(config[key])}`, by)
  }
  // Defaults the tool writes itself: nothing to keep when the host has the same.
  const sameAsOurs: Record<string, unknown> = { trusted_key_servers: [{ server_name: 'matrix.org' }], suppress_key_server_warning: true }
  for (const [key, ours] of Object.entries(sameAsOurs)) {
    if (config[key] !== undefined && JSON.stringify(config[key]) === JSON.stringify(ours)) {
      take(key)
      note('mapped', at(key), 'the same default')
    }
  }
  // Everything else has no inventory name: kept verbatim (synapse.extraConfig, merged last).
  for (const [key, value] of Object.entries(config)) {
    if (handled.has(key)) continue
    if (RESERVED_SYNAPSE_KEYS[key] !== undefined) {
      note('not mapped', at(key), `dropped: ${RESERVED_SYNAPSE_KEYS[key]}`)
      continue
    }
    if (key in v.synapse.extraConfig) {
      note('mapped', at(key), 'synapse.extraConfig of the inventory (its value wins)')
      continue
    }
    extraConfig[key] = value
    note('extraConfig', at(key), 'kept verbatim (the host records it; synapse.extraConfig of the inventory wins)')
  }
}
