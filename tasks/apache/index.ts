import { readFileSync } from 'node:fs'
import { dirname } from 'node:path'
import type { AfterCheck, BeforeCheck, CheckOutcome, Task, TaskContext } from '../../src/engine/task.js'
import { memoryMiB } from '../../src/facts/system.js'
import { instancesOn } from '../../src/inventory/workers.js'
import { workerHosts } from '../../src/topology/instances.js'
import { KINDS, MAIN_PROCESS_MEMORY_MIB } from '../../src/synapse/worker-kinds.js'
import { MPM_CONF_PATH, mpmSizing, renderMpmConf } from './mpm.js'
import type { MatrixSettings } from '../../src/inventory/types.js'
import { aptPackages } from '../../src/resources/apt-packages.js'
import { command } from '../../src/resources/command.js'
import { directory, file, symlink } from '../../src/resources/file.js'
import type { Resource } from '../../src/resources/resource.js'
import { service } from '../../src/resources/systemd-service.js'
import type { Connection } from '../../src/ssh/connection.js'
import { joinShell, raw, sh, type ShellCommand } from '../../src/core/shell.js'
import { portAvailable, supportedTarget } from '../common/checks.js'
import { installedSynapseVersion } from '../synapse/index.js'
import type { RenderedFile } from '../common/rendered-file.js'
import {
  ACME_WEBROOT,
  apacheModules,
  MATRIX_SITE_PATH,
  renderAcmeConf,
  renderMasVhost,
  renderMatrixVhost,
  renderPortsConf,
  renderServerNameVhost,
  SITES_AVAILABLE,
  type TlsFiles,
} from './templates.js'

export const TLS_DIR = '/etc/ssl/matrix-provision'

/** Our certificate paths, whatever the TLS mode: self-signed, uploaded files, or copied there by certbot's deploy hook. */
export function tlsFiles(vars: MatrixSettings): TlsFiles {
  return { certFile: `${TLS_DIR}/${vars.publicHost}.crt`, keyFile: `${TLS_DIR}/${vars.publicHost}.key` }
}

/** Names the certificate must cover: the API host, the delegation host, Element's host. */
export function tlsNames(ctx: TaskContext): string[] {
  const v = ctx.host.vars
  return [
    ...new Set([
      v.publicHost,
      v.serverName.replace(/:\d+$/, ''),
      ...(ctx.host.roles.includes('element') ? [v.element.host] : []),
      ...(ctx.host.roles.includes('mas') ? [v.mas.host] : []),
    ]),
  ]
}

/** A rendered template as a file resource. */
export const fileFrom = (f: RenderedFile): Resource =>
  file({ path: f.path, content: f.content, owner: f.owner, group: f.group, mode: f.mode, sensitive: f.sensitive })

/** /var/www/a/b/c/file -> [/var/www/a, /var/www/a/b, /var/www/a/b/c] */
export function ancestorsBelow(root: string, path: string): string[] {
  const parts = path
    .slice(root.length + 1)
    .split('/')
    .slice(0, -1)
  return parts.map((_p, i) => `${root}/${parts.slice(0, i + 1).join('/')}`)
}

/** Enable a site or conf the way a2ensite does: a relative symlink in *-enabled. */
export function enabled(availablePath: string): Resource {
  const m = /^\/etc\/apache2\/(sites|conf)-available\/(.+)$/.exec(availablePath)
  if (!m) throw new Error(`not an Apache *-available path: ${availablePath}`)
  return symlink({ path: `/etc/apache2/${m[1]}-enabled/${m[2]}`, target: `../${m[1]}-available/${m[2]}` })
}

/** Exits 0 when the certificate's subjectAltName lists every name (a name added later means a new certificate). */
function coversNames(certFile: string, names: readonly string[]) {
  return joinShell(
    names.map((n) => sh`openssl x509 -noout -ext subjectAltName -in ${certFile} | grep -q ${`DNS:${n}`}`),
    ' && ',
  )
}

/**
 * Self-signed: renewed when it expires within 30 days or no longer covers every name. In acme mode it
 * only bootstraps Apache before certbot's first certificate: it never replaces a certificate there
 * (certbot's own guard adds a missing name; a self-signed one meanwhile would break every client).
 */
function selfSignedCertificate(ctx: TaskContext, bootstrapOnly: boolean): Resource {
  const { certFile, keyFile } = tlsFiles(ctx.host.vars)
  const names = tlsNames(ctx)
  const san = names.map((n) => `DNS:${n}`).join(',')
  return command({
    name: 'self-signed certificate',
    summary: `generate a self-signed certificate for ${names.join(', ')} (${certFile}; key 0600)${bootstrapOnly ? ', until the ACME certificate replaces it' : ''}`,
    unless: bootstrapOnly
      ? sh`test -s ${keyFile} && test -s ${certFile}`
      : sh`test -s ${keyFile} && openssl x509 -checkend 2592000 -noout -in ${certFile} && ${coversNames(certFile, names)}`,
    command: sh`set -e; umask 077; mkdir -p ${TLS_DIR}; openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 825 -subj ${`/CN=${names[0]}`} -addext ${`subjectAltName=${san}`} -addext basicConstraints=critical,CA:TRUE -keyout ${`${keyFile}.new`} -out ${`${certFile}.new`}; chmod 0644 ${`${certFile}.new`}; mv -f ${`${keyFile}.new`} ${keyFile}; mv -f ${`${certFile}.new`} ${certFile}`,
    touches: [certFile, keyFile],
  })
}

/** The certificate Apache starts with; in acme mode a self-signed one until certbot replaces it (acmeResources). */
function certificateResources(ctx: TaskContext): Resource[] {
  const tls = ctx.host.vars.apache.tls
  if (tls.mode === 'files') {
    const { certFile, keyFile } = tlsFiles(ctx.host.vars)
    return [
      directory({ path: TLS_DIR, mode: 0o755 }),
      file({ path: certFile, content: readFileSync(tls.certificateFile!), mode: 0o644 }),
      file({ path: keyFile, content: readFileSync(tls.keyFile!, 'utf8'), mode: 0o600, sensitive: true }),
    ]
  }
  return [selfSignedCertificate(ctx, tls.mode === 'acme')]
}

/** Trust for a private ACME server's HTTPS certificate: certbot reads REQUESTS_CA_BUNDLE, also when its timer renews. */
export const ACME_CA_FILE = '/etc/matrix-provision/acme-server-ca.pem'
const CERTBOT_DROP_IN = '/etc/systemd/system/certbot.service.d/matrix-provision-acme-ca.conf'

/**
 * acme: certbot answers the HTTP-01 challenge from ACME_WEBROOT through the :80 vhost, so it runs once
 * the vhosts are written and enabled; its deploy hook copies each (re)issued certificate to our paths.
 */
function acmeResources(ctx: TaskContext): Resource[] {
  const tls = ctx.host.vars.apache.tls
  if (tls.mode !== 'acme') return []
  const { certFile, keyFile } = tlsFiles(ctx.host.vars)
  const names = tlsNames(ctx)
  const lineage = `/etc/letsencrypt/live/${names[0]}/fullchain.pem`
  const deploy = sh`install -m 0644 "$RENEWED_LINEAGE/fullchain.pem" ${certFile} && install -m 0600 "$RENEWED_LINEAGE/privkey.pem" ${keyFile} && ${reloadServing(ctx.host.vars)}`
  const server = tls.acmeServer ?? "Let's Encrypt"
  const challenges = renderAcmeConf()
  return [
    aptPackages({ packages: ['certbot'] }),
    fileFrom(challenges),
    enabled(challenges.path),
    ...(tls.acmeCaFile
      ? [
          directory({ path: '/etc/matrix-provision' }),
          file({ path: ACME_CA_FILE, content: readFileSync(tls.acmeCaFile), mode: 0o644 }),
          directory({ path: '/etc/systemd/system/certbot.service.d' }),
          file({
            path: CERTBOT_DROP_IN,
            content: `# Managed by matrix-provision: renewals trust the ACME server's CA.\n[Service]\nEnvironment=REQUESTS_CA_BUNDLE=${ACME_CA_FILE}\n`,
          }),
        ]
      : []),
    command({
      name: 'ACME certificate',
      summary: `obtain a certificate for ${names.join(', ')} from ${server} (HTTP-01, webroot ${ACME_WEBROOT})`,
      // Issued again when a wanted name is missing from its SAN list (Element's host added later), as
      // the self-signed path does; --expand replaces the lineage with one covering every name.
      unless: sh`test -s ${lineage} && ${coversNames(lineage, names)}`,
      command: sh`set -e; mkdir -p ${`${ACME_WEBROOT}/.well-known/acme-challenge`}; apache2ctl configtest; ${reloadServing(ctx.host.vars)}; ${tls.acmeCaFile ? sh`REQUESTS_CA_BUNDLE=${ACME_CA_FILE} ` : raw``}certbot certonly --webroot -w ${ACME_WEBROOT} ${names.flatMap((n) => ['-d', n])} --cert-name ${names[0]!} --expand ${tls.acmeServer ? ['--server', tls.acmeServer] : []} -m ${tls.acmeEmail ?? ''} --agree-tos -n --deploy-hook ${deploy.text}`,
      touches: [certFile, keyFile],
    }),
  ]
}

/** curl on the host against Apache, resolving the vhost name to loopback and trusting our certificate. */
export async function curlVhost(
  conn: Connection,
  ctx: TaskContext,
  host: string,
  path: string,
  options: { headers?: boolean } = {},
): Promise<{ ok: boolean; body: string; detail: string }> {
  const v = ctx.host.vars
  const port = v.apache.httpsPort
  // Self-signed: trust exactly our certificate. Otherwise the host's CA store plus the CAs the
  // inventory trusts for federation (a private CA issues both in closed networks).
  const trust = v.apache.tls.mode === 'self-signed' ? sh`--cacert ${tlsFiles(v).certFile}` : raw`--cacert "$b"`
  const bundle =
    v.apache.tls.mode === 'self-signed'
      ? raw``
      : raw`b=$(mktemp); trap 'rm -f "$b"' EXIT; cat /etc/ssl/certs/ca-certificates.crt /etc/matrix-synapse/federation-ca-*.pem > "$b" 2>/dev/null; `
  const url = `https://${host}:${port}${path}`
  const r = await conn.run(
    sh`${bundle}curl -sS --max-time 20 ${options.headers ? ['-i'] : []} -f ${trust} --resolve ${`${host}:${port}:127.0.0.1`} ${url}`,
    { timeoutMs: 60_000, allowFailure: true },
  )
  return { ok: r.code === 0, body: r.stdout, detail: r.code === 0 ? `${url} answered` : `${url}: ${r.stderr.trim().slice(0, 300)}` }
}

/** Where the MPM sizing Apache was last restarted with is kept (a reboot starts Apache with the file anyway). */
export const MPM_APPLIED_PATH = '/var/lib/matrix-provision/apache-mpm.conf'

/** ServerLimit is read only at start: a changed sizing needs a restart, not the reload other changes get. */
function mpmRestart(v: MatrixSettings): Resource {
  const { maxRequestWorkers } = mpmSizing(v.apache.maxClients)
  return command({
    name: 'apache mpm sizing',
    summary: `restart apache2 so that it holds ${maxRequestWorkers} requests at once (ServerLimit is read at start only)`,
    unless: sh`cmp -s ${MPM_CONF_PATH} ${MPM_APPLIED_PATH}`,
    command: sh`apache2ctl configtest && systemctl restart apache2.service && mkdir -p ${dirname(MPM_APPLIED_PATH)} && cp ${MPM_CONF_PATH} ${MPM_APPLIED_PATH}`,
    touches: [MPM_APPLIED_PATH],
  })
}

/**
 * The configuration generation of the child that answers (mod_status), read on loopback through the
 * homeserver's vhost: `apachectl graceful` returns before the new children serve, and until then a
 * request gets the old vhosts (Element's host answered 404 from the default vhost). Only a number is
 * read, so the certificate is not verified (it may be changing in this very reload).
 */
export function serverGeneration(v: MatrixSettings): ShellCommand {
  const port = v.apache.httpsPort
  return sh`curl -sk --max-time 10 --resolve ${`${v.publicHost}:${port}:127.0.0.1`} ${`https://${v.publicHost}:${port}/server-status?auto`} | sed -n ${'s/^ParentServerConfigGeneration: //p'}`
}

/**
 * `systemctl reload apache2` that returns once the new configuration serves (serverGeneration, 60 s at most), for
 * the reloads the run's restart ledger does not do: before certbot, whose ACME server fetches the challenge from
 * the vhost the reload enables, and in certbot's deploy hook, after which the new certificate must be the one
 * served (by the after-checks, and on renewals by certbot's timer).
 */
export function reloadServing(v: MatrixSettings): ShellCommand {
  const generation = serverGeneration(v)
  return sh`mp_g=$(${generation}); systemctl reload apache2; mp_i=0; until mp_n=$(${generation}); [ -n "$mp_n" ] && [ "$mp_n" != "$mp_g" ]; do [ "$mp_i" -lt 240 ] || { echo ${'apache2: reloaded, but its new configuration is not serving after 60 s'} >&2; exit 1; }; mp_i=$((mp_i + 1)); sleep 0.25; done`
}

/** Memory for the clients Apache is sized for, plus the Synapse processes of this host's worker set. */
export function memoryForClients(ctx: TaskContext): BeforeCheck {
  const v = ctx.host.vars
  const apache = mpmSizing(v.apache.maxClients).memoryMiB
  const processes = ctx.host.roles.includes('synapse')
    ? [MAIN_PROCESS_MEMORY_MIB, ...instancesOn(v, ctx.host.name).map((w) => KINDS[w.kind].memoryMiB)]
    : []
  const synapse = processes.reduce((a, b) => a + b, 0)
  const need = apache + synapse
  return {
    name: `memory for ${v.apache.maxClients} clients and ${processes.length} Synapse processes (about ${need} MiB)`,
    facts: [memoryMiB],
    evaluate(facts) {
      const have = facts.get(memoryMiB)
      const what = `Apache holding ${v.apache.maxClients} long-polls needs about ${apache} MiB${processes.length ? `, Synapse's ${processes.length} processes about ${synapse} MiB` : ''}`
      return have >= need
        ? { ok: true, detail: `${what}; the host has ${have} MiB` }
        : {
            ok: false,
            detail: `${what}, ${need} MiB in all; the host has ${have} MiB: lower apache.maxClients, choose a smaller worker preset, or add memory`,
          }
    },
  }
}

export const apacheTask: Task = {
  name: 'apache',
  title: 'Apache reverse proxy with TLS, worker routes and .well-known delegation',
  // Its after-checks go through routes that workers on other hosts serve: those come first (a spread
  // set's generic worker on db answered 503 while db's workers task was still installing).
  needs: (ctx) =>
    workerHosts(ctx.inventory, ctx.host.name)
      .filter((host) => host !== ctx.host.name)
      .map((host) => ({ host, task: 'workers' as const })),
  before: (ctx) => [
    supportedTarget,
    portAvailable(ctx.host.vars.apache.httpsPort, ['apache2'], 'Apache HTTPS'),
    portAvailable(80, ['apache2'], 'Apache HTTP'),
    memoryForClients(ctx),
  ],
  resources(ctx) {
    const v = ctx.host.vars
    const tls = tlsFiles(v)
    const workers = ctx.host.roles.includes('workers')
    const synapseVersion = installedSynapseVersion(v)
    const sites = [
      renderMatrixVhost(v, { ...tls, workers, synapseVersion }),
      ...renderServerNameVhost(v, { ...tls, workers, synapseVersion }),
      ...(ctx.host.roles.includes('mas') ? [renderMasVhost(v, tls)] : []),
    ]
    const ports = renderPortsConf(v)
    const mpm = renderMpmConf(v)
    const modules = apacheModules(v, workers)
    return [
      aptPackages({ packages: ['apache2', 'openssl', 'curl'], provides: { units: ['apache2.service'], paths: ['/etc/apache2'] } }),
      command({
        name: 'apache modules',
        summary: `enable Apache modules ${modules.join(' ')}`,
        unless: joinShell(
          modules.map((m) => sh`test -e ${`/etc/apache2/mods-enabled/${m}.load`}`),
          ' && ',
        ),
        command: sh`a2enmod -q ${modules}`,
        touches: ['/etc/apache2/mods-enabled/'],
      }),
      ...certificateResources(ctx),
      // Directories of the files outside /etc/apache2 (the .well-known tree), parents first.
      ...[...new Set(sites.filter((f) => !f.path.startsWith('/etc/apache2/')).flatMap((f) => ancestorsBelow('/var/www', f.path)))].map(
        (path) => directory({ path }),
      ),
      ...sites.map(fileFrom),
      ...sites.filter((s) => s.path.startsWith(SITES_AVAILABLE)).map((s) => enabled(s.path)),
      fileFrom(ports),
      enabled(ports.path),
      fileFrom(mpm),
      enabled(mpm.path),
      service({
        unit: 'apache2.service',
        watch: ['/etc/apache2/', 'pkg:apache2', `${TLS_DIR}/`],
        reload: true,
        validate: sh`apache2ctl configtest`,
        generation: serverGeneration(v),
      }),
      mpmRestart(v),
      ...acmeResources(ctx),
    ]
  },
  after(ctx) {
    const v = ctx.host.vars
    const checks: AfterCheck[] = [
      {
        name: `https://${v.publicHost} proxies the client API`,
        async run(conn): Promise<CheckOutcome> {
          if (!ctx.host.roles.includes('synapse'))
            return { ok: true, warning: false, detail: 'Synapse is on another host; proxy not checked here' }
          const r = await curlVhost(conn, ctx, v.publicHost, '/_matrix/client/versions')
          return r.ok && r.body.includes('"versions"') ? { ok: true, detail: r.detail } : { ok: false, detail: r.detail }
        },
      },
    ]
    if (v.apache.delegation === 'well-known') {
      checks.push({
        name: '.well-known/matrix/server and /client are valid JSON',
        async run(conn): Promise<CheckOutcome> {
          const host = v.serverName.replace(/:\d+$/, '')
          for (const [name, key] of [
            ['server', 'm.server'],
            ['client', 'm.homeserver'],
          ] as const) {
            const r = await curlVhost(conn, ctx, host, `/.well-known/matrix/${name}`)
            if (!r.ok) return { ok: false, detail: r.detail }
            try {
              if (!(key in (JSON.parse(r.body) as object))) return { ok: false, detail: `/.well-known/matrix/${name} lacks ${key}` }
            } catch {
              return { ok: false, detail: `/.well-known/matrix/${name} is not JSON: ${r.body.slice(0, 100)}` }
            }
          }
          return { ok: true, detail: 'both valid' }
        },
      })
    }
    return checks
  },
}

export { MATRIX_SITE_PATH }
