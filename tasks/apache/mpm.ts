/**
 * Apache sized for long-polls. Every connected Matrix client keeps a /sync request open (up to its
 * timeout, 30 s for Element), and mod_proxy holds one mpm_event worker thread per request in flight.
 * Debian's default (MaxRequestWorkers 150) froze the sandbox for everyone once 150 clients were
 * connected: a plain /_matrix/client/versions then waited for a long-poll to end (17 s with 160
 * idle clients, 37 s with 400). apache.maxClients sets how many requests Apache holds at once.
 *
 * Long-polls alone must never take every thread: past that, a plain request waits for a long-poll to
 * end (2,000 idle clients at MaxRequestWorkers 1024: 18 s). The sync routes go through a mod_proxy
 * pool capped at LONG_POLLS_PER_CHILD connections per child process (templates.ts, `max=`), so each
 * child keeps the rest of its threads for everything else; the children are sized so that the
 * long-polls of apache.maxClients clients fit under that cap.
 *
 * The file is loaded after mods-enabled/mpm_event.conf (conf-enabled comes later in apache2.conf),
 * so its values win. ServerLimit is read only when Apache starts (a graceful reload ignores a new
 * one), hence the restart in tasks/apache/index.ts when this file changes.
 */
import type { MatrixSettings } from '../../src/inventory/types.js'
import type { RenderedFile } from '../common/rendered-file.js'
import { LONG_POLLS_PER_CHILD, mpmSizing, THREADS_PER_CHILD } from '../../src/topology/proxy-capacity.js'

export const MPM_CONF_PATH = '/etc/apache2/conf-available/matrix-mpm.conf'
export {
  APACHE_CHILD_MIB,
  APACHE_THREAD_MIB,
  LONG_POLL_ACQUIRE_MS,
  LONG_POLLS_PER_CHILD,
  mpmSizing,
  THREADS_PER_CHILD,
  type MpmSizing,
} from '../../src/topology/proxy-capacity.js'

export function renderMpmConf(vars: MatrixSettings): RenderedFile {
  const { serverLimit, maxRequestWorkers, longPolls, reserve } = mpmSizing(vars.apache.maxClients)
  const content = `# Managed by matrix-provision: changes here are overwritten on the next run.
# apache.maxClients = ${vars.apache.maxClients}: every connected client holds one /sync long-poll, and
# mod_proxy one worker thread for it. The sync routes may hold ${LONG_POLLS_PER_CHILD} connections per child
# (${longPolls} in all); the other ${reserve} threads stay free for every other request.
# Every child runs from the start and stays, also after a graceful reload (which starts children
# only as MinSpareThreads asks): the long-poll cap is per child, so a child not yet spawned would
# turn clients away (503) while the others fill up.
# ServerLimit takes effect on a restart, not on a reload.
<IfModule mpm_event_module>
    ServerLimit              ${serverLimit}
    ThreadLimit              ${THREADS_PER_CHILD}
    ThreadsPerChild          ${THREADS_PER_CHILD}
    MaxRequestWorkers        ${maxRequestWorkers}
    StartServers             ${serverLimit}
    MinSpareThreads          ${maxRequestWorkers}
    MaxSpareThreads          ${maxRequestWorkers}
    MaxConnectionsPerChild   0
</IfModule>
`
  return { path: MPM_CONF_PATH, content, mode: 0o644, owner: 'root', group: 'root', sensitive: false }
}
