/**
 * Where each homeserver's workers run, across hosts: placement, worker hosts taking their
 * homeserver's worker settings, private addresses, and what a homeserver spread over hosts needs.
 */
import { isIP } from 'node:net'
import { WORKER_KINDS } from '../synapse/worker-kinds.js'
import type { HostEntry, LoadContext } from './context.js'
import { suggestion } from './errors.js'
import type { SecretValue } from '../core/secret.js'
import type { HostSpec } from './types.js'
import { entriesOf, mediaStoreHost, ofKind, placedHost, spansHosts, workerInstances } from './workers.js'

/**
 * Where each homeserver's workers run (workers.placement, an instance's host): every named host has
 * the workers role and no homeserver of its own, every workers-only host is named by exactly one
 * homeserver and takes that homeserver's worker settings. A homeserver that spans hosts binds its
 * shared listeners to private addresses (IPs), and every host must read the same secrets and key.
 * Returns, for each worker host, the host whose vars define its set (for positions).
 */
export function placeWorkers(ctx: LoadContext, specs: HostSpec[]): Map<string, HostEntry> {
  const origins = new Map<string, HostEntry>()
  const placedBy = new Map<string, string[]>()
  const entryOf = (name: string) => ctx.hosts.find((h) => h.name === name)!
  for (const main of specs.filter((h) => h.roles.includes('synapse') && h.roles.includes('workers'))) {
    const w = main.vars.workers
    const entries = entriesOf(w)
    const placement = w.placement ?? {}
    const known = new Set<string>([...entries.map((e) => e.name), ...entries.map((e) => e.kind)])
    for (const key of Object.keys(placement)) {
      if (known.has(key)) continue
      const what = (WORKER_KINDS as readonly string[]).includes(key)
        ? `kind ${key}, which no worker of the set has`
        : `"${key}", neither a worker of the set nor one of its kinds`
      ctx.addForVar(
        main.name,
        ['workers', 'placement', key],
        `workers.placement names ${what}; ${suggestion(key, [...known], 'the set has')}`,
        'name a worker or a kind of the set (workers.preset or workers.instances)',
      )
    }
    entries.forEach((e, index) => {
      const target = placedHost(w, e)
      if (target === undefined || target === main.name) return
      const sub =
        e.host !== undefined
          ? ['workers', 'instances', index, 'host']
          : ['workers', 'placement', placement[e.name] !== undefined ? e.name : e.kind]
      const origin = ctx.varsOrigin(main.name, sub) ?? ['hosts', main.name]
      if (!ctx.checkHostReference(origin, target, `the host of worker ${e.name}`)) return
      const other = specs.find((h) => h.name === target)!
      if (!other.roles.includes('workers')) {
        ctx.add(
          origin,
          `worker ${e.name} is placed on ${target}, which does not have the workers role`,
          `add workers to hosts.${target}.roles`,
        )
      } else if (other.roles.includes('synapse')) {
        ctx.add(
          origin,
          `worker ${e.name} is placed on ${target}, which runs a homeserver of its own (synapse role): one host holds one homeserver's configuration`,
          `place it on a host without the synapse role, or on ${main.name}`,
        )
      } else if (!(placedBy.get(target) ?? []).includes(main.name)) {
        placedBy.set(target, [...(placedBy.get(target) ?? []), main.name])
      }
    })
  }
  for (const host of specs.filter((h) => h.roles.includes('workers') && !h.roles.includes('synapse'))) {
    const mains = placedBy.get(host.name) ?? []
    const entry = entryOf(host.name)
    if (mains.length !== 1) {
      ctx.addForRole(
        entry,
        'workers',
        mains.length === 0
          ? `the workers role needs the synapse role on the same host, or a homeserver that places workers on ${host.name} (workers.placement or an instance's host)`
          : `${host.name} is given workers by several homeservers (${mains.join(', ')}); a host holds one homeserver's configuration`,
        mains.length === 0
          ? `add synapse to hosts.${host.name}.roles, or set workers.placement (e.g. { generic: ${host.name} }) on the synapse host`
          : "place each homeserver's workers on hosts of their own",
      )
      continue
    }
    const main = specs.find((h) => h.name === mains[0])!
    // The worker set is the homeserver's: the worker host renders the same names, ports and placement.
    host.vars.workers = { ...main.vars.workers, enabled: true }
    origins.set(host.name, entryOf(main.name))
  }
  for (const main of specs.filter((h) => h.roles.includes('synapse') && spansHosts(h.vars))) {
    const hosts = [main, ...specs.filter((h) => h.vars.workers.homeserverHost === main.name && h !== main)]
    const addresses: Record<string, string> = {}
    for (const h of hosts) {
      addresses[h.name] = h.privateAddress
      if (isIP(h.privateAddress) === 0) {
        const raw = entryOf(h.name).raw
        ctx.add(
          ['hosts', h.name, raw.privateAddress !== undefined ? 'privateAddress' : 'address'],
          `${h.name} runs workers of a homeserver spread over several hosts: its listeners bind to its private address, which must be an IP address, got "${h.privateAddress}"`,
          `set hosts.${h.name}.privateAddress to the IP the homeserver's hosts reach it at`,
        )
      }
    }
    for (const h of hosts) h.vars.workers.addresses = addresses
    checkSharedAcrossHosts(
      ctx,
      main,
      hosts.filter((h) => h !== main).map((h) => h.name),
    )
    checkMediaStore(ctx, main)
    // Each worker host connects to Postgres: an explicit allowFrom must name it (pg_hba, the firewall).
    const pgHost = specs.find((h) => h.name === main.vars.postgres.host)
    if (pgHost && ctx.varsOrigin(pgHost.name, ['postgres', 'allowFrom'])) {
      for (const h of hosts.filter((x) => x !== main && x !== pgHost && !pgHost.vars.postgres.allowFrom?.includes(x.name))) {
        ctx.addForVar(
          pgHost.name,
          ['postgres', 'allowFrom'],
          `${h.name} runs workers of ${main.name} and connects to Postgres on ${pgHost.name}, but postgres.allowFrom does not list it`,
          `add ${h.name} to postgres.allowFrom, or remove allowFrom (by default every host with the synapse or workers role)`,
        )
      }
    }
  }
  return origins
}

/**
 * The media store lives on one host: media repositories on several hosts would each keep their own
 * (nothing here shares a store), and the scheduled backup on the synapse host reads only its own disk.
 */
export function checkMediaStore(ctx: LoadContext, main: HostSpec): void {
  const repositories = ofKind(workerInstances(main.vars), 'media_repository')
  const hosts = [...new Set(repositories.map((w) => w.host ?? main.name))]
  if (hosts.length > 1) {
    ctx.addForVar(
      main.name,
      ['workers'],
      `the media repositories (${repositories.map((w) => w.name).join(', ')}) run on several hosts (${hosts.join(', ')}); each would keep its own media store`,
      'place every media_repository worker on one host',
    )
  }
  const store = mediaStoreHost(main)
  const entry = ctx.hosts.find((h) => h.name === main.name)
  if (store !== main.name && entry && main.roles.includes('backup')) {
    ctx.addForRole(
      entry,
      'backup',
      `the scheduled backup runs on ${main.name}, but the media store is on ${store} (its media_repository worker): the timer would back up no media`,
      `take backups with provision backup from the controller (it reads the media from ${store}), or keep the media_repository worker on ${main.name}`,
    )
  }
}

/** Every host of a spread homeserver reads the same secrets and signing key: none may be generated on one host. */
export function checkSharedAcrossHosts(ctx: LoadContext, main: HostSpec, others: string[]): void {
  const v = main.vars
  const where = `the workers on ${others.join(', ')} read it too, and a value generated on ${main.name} cannot be read there`
  const shared: [string[], SecretValue | undefined][] = [
    [['postgres', 'password'], v.postgres.password],
    [['synapse', 'macaroonSecret'], v.synapse.macaroonSecret],
    [['synapse', 'formSecret'], v.synapse.formSecret],
    [['synapse', 'registrationSharedSecret'], v.synapse.registrationSharedSecret],
    [['workers', 'replicationSecret'], v.workers.replicationSecret],
  ]
  for (const [sub, value] of shared) {
    if (value?.kind === 'generate')
      ctx.addForVar(
        main.name,
        sub,
        `${sub.join('.')} is generated (the default or { generate: true }), but ${where}`,
        `set ${sub.join('.')} to { env: NAME } or { file: path } in defaults.vars`,
      )
  }
  if (v.redis.password === undefined || v.redis.password.kind === 'generate') {
    ctx.addForVar(
      main.name,
      ['redis', 'password'],
      `redis.password must be set: Redis is reached from ${others.join(', ')}, and it never listens beyond loopback without a password`,
      'set redis.password to { env: NAME } or { file: path } in defaults.vars',
    )
  }
  if (v.synapse.install !== 'pip') {
    ctx.addForVar(
      main.name,
      ['synapse', 'install'],
      `workers on other hosts install Synapse with the pip method (the package would start a main process of its own on ${others.join(', ')})`,
      'set synapse.install: pip (with synapse.version or a wheelhouse)',
    )
  }
  if (v.synapse.signingKey === undefined) {
    ctx.addForVar(
      main.name,
      ['synapse', 'signingKey'],
      `synapse.signingKey must be set: the workers on ${others.join(', ')} sign with the server's key, which Synapse would otherwise generate on ${main.name} alone`,
      'copy the key (/etc/matrix-synapse/homeserver.signing.key of a running server, or one from python -m synapse._scripts.generate_signing_key) and set synapse.signingKey to { file: path } or { env: NAME }',
    )
  }
}
