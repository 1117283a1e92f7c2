/** The proxying of Synapse's paths: the MAS routes, the worker routes (src/topology/routing.ts), then main. */
import type { MatrixSettings } from '../../src/inventory/types.js'
import { workerInstances } from '../../src/inventory/workers.js'
import { MAS_COMPAT_ROUTES, routeTable } from '../../src/synapse/routes.js'
import { routingPlan, type RouteGroup } from '../../src/topology/routing.js'
import { port } from './checked.js'
import { LONG_POLL_ACQUIRE_MS, LONG_POLLS_PER_CHILD } from './mpm.js'

/**
 * A FEDERATION_READER_ROUTES regex as an Apache ProxyPassMatch pattern capturing the whole path in
 * $1: prefix routes get `.*`, anchored routes (`...$`) may be followed by a query string. With
 * `nocanon`, mod_proxy substitutes $1 from the raw request line when the pattern matches it too,
 * so the query string and %-encoding travel unchanged (a route that only matched the decoded path
 * would drop nocanon, with a warning).
 */
export function proxyPassMatchPattern(route: string): string {
  if (!route.startsWith('^')) throw new Error(`route must start with ^, got ${route}`)
  const body = route.slice(1)
  return body.endsWith('$') ? `^(${body.slice(0, -1)}(?:\\?.*)?)$` : `^(${body}.*)$`
}

/**
 * The long-poll routes' pool: a balancer even for one member, so that its connection pool is its own
 * (a plain ProxyPass to the same backend would share main's). `max` is per child process and member:
 * the members of a child together hold at most LONG_POLLS_PER_CHILD long-polls; one over that waits
 * LONG_POLL_ACQUIRE_MS for a connection, then gets a 503 instead of taking a reserved thread.
 */
function longPollPool(target: string, group: RouteGroup): string[] {
  const max = Math.max(1, Math.floor(LONG_POLLS_PER_CHILD / group.members.length))
  return [
    `    # At most ${max * group.members.length} long-polls per Apache child; its other threads serve everything else.`,
    `    <Proxy "${target}">`,
    ...group.members.map(
      (m) =>
        `        BalancerMember "http://${m.address}:${port(m.port, `worker ${m.name}'s port`)}" max=${max} acquire=${LONG_POLL_ACQUIRE_MS}`,
    ),
    '        ProxySet lbmethod=byrequests',
    '    </Proxy>',
  ]
}

/** The proxy lines of a vhost serving Synapse (clientPaths: also /_synapse/client and the MAS routes). */
export function proxyToSynapse(vars: MatrixSettings, opts: { workers: boolean; synapseVersion?: string; clientPaths: boolean }): string[] {
  const main = `http://127.0.0.1:${port(vars.synapse.listenPort, 'synapse.listenPort')}`
  const lines = [
    '    RequestHeader set "X-Forwarded-Proto" expr=%{REQUEST_SCHEME}',
    '    AllowEncodedSlashes NoDecode',
    '    ProxyPreserveHost on',
    '    ProxyRequests off',
    '',
    '    # mod_security2 breaks Matrix requests (reverse_proxy.md).',
    '    <IfModule security2_module>',
    '        SecRuleEngine off',
    '    </IfModule>',
    '',
  ]
  if (vars.mas.enabled && opts.clientPaths) {
    lines.push('    # Logins, logouts and token refreshes: the Matrix Authentication Service (role mas). Before every worker route.')
    for (const route of MAS_COMPAT_ROUTES)
      lines.push(`    ProxyPassMatch "${proxyPassMatchPattern(route)}" "http://127.0.0.1:${port(vars.mas.port, 'mas.port')}$1" nocanon`)
    lines.push('')
  }
  const table = routeTable(opts.synapseVersion ?? vars.synapse.version)
  const groups = opts.workers ? routingPlan(workerInstances(vars), table) : []
  // Without a sync worker the long-polls go to main, still through the capped pool.
  if (!groups.some((g) => g.longPoll)) {
    groups.push({
      title: 'Long-polls of the main process',
      pool: 'main',
      routes: table.generic.sync,
      members: [{ name: 'main', port: vars.synapse.listenPort, address: '127.0.0.1' }],
      longPoll: true,
    })
  }
  groups.forEach((group, i) => {
    lines.push(`    # ${group.title}.${i === 0 ? ' The first matching ProxyPass/ProxyPassMatch wins: these come first.' : ''}`)
    let target: string
    if (group.longPoll) {
      // Its own name: a pool of the same kind may serve other routes without the cap.
      target = `balancer://long-polls-${group.pool}`
      lines.push(...longPollPool(target, group))
    } else if (group.members.length === 1) {
      target = `http://${group.members[0]!.address}:${port(group.members[0]!.port, `worker ${group.members[0]!.name}'s port`)}`
    } else {
      // Round robin over the pool (Apache has no hash by user for sync: see the README).
      target = `balancer://${group.pool}`
      lines.push(`    <Proxy "${target}">`)
      for (const m of group.members) lines.push(`        BalancerMember "http://${m.address}:${port(m.port, `worker ${m.name}'s port`)}"`)
      lines.push('        ProxySet lbmethod=byrequests', '    </Proxy>')
    }
    for (const route of group.routes) lines.push(`    ProxyPassMatch "${proxyPassMatchPattern(route)}" "${target}$1" nocanon`)
    lines.push('')
  })
  lines.push('    # Everything else goes to the main process.')
  lines.push(`    ProxyPass /_matrix ${main}/_matrix nocanon`)
  lines.push(`    ProxyPassReverse /_matrix ${main}/_matrix`)
  if (opts.clientPaths) {
    lines.push(`    ProxyPass /_synapse/client ${main}/_synapse/client nocanon`)
    lines.push(`    ProxyPassReverse /_synapse/client ${main}/_synapse/client`)
  }
  return lines
}
