/**
 * Pass 3 checks of one host against the others: roles, references between hosts, shared secrets,
 * versions, TLS, apt, ssh jumps, the worker list and ports. Each adds issues to the context.
 */
import { minimumPostgresFor, POSTGRES_MINIMUMS } from '../synapse/compat.js'
import { type HostEntry, type LoadContext, NEEDS_POSTGRES } from './context.js'
import { hasPath, isPlainObject, sameJson } from './merge.js'
import type { Path } from './positions.js'
import { HOST_NAME } from './values.js'
import { suggestion } from './errors.js'
import type { MatrixSettings, Role } from './types.js'
import { checkWorkerEntries, instancePorts, instancesOn, MAX_AUTO_PORT_INSTANCES, workerInstances } from './workers.js'

export function checkRoles(ctx: LoadContext, host: HostEntry): void {
  host.roles.forEach((role, index) => {
    const first = host.roles.indexOf(role)
    if (first !== index)
      ctx.add(
        ['hosts', host.name, 'roles', index],
        `role "${role}" is listed twice (first at position ${first + 1})`,
        'list each role once',
      )
  })
  if (host.roles.includes('backup') && !host.roles.includes('synapse')) {
    ctx.addForRole(
      host,
      'backup',
      'the backup role needs the synapse role on the same host: it backs up that homeserver (its media, signing key and database)',
      `add synapse to hosts.${host.name}.roles, or move backup to the host that has synapse`,
    )
  }
}

export function checkServiceReferences(ctx: LoadContext, host: HostEntry): void {
  for (const role of ['postgres', 'redis'] as const) {
    const explicit = host.vars[role]?.host
    if (explicit === undefined) continue
    const origin = ctx.varsOrigin(host.name, [role, 'host']) ?? ['hosts', host.name]
    if (!ctx.checkHostReference(origin, explicit, `${role}.host`)) continue
    const target = ctx.hosts.find((other) => other.name === explicit)!
    if (!target.roles.includes(role)) {
      ctx.add(
        origin,
        `${role}.host is "${explicit}", but that host does not have the ${role} role, so nothing installs ${role === 'postgres' ? 'PostgreSQL' : 'Redis'} there`,
        `add ${role} to hosts.${explicit}.roles`,
      )
    }
  }
  const allowFrom = host.vars.postgres?.allowFrom
  if (allowFrom) {
    const origin = ctx.varsOrigin(host.name, ['postgres', 'allowFrom'])
    allowFrom.forEach((name, index) => {
      if (origin) ctx.checkHostReference([...origin, index], name, 'postgres.allowFrom entry')
    })
  }
}

export function checkDatabaseNeeds(ctx: LoadContext, host: HostEntry): void {
  if (!NEEDS_POSTGRES.some((role) => host.roles.includes(role))) return
  const postgres = ctx.serviceHost(host, 'postgres')
  if (postgres.name === undefined) {
    ctx.addForVar(
      host.name,
      ['postgres', 'host'],
      `several hosts have the postgres role (${postgres.candidates.map((c) => c.name).join(', ')}); which one does ${host.name} use?`,
      'set vars.postgres.host to one of them',
    )
  }
  if (host.roles.includes('workers')) {
    const redis = ctx.serviceHost(host, 'redis')
    if (!redis.explicit && redis.candidates.length === 0) {
      ctx.addForRole(
        host,
        'workers',
        'the workers role needs Redis (Synapse replicates between processes only over Redis since 1.67), but no host has the redis role',
        `add redis to the roles of ${host.name} (or of another host and set vars.redis.host to it)`,
      )
    } else if (redis.name === undefined) {
      ctx.addForVar(
        host.name,
        ['redis', 'host'],
        `several hosts have the redis role (${redis.candidates.map((c) => c.name).join(', ')}); which one does ${host.name} use?`,
        'set vars.redis.host to one of them',
      )
    }
  }
}

/** A generated secret lives on one host; a service on another host cannot read it. */
export function checkSharedSecret(ctx: LoadContext, client: HostEntry, service: 'postgres' | 'redis'): void {
  const serverName = ctx.serviceHost(client, service).name
  if (serverName === undefined || serverName === client.name) return
  const server = ctx.hosts.find((host) => host.name === serverName)
  if (!server) return
  const clientRef = client.parsed[service].password
  const serverRef = server.parsed[service].password
  const label = service === 'postgres' ? 'PostgreSQL' : 'Redis'
  const generated = (ref: unknown) => isPlainObject(ref) && ref.generate === true
  if (generated(clientRef) || generated(serverRef)) {
    const at = generated(clientRef) ? client : server
    ctx.addForVar(
      at.name,
      [service, 'password'],
      `${service}.password is { generate: true }, but ${label} runs on ${server.name} and its client on ${client.name}: a password generated on one host cannot be read by the other`,
      `use { env: NAME } or { file: path } for ${service}.password (in defaults.vars, so both hosts get the same value)`,
    )
  } else if (!sameJson(clientRef, serverRef)) {
    ctx.addForVar(
      client.name,
      [service, 'password'],
      `${service}.password of ${client.name} differs from the one of ${server.name}, which runs ${label}: both must be the same secret`,
      `set ${service}.password once in defaults.vars`,
    )
  }
}

export function checkPostgresVersion(ctx: LoadContext, host: HostEntry): void {
  const pairs: { synapseHost: HostEntry; postgresHost: HostEntry }[] = []
  if (host.roles.includes('synapse')) {
    const name = ctx.serviceHost(host, 'postgres').name
    const postgresHost = ctx.hosts.find((other) => other.name === name)
    if (postgresHost) pairs.push({ synapseHost: host, postgresHost })
  }
  if (host.roles.includes('postgres') && !host.roles.includes('synapse')) pairs.push({ synapseHost: host, postgresHost: host })
  for (const { synapseHost, postgresHost } of pairs) {
    const version = postgresHost.vars.postgres?.version
    if (version === undefined) continue
    const synapseVersion = synapseHost.vars.synapse?.version
    const minimum = minimumPostgresFor(synapseVersion)
    if (version >= minimum) continue
    const since = POSTGRES_MINIMUMS.find((entry) => entry.postgres === minimum)?.since
    ctx.addForVar(
      postgresHost.name,
      ['postgres', 'version'],
      `PostgreSQL ${version} is too old for Synapse ${synapseVersion ?? '(latest release)'}: Synapse ${since ?? ''}${since ? ' and newer need' : 'needs'} PostgreSQL ${minimum} or newer`,
      `set postgres.version to ${minimum} or higher (or leave it unset to use the distribution's default), or pin an older synapse.version`,
    )
  }
}

export function checkElement(ctx: LoadContext, host: HostEntry, settings: MatrixSettings): void {
  if (!host.roles.includes('element')) return
  const element = host.vars.element ?? {}
  if (element.version === undefined && element.url === undefined && element.file === undefined) {
    ctx.addForVar(
      host.name,
      ['element'],
      'the element role needs to know what to install, but element has neither version, url nor file',
      'set element.version (e.g. "1.11.85", downloaded from GitHub), element.url, or element.file (a tarball on this machine)',
    )
  }
  if (element.url !== undefined && element.file !== undefined) {
    ctx.addForVar(
      host.name,
      ['element', 'file'],
      'element.url and element.file are both set; only one source is allowed',
      'remove one of them',
    )
  }
  if (element.signatureUrl !== undefined && element.signatureFile !== undefined) {
    ctx.addForVar(
      host.name,
      ['element', 'signatureFile'],
      'element.signatureUrl and element.signatureFile are both set; only one is allowed',
      'remove one of them',
    )
  }
  const serverHost = settings.serverName.replace(/:\d+$/, '')
  if (settings.element.host === settings.publicHost || settings.element.host === serverHost) {
    ctx.addForVar(
      host.name,
      ['element', 'host'],
      `element.host "${settings.element.host}" is also the homeserver's host name: Element must have its own host name (same-origin XSS risk)`,
      `use a separate name such as element.${serverHost}`,
    )
  }
}

export function checkTls(ctx: LoadContext, host: HostEntry): void {
  if (!host.roles.includes('apache')) return
  const tls = host.vars.apache?.tls ?? {}
  const mode = host.parsed.apache.tls.mode
  const modeOrigin = ctx.varsOrigin(host.name, ['apache', 'tls', 'mode'])
  const tlsPath = modeOrigin ? modeOrigin.slice(0, -1) : ['hosts', host.name]
  if (mode === 'files') {
    const missing = (['certificateFile', 'keyFile'] as const).filter((key) => tls[key] === undefined)
    if (missing.length > 0) {
      ctx.add(
        tlsPath,
        `tls mode "files" needs ${missing.join(' and ')}: the certificate and key uploaded to the host`,
        'set apache.tls.certificateFile and apache.tls.keyFile (paths on this machine), or use mode self-signed or acme',
      )
    }
  }
  if (mode === 'acme' && tls.acmeEmail === undefined) {
    ctx.add(
      tlsPath,
      'tls mode "acme" needs acmeEmail (the Let\'s Encrypt account address)',
      'set apache.tls.acmeEmail, e.g. admin@example.org',
    )
  }
}

export function checkAptRepository(ctx: LoadContext, host: HostEntry): void {
  const apt = host.vars.aptRepository
  if (apt?.keyringUrl !== undefined && apt.keyringFile !== undefined) {
    ctx.addForVar(
      host.name,
      ['aptRepository', 'keyringFile'],
      'aptRepository.keyringUrl and keyringFile are both set; only one keyring source is allowed',
      'remove one of them',
    )
  }
}

/** The apt method installs from the matrix.org repository: the apt-keyring role on the same host writes its keyring and source. */
export function checkAptMethod(ctx: LoadContext, host: HostEntry, settings: MatrixSettings): void {
  if (!host.roles.includes('synapse') || settings.synapse.install !== 'apt' || host.roles.includes('apt-keyring')) return
  const message = `synapse.install is apt${hasPath(host.vars, ['synapse', 'install']) ? '' : ' (the default)'}, but ${host.name} has no apt-keyring role: nothing would write the matrix.org repository's keyring and source that the matrix-synapse-py3 package comes from`
  const hint = `add apt-keyring to hosts.${host.name}.roles, or set synapse.install: pip`
  if (ctx.varsOrigin(host.name, ['synapse', 'install'])) ctx.addForVar(host.name, ['synapse', 'install'], message, hint)
  else ctx.addForRole(host, 'synapse', message, hint)
}

export function checkJump(ctx: LoadContext, host: HostEntry): void {
  const jump = host.ssh.jump
  if (jump === undefined) return
  const origin = ctx.sshOrigin(host.name, 'jump')!
  const external = jump.includes('@') || jump.includes(':')
  if (external) return
  if (!HOST_NAME.test(jump) || !ctx.names.includes(jump)) {
    const others = ctx.names.filter((name) => name !== host.name)
    ctx.add(
      origin,
      `ssh.jump "${jump}" is not a host of this inventory; ${others.length === 0 ? 'this inventory has no other hosts' : suggestion(jump, others, 'the other hosts are')}`,
      'name an inventory host, or write user@host:port for a jump host outside the inventory',
    )
    return
  }
  if (jump === host.name) {
    ctx.add(origin, `host ${host.name} cannot jump through itself`, 'name another inventory host, or remove ssh.jump')
    return
  }
  // Follow the chain: a loop would never connect.
  const chain = [host.name]
  let current: string | undefined = jump
  while (current !== undefined && !chain.includes(current)) {
    chain.push(current)
    const next: string | undefined = ctx.hosts.find((other) => other.name === current)?.ssh.jump
    current = next !== undefined && ctx.names.includes(next) ? next : undefined
  }
  if (current !== undefined && current === host.name) {
    ctx.add(origin, `ssh.jump hosts form a loop: ${[...chain, current].join(' -> ')}`, 'make one host of the chain connect directly')
  }
}

/** The worker set: a preset or an explicit list, not both; the list's own rules (workers.ts). */
export function checkWorkers(ctx: LoadContext, host: HostEntry): void {
  const w = host.vars.workers
  if (!w) return
  if (w.preset !== undefined && w.instances !== undefined) {
    ctx.addForVar(
      host.name,
      ['workers', 'instances'],
      'workers.preset and workers.instances are both set; the worker set is one or the other',
      'remove preset to use the explicit list, or remove instances to use the preset',
    )
  }
  if (w.instances) {
    for (const issue of checkWorkerEntries(w.instances))
      ctx.addForVar(host.name, ['workers', 'instances', issue.index, issue.key], issue.message, issue.hint)
    if (w.instances.length > MAX_AUTO_PORT_INSTANCES) {
      ctx.addForVar(
        host.name,
        ['workers', 'instances'],
        `at most ${MAX_AUTO_PORT_INSTANCES} workers get automatic ports, got ${w.instances.length}`,
        'split the homeserver, or give the extra workers their own ports',
      )
    }
  }
}

export function checkPorts(ctx: LoadContext, host: HostEntry, settings: MatrixSettings, setOrigin: HostEntry): void {
  const used: { port: number; label: string; sub: Path }[] = []
  const has = (role: Role) => host.roles.includes(role)
  if (has('synapse')) {
    used.push({ port: settings.synapse.listenPort, label: 'synapse.listenPort', sub: ['synapse', 'listenPort'] })
    if (settings.monitoring.enableMetrics)
      used.push({ port: settings.monitoring.mainMetricsPort, label: 'monitoring.mainMetricsPort', sub: ['monitoring', 'mainMetricsPort'] })
  }
  if (has('workers')) {
    if (has('synapse'))
      used.push({ port: settings.workers.replicationPort, label: 'workers.replicationPort', sub: ['workers', 'replicationPort'] })
    const here = new Set(instancesOn(settings, host.name).map((w) => w.name))
    workerInstances(settings).forEach((w, index) => {
      if (!here.has(w.name)) return
      for (const p of instancePorts(w, settings.monitoring.enableMetrics)) {
        const sub = workerPortOrigin(ctx, setOrigin, settings, index, p.field)
        if (setOrigin === host) used.push({ port: p.port, label: p.label, sub })
        else used.push({ port: p.port, label: `${p.label} (placed here by ${setOrigin.name})`, sub })
      }
    })
  }
  if (has('monitoring') && settings.monitoring.prometheus.enabled) {
    used.push({ port: settings.monitoring.prometheus.port, label: 'monitoring.prometheus.port', sub: ['monitoring', 'prometheus', 'port'] })
    used.push({
      port: settings.monitoring.prometheus.nodeExporterPort,
      label: 'monitoring.prometheus.nodeExporterPort',
      sub: ['monitoring', 'prometheus', 'nodeExporterPort'],
    })
  }
  if (has('redis')) used.push({ port: settings.redis.port, label: 'redis.port', sub: ['redis', 'port'] })
  if (has('postgres')) used.push({ port: settings.postgres.port, label: 'postgres.port', sub: ['postgres', 'port'] })
  if (has('apache')) {
    used.push({ port: settings.apache.httpsPort, label: 'apache.httpsPort', sub: ['apache', 'httpsPort'] })
    used.push({ port: 80, label: "Apache's http port 80", sub: ['apache'] })
    if (settings.apache.delegation === 'port-8448')
      used.push({ port: 8448, label: 'the federation port 8448 (delegation port-8448)', sub: ['apache', 'delegation'] })
  }
  const seen = new Map<number, string>()
  for (const entry of used) {
    const first = seen.get(entry.port)
    if (first === undefined) {
      seen.set(entry.port, entry.label)
      continue
    }
    ctx.addForVar(
      host.name,
      entry.sub,
      `port ${entry.port} of ${entry.label} is already used on ${host.name} by ${first}`,
      'give each service on a host its own port',
    )
  }
}

/** Where a worker's port was set: its entry in workers.instances, the guide's legacy keys, else portBase. */
export function workerPortOrigin(
  ctx: LoadContext,
  host: HostEntry,
  settings: MatrixSettings,
  index: number,
  field: 'port' | 'replicationPort' | 'metricsPort',
): Path {
  if (settings.workers.instances)
    return hasPath(host.vars, ['workers', 'instances', index, field]) ? ['workers', 'instances', index, field] : ['workers', 'portBase']
  if (settings.workers.preset === 'guide') {
    const legacy = index === 0 ? ['workers', 'federationReader', field] : ['workers', 'federationSender', field]
    return legacy
  }
  return ['workers', 'portBase']
}
