/**
 * Apache sized for long-polls. Every connected Matrix client keeps a /sync request open (up to its
 * timeout, 30 s for Element), and mod_proxy holds one mpm_event worker thread per request in flight.
 * Debian's default (MaxRequestWorkers 150) froze the sandbox for everyone once 150 clients were
 * connected: a plain /_matrix/client/versions then waited for a long-poll to end (17 s with 160
 * idle clients, 37 s with 400). apache.maxClients sets how many requests Apache holds at once.
 *
 * The file is loaded after mods-enabled/mpm_event.conf (conf-enabled comes later in apache2.conf),
 * so its values win. ServerLimit is read only when Apache starts (a graceful reload ignores a new
 * one), hence the restart in tasks/apache/index.ts when this file changes.
 */
import type { MatrixSettings } from '../../src/inventory/types.js'
import type { RenderedFile } from '../common/rendered-file.js'

export const MPM_CONF_PATH = '/etc/apache2/conf-available/matrix-mpm.conf'
/** Debian's ThreadLimit: threads per child process without raising the compiled-in ceiling. */
export const THREADS_PER_CHILD = 64

/**
 * Resident memory of Apache holding `maxClients` long-polls through mod_proxy, MiB: a base per child
 * process and a share per busy thread (its stack in use and proxy buffers). These are estimates
 * erring high; bench/workers.js prints what Apache really holds under its load run.
 */
export const APACHE_CHILD_MIB = 12
export const APACHE_THREAD_MIB = 0.25

export function mpmSizing(maxClients: number): { serverLimit: number; maxRequestWorkers: number; memoryMiB: number } {
  const serverLimit = Math.ceil(maxClients / THREADS_PER_CHILD)
  const maxRequestWorkers = serverLimit * THREADS_PER_CHILD
  return { serverLimit, maxRequestWorkers, memoryMiB: Math.ceil(serverLimit * APACHE_CHILD_MIB + maxRequestWorkers * APACHE_THREAD_MIB) }
}

export function renderMpmConf(vars: MatrixSettings): RenderedFile {
  const { serverLimit, maxRequestWorkers } = mpmSizing(vars.apache.maxClients)
  const content = `# Managed by matrix-provision: changes here are overwritten on the next run.
# apache.maxClients = ${vars.apache.maxClients}: every connected client holds one /sync long-poll, and
# mod_proxy one worker thread for it. ServerLimit takes effect on a restart, not on a reload.
<IfModule mpm_event_module>
    ServerLimit              ${serverLimit}
    ThreadLimit              ${THREADS_PER_CHILD}
    ThreadsPerChild          ${THREADS_PER_CHILD}
    MaxRequestWorkers        ${maxRequestWorkers}
    StartServers             2
    MinSpareThreads          ${THREADS_PER_CHILD}
    MaxSpareThreads          ${Math.max(THREADS_PER_CHILD * 4, Math.ceil(maxRequestWorkers / 4 / THREADS_PER_CHILD) * THREADS_PER_CHILD)}
    MaxConnectionsPerChild   0
</IfModule>
`
  return { path: MPM_CONF_PATH, content, mode: 0o644, owner: 'root', group: 'root', sensitive: false }
}
