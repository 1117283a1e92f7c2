/**
 * Apache as the reverse proxy (docs/reverse_proxy.md, unchanged since 2022), the delegation of
 * the server name (docs/delegate.md) and Element's own vhost.
 *
 * Files: /etc/apache2/sites-available/{matrix,matrix-delegation,element}.conf (the task runs
 * a2ensite), /etc/apache2/conf-available/matrix-ports.conf (a2enconf) and the two .well-known JSON
 * files under /var/www/matrix-well-known/.
 *
 * Values that end up in Apache syntax are checked where they are written (checked.ts); the proxying
 * of Synapse's paths to main and the workers is proxy.ts.
 */
import type { MatrixSettings } from '../../src/inventory/types.js'
import type { RenderedFile } from '../common/rendered-file.js'
import { HEADER, hostName, httpsUrl, port, quotedPath, serverNameHost } from './checked.js'
import { proxyToSynapse } from './proxy.js'

/** Modules the rendered vhosts use: ssl (SSLEngine), proxy + proxy_http (ProxyPass*), headers
 * (RequestHeader, Header), alias (Redirect, RedirectMatch, Alias). Core covers ForceType, Require. */
export const APACHE_MODULES: readonly string[] = ['ssl', 'proxy', 'proxy_http', 'headers', 'alias']
/** mod_proxy_balancer and what it needs, for worker pools of more than one member. */
export const BALANCER_MODULES: readonly string[] = ['proxy_balancer', 'lbmethod_byrequests', 'slotmem_shm']

/** mod_status: Debian's loopback-only /server-status, where a run reads which configuration serves after a reload (serverGeneration). */
export const STATUS_MODULE = 'status'

/** The modules these settings need: the balancer always, since the long-poll routes go through a capped pool. */
export function apacheModules(_vars: MatrixSettings, _workers: boolean): readonly string[] {
  return [...APACHE_MODULES, ...BALANCER_MODULES, STATUS_MODULE]
}

export const SITES_AVAILABLE = '/etc/apache2/sites-available'
export const MATRIX_SITE_PATH = `${SITES_AVAILABLE}/matrix.conf`
export const DELEGATION_SITE_PATH = `${SITES_AVAILABLE}/matrix-delegation.conf`
export const ELEMENT_SITE_PATH = `${SITES_AVAILABLE}/element.conf`
export const PORTS_CONF_PATH = '/etc/apache2/conf-available/matrix-ports.conf'
export const WELL_KNOWN_ROOT = '/var/www/matrix-well-known'
export const WELL_KNOWN_DIR = `${WELL_KNOWN_ROOT}/.well-known/matrix`
export const ELEMENT_DOCUMENT_ROOT = '/var/www/element/current'
/** certbot --webroot -w ACME_WEBROOT: the http vhosts serve its challenges instead of redirecting them. */
export const ACME_WEBROOT = '/var/www/acme'

export interface VhostOptions {
  certFile: string
  keyFile: string
  /** Route requests to the workers of the set (src/topology/routing.ts). */
  workers: boolean
  /** The installed Synapse release, for its route table (default: the pinned version, else the newest table). */
  synapseVersion?: string
}

export type TlsFiles = Pick<VhostOptions, 'certFile' | 'keyFile'>

// ---------------------------------------------------------------------------------------------
// Pieces

function tlsLines(opts: TlsFiles): string[] {
  return [
    '    SSLEngine on',
    `    SSLCertificateFile ${quotedPath(opts.certFile, 'certFile')}`,
    `    SSLCertificateKeyFile ${quotedPath(opts.keyFile, 'keyFile')}`,
  ]
}

/** *:80 -> https. With ACME, challenges are served from ACME_WEBROOT instead of redirected. */
function redirectVhost(vars: MatrixSettings, host: string): string[] {
  const target = httpsUrl(host, port(vars.apache.httpsPort, 'apache.httpsPort'))
  const acme = vars.apache.tls.mode === 'acme'
  return [
    '<VirtualHost *:80>',
    `    ServerName ${host}`,
    ...(acme
      ? [
          `    Alias /.well-known/acme-challenge/ "${ACME_WEBROOT}/.well-known/acme-challenge/"`,
          `    <Directory "${ACME_WEBROOT}/.well-known/acme-challenge/">`,
          '        Require all granted',
          '    </Directory>',
          `    RedirectMatch permanent "^/(?!\\.well-known/acme-challenge/)(.*)$" "${target}/$1"`,
        ]
      : [`    Redirect permanent / ${target}/`]),
    '</VirtualHost>',
  ]
}

function wellKnownDirectory(): string[] {
  return [
    `    <Directory "${WELL_KNOWN_DIR}">`,
    '        Options None',
    '        AllowOverride None',
    '        Require all granted',
    '        ForceType application/json',
    '        Header set Access-Control-Allow-Origin "*"',
    '    </Directory>',
  ]
}

/** Server name and public host are one: the .well-known files are served by the matrix vhost. */
const wellKnownOnPublicHost = (vars: MatrixSettings) =>
  vars.apache.delegation === 'well-known' && serverNameHost(vars.serverName) === vars.publicHost

// ---------------------------------------------------------------------------------------------
// Vhosts

/** The homeserver's vhost (publicHost on httpsPort) and its http -> https redirect. */
export function renderMatrixVhost(vars: MatrixSettings, opts: VhostOptions): RenderedFile {
  const host = hostName(vars.publicHost, 'publicHost')
  const httpsPort = port(vars.apache.httpsPort, 'apache.httpsPort')
  const lines = [
    ...httpsVhostHead(vars, host, httpsPort, opts),
    ...proxyToSynapse(vars, { workers: opts.workers, synapseVersion: opts.synapseVersion, clientPaths: true }),
  ]
  if (wellKnownOnPublicHost(vars)) {
    lines.push('', '    # The server name is this host: delegation files are served here.')
    lines.push(`    Alias /.well-known/matrix "${WELL_KNOWN_DIR}"`)
    lines.push(...wellKnownDirectory())
  }
  lines.push('</VirtualHost>')
  return { path: MATRIX_SITE_PATH, content: HEADER + lines.join('\n') + '\n', mode: 0o644, owner: 'root', group: 'root', sensitive: false }
}

/** {"m.server": "<publicHost>:<httpsPort>"}: federation goes to the proxy, not to <serverName>:8448. */
export function wellKnownServer(vars: MatrixSettings): string {
  return (
    JSON.stringify(
      { 'm.server': `${hostName(vars.publicHost, 'publicHost')}:${port(vars.apache.httpsPort, 'apache.httpsPort')}` },
      null,
      2,
    ) + '\n'
  )
}

/** {"m.homeserver": {"base_url": ...}}: client discovery for @user:<serverName>. */
export function wellKnownClient(vars: MatrixSettings): string {
  return JSON.stringify({ 'm.homeserver': { base_url: vars.publicBaseUrl.replace(/\/+$/, '') } }, null, 2) + '\n'
}

/** The :80 redirect vhost, then the opening of the https vhost with its TLS lines (left open). */
function httpsVhostHead(vars: MatrixSettings, host: string, httpsPort: number, opts: TlsFiles): string[] {
  return [...redirectVhost(vars, host), '', `<VirtualHost *:${httpsPort}>`, `    ServerName ${host}`, ...tlsLines(opts), '']
}

/** An https vhost serving static files from `root` (after the :80 redirect vhost), with extra lines inside. */
function staticSite(
  vars: MatrixSettings,
  host: string,
  httpsPort: number,
  opts: TlsFiles,
  root: string,
  options: string,
  inner: string[],
): string[] {
  return [
    ...httpsVhostHead(vars, host, httpsPort, opts),
    `    DocumentRoot "${root}"`,
    `    <Directory "${root}">`,
    `        Options ${options}`,
    '        AllowOverride None',
    '        Require all granted',
    '    </Directory>',
    ...inner,
    '</VirtualHost>',
  ]
}

/**
 * Delegation of the server name.
 * - well-known: a vhost for serverName on httpsPort serving /.well-known/matrix/{server,client}
 *   (plus the two JSON files). When serverName is publicHost the matrix vhost serves them and only
 *   the JSON files are returned. Note: this vhost takes the server name's https site over.
 * - port-8448: a vhost for serverName on *:8448 proxying /_matrix (federation, with the worker
 *   routes) to Synapse; renderPortsConf adds `Listen 8448`.
 */
export function renderServerNameVhost(vars: MatrixSettings, opts: VhostOptions): RenderedFile[] {
  const host = serverNameHost(vars.serverName)
  const httpsPort = port(vars.apache.httpsPort, 'apache.httpsPort')
  if (vars.apache.delegation === 'port-8448') {
    const lines = [
      '<VirtualHost *:8448>',
      `    ServerName ${host}`,
      ...tlsLines(opts),
      '',
      ...proxyToSynapse(vars, { workers: opts.workers, synapseVersion: opts.synapseVersion, clientPaths: false }),
      '</VirtualHost>',
    ]
    return [
      {
        path: DELEGATION_SITE_PATH,
        content: HEADER + lines.join('\n') + '\n',
        mode: 0o644,
        owner: 'root',
        group: 'root',
        sensitive: false,
      },
    ]
  }

  const json = (name: string, content: string): RenderedFile => ({
    path: `${WELL_KNOWN_DIR}/${name}`,
    content,
    mode: 0o644,
    owner: 'root',
    group: 'root',
    sensitive: false,
  })
  const files = [json('server', wellKnownServer(vars)), json('client', wellKnownClient(vars))]
  if (wellKnownOnPublicHost(vars)) return files

  const lines = staticSite(vars, host, httpsPort, opts, WELL_KNOWN_ROOT, 'None', wellKnownDirectory())
  return [
    { path: DELEGATION_SITE_PATH, content: HEADER + lines.join('\n') + '\n', mode: 0o644, owner: 'root', group: 'root', sensitive: false },
    ...files,
  ]
}

/**
 * Element's own vhost (never the homeserver's host name: XSS). Security headers and no-cache rules
 * from element-web's README.
 */
export function renderElementVhost(vars: MatrixSettings, opts: TlsFiles): RenderedFile {
  const host = hostName(vars.element.host, 'element.host')
  if (host === vars.publicHost)
    throw new Error(`element.host must differ from publicHost (${host}): Element on the homeserver's origin is an XSS risk`)
  const httpsPort = port(vars.apache.httpsPort, 'apache.httpsPort')
  const lines = staticSite(vars, host, httpsPort, opts, ELEMENT_DOCUMENT_ROOT, 'FollowSymLinks', [
    '',
    '    Header set X-Frame-Options SAMEORIGIN',
    '    Header set X-Content-Type-Options nosniff',
    '    Header set X-XSS-Protection "1; mode=block"',
    `    Header set Content-Security-Policy "frame-ancestors 'self'"`,
    '',
    "    # Debian's mods-enabled/alias.conf maps /icons/ to Apache's own icons server-wide, which hides",
    "    # Element's icons/ (the composer's icons answered 404); a vhost's Alias is tried first.",
    `    Alias /icons/ "${ELEMENT_DOCUMENT_ROOT}/icons/"`,
    '',
    '    # Never cached: /, /index.html, /version, /config*.json, /i18n/ (new releases must show up).',
    '    <LocationMatch "^/(?:index\\.html|version|config[^/]*\\.json|i18n/.*)?$">',
    '        Header set Cache-Control "no-cache"',
    '    </LocationMatch>',
  ])
  return { path: ELEMENT_SITE_PATH, content: HEADER + lines.join('\n') + '\n', mode: 0o644, owner: 'root', group: 'root', sensitive: false }
}

export const MAS_SITE_PATH = `${SITES_AVAILABLE}/matrix-auth.conf`

/** MAS on its own host name (the issuer https://<mas.host>/): everything proxied to its loopback listener. */
export function renderMasVhost(vars: MatrixSettings, opts: TlsFiles): RenderedFile {
  const host = hostName(vars.mas.host, 'mas.host')
  const target = `http://127.0.0.1:${port(vars.mas.port, 'mas.port')}/`
  const lines = [
    ...httpsVhostHead(vars, host, port(vars.apache.httpsPort, 'apache.httpsPort'), opts),
    '    RequestHeader set "X-Forwarded-Proto" expr=%{REQUEST_SCHEME}',
    '    ProxyPreserveHost on',
    '    ProxyRequests off',
    `    ProxyPass / ${target} nocanon`,
    `    ProxyPassReverse / ${target}`,
    '</VirtualHost>',
  ]
  return { path: MAS_SITE_PATH, content: HEADER + lines.join('\n') + '\n', mode: 0o644, owner: 'root', group: 'root', sensitive: false }
}

/**
 * Listen directives beyond Debian's ports.conf (80, and 443 with mod_ssl): httpsPort when it is not
 * 443, 8448 for port-8448 delegation. Always rendered (possibly without a Listen line) so that going
 * back to the defaults converges.
 */
export function renderPortsConf(vars: MatrixSettings): RenderedFile {
  const ports = new Set<number>()
  const httpsPort = port(vars.apache.httpsPort, 'apache.httpsPort')
  if (httpsPort !== 443) ports.add(httpsPort)
  if (vars.apache.delegation === 'port-8448') ports.add(8448)
  const lines = [...ports].sort((a, b) => a - b).map((p) => `Listen ${p} https`)
  const content = HEADER + (lines.length > 0 ? lines.join('\n') + '\n' : '# No port beyond ports.conf (80, 443) is needed.\n')
  return { path: PORTS_CONF_PATH, content, mode: 0o644, owner: 'root', group: 'root', sensitive: false }
}

export const ACME_CONF_PATH = '/etc/apache2/conf-available/matrix-acme.conf'

/**
 * acme: HTTP-01 challenges answered on every name from ACME_WEBROOT, server-wide, so a name whose vhost
 * a later task writes (Element's) is validated by the same certbot run. The redirect vhosts keep the path.
 */
export function renderAcmeConf(): RenderedFile {
  const content =
    HEADER +
    `Alias /.well-known/acme-challenge/ "${ACME_WEBROOT}/.well-known/acme-challenge/"\n` +
    `<Directory "${ACME_WEBROOT}/.well-known/acme-challenge/">\n    Require all granted\n</Directory>\n`
  return { path: ACME_CONF_PATH, content, mode: 0o644, owner: 'root', group: 'root', sensitive: false }
}
