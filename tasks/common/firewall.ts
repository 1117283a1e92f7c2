import { aptPackages } from '../../src/resources/apt-packages.js'
import { directory, file } from '../../src/resources/file.js'
import type { Resource } from '../../src/resources/resource.js'
import { service } from '../../src/resources/systemd-service.js'

const DIR = '/etc/matrix-provision/firewall'
export const FIREWALL_UNIT_PATH = '/etc/systemd/system/matrix-provision-firewall@.service'

/** nftables rules that let only the given addresses (and loopback) reach a port or ports; its own table per name. */
export function renderFirewall(name: string, ports: number | readonly number[], allowed: string[]): string {
  const list = [...new Set(typeof ports === 'number' ? [ports] : ports)].sort((a, b) => a - b)
  if (list.length === 0) throw new Error(`firewall ${name}: no port to restrict`)
  const port = list.length === 1 ? String(list[0]) : `{ ${list.join(', ')} }`
  const table = `mp_${name.replace(/[^a-z0-9_]/g, '_')}`
  const v4 = allowed.filter((a) => !a.includes(':'))
  const v6 = allowed.filter((a) => a.includes(':'))
  return [
    '# Managed by matrix-provision: only these clients may reach this port (pg_hba and Redis AUTH still apply).',
    // Declaring then deleting the table makes a reload replace our rules and nothing else.
    `table inet ${table}`,
    `delete table inet ${table}`,
    `table inet ${table} {`,
    '  chain input {',
    '    type filter hook input priority filter - 10; policy accept;',
    '    iif "lo" accept',
    ...(v4.length ? [`    ip saddr { ${v4.join(', ')} } tcp dport ${port} accept`] : []),
    ...(v6.length ? [`    ip6 saddr { ${v6.join(', ')} } tcp dport ${port} accept`] : []),
    `    tcp dport ${port} drop`,
    '  }',
    '}',
    '',
  ].join('\n')
}

export function renderFirewallUnit(): string {
  return `# Managed by matrix-provision.
[Unit]
Description=matrix-provision firewall rules for %i
Wants=network-pre.target
Before=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/nft -f ${DIR}/%i.nft
ExecReload=/usr/sbin/nft -f ${DIR}/%i.nft

[Install]
WantedBy=multi-user.target
`
}

/**
 * Restrict a service port to the hosts that need it: Postgres and Redis on a database host accept only
 * the Synapse hosts; the replication, worker and metrics listeners of a homeserver spread over hosts
 * accept only that homeserver's hosts (table mp_synapse). Rules live in their own nftables table, loaded by a template unit at boot.
 */
export function firewallResources(name: string, port: number | readonly number[], allowed: string[]): Resource[] {
  const path = `${DIR}/${name}.nft`
  return [
    aptPackages({ packages: ['nftables'] }),
    directory({ path: '/etc/matrix-provision' }),
    directory({ path: DIR }),
    file({ path: FIREWALL_UNIT_PATH, content: renderFirewallUnit() }),
    file({ path, content: renderFirewall(name, port, allowed) }),
    service({ unit: `matrix-provision-firewall@${name}.service`, watch: [path, FIREWALL_UNIT_PATH], reload: true }),
  ]
}
