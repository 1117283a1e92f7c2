/**
 * The `adopt` step that runs before the role tasks on a server built by hand: a copy of its files,
 * its secrets into the host's secret store, the host record (from now on the tool's), and the old
 * vhost links and unit drop-ins out of service. The role tasks then convert the rest, with diffs.
 */
import { hostRecordResources, type HostOwnership, type HostRecord, type HostSecrets } from '../../engine/host-state.js'
import type { AdoptionReport } from '../../engine/report-types.js'
import type { Task } from '../../engine/task.js'
import { command } from '../../resources/command.js'
import type { Resource } from '../../resources/resource.js'
import { sh } from '../../core/shell.js'
import type { Adoption } from './reading.js'
import { ADOPTED_FILES_DIR } from '../../synapse/paths.js'

export const RETIRED_DIR = `${ADOPTED_FILES_DIR}/retired`

export const adoptionReport = (a: Adoption): AdoptionReport => ({
  notes: a.notes,
  secrets: a.secrets.map(({ name, from }) => ({ name, from })),
  backupDir: ADOPTED_FILES_DIR,
  retire: a.retire,
})

export function adoptionTask(adoption: Adoption, secrets: HostSecrets, ownership: HostOwnership, today: string): Task<'adopt'> {
  return {
    name: 'adopt',
    title: 'take over a Synapse built by hand: back up its files, keep its secrets, record the adoption',
    resources() {
      const files = [...new Set(adoption.backup)]
      const out: Resource[] = [
        command({
          name: 'back up the hand-built configuration',
          creates: ADOPTED_FILES_DIR,
          // Into a new directory renamed at the end: a copy cut short is redone by the next run. The copies
          // hold the server's secrets (an edited homeserver.yaml has the database password): root's only.
          command: sh`rm -rf ${`${ADOPTED_FILES_DIR}.new`} && install -d -m 0700 ${`${ADOPTED_FILES_DIR}.new`} && cd / && cp -a --parents -- ${files} ${`${ADOPTED_FILES_DIR}.new`} && chmod -R go-rwx ${`${ADOPTED_FILES_DIR}.new`} && mv ${`${ADOPTED_FILES_DIR}.new`} ${ADOPTED_FILES_DIR}`,
          summary: `copy ${files.length} files of the hand-built server into ${ADOPTED_FILES_DIR}/ (${files.map((f) => f.replace(/^.*\//, '')).join(', ')})`,
          touches: [ADOPTED_FILES_DIR],
        }),
      ]
      // The server's own secrets, stored before anything could generate new ones.
      for (const s of adoption.secrets) secrets.resolve({ kind: 'generate', name: s.name })
      out.push(...secrets.takeResources())
      const record: HostRecord = { managedBy: 'matrix-provision', origin: 'adopted', since: today, adopted: adoption.adopted }
      out.push(...hostRecordResources(ownership, record))
      for (const path of adoption.retire) {
        const kept = `${RETIRED_DIR}${path}`
        out.push(
          command({
            name: `retire ${path}`,
            unless: sh`! test -e ${path} && ! test -L ${path}`,
            command: sh`install -d -m 0700 ${kept.replace(/\/[^/]+$/, '')} && mv -- ${path} ${kept}`,
            summary: `take ${path} out of service (moved to ${kept})`,
            touches: [path],
          }),
        )
      }
      return out
    },
  }
}
