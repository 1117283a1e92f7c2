import { sh } from '../../src/core/shell.js'
import type { AfterCheck } from '../../src/engine/task.js'
import { describeDrift, driftCount, lockDrift, parseVenvContents, VENV_CONTENTS_SCRIPT } from '../../src/synapse/lock/drift.js'
import type { SynapseLock } from '../../src/synapse/lock/lock-file.js'
import { SYNAPSE_PYTHON, VENV_LINK } from '../../src/synapse/paths.js'

/**
 * The venv Synapse runs from holds exactly its lock (a failed rebuild leaves a drifted one serving: check
 * says so). `processes`: the units that run from it on a host without main (a worker host), named in the check.
 */
export function runningVenvHoldsLock(lock: SynapseLock, processes: readonly string[] = []): AfterCheck {
  const lockName = lock.file.split('/').slice(-2).join('/')
  return {
    name: processes.length
      ? `the venv ${processes.join(', ')} run from holds the lock ${lockName}`
      : `the running venv holds the lock ${lockName}`,
    inventoryVersionOnly: true,
    async run(conn) {
      const r = await conn.run(sh`readlink -f ${VENV_LINK}; ${SYNAPSE_PYTHON} -c ${VENV_CONTENTS_SCRIPT}`, { allowFailure: true })
      const [path, ...rest] = r.stdout.split('\n')
      const venv = parseVenvContents(rest.join('\n'), r.code ?? 1)
      if (!venv) return { ok: false, detail: `${VENV_LINK} is no usable venv: ${r.stderr.trim().slice(-200) || `exit ${r.code}`}` }
      const running = venv.installed.get('matrix-synapse')
      if (running !== lock.synapseVersion)
        return {
          ok: false,
          detail: `${path} holds matrix-synapse ${running ?? '(none)'}, the inventory's lock ${lockName} is for ${lock.synapseVersion}`,
        }
      const drift = lockDrift(lock, venv)
      return driftCount(drift)
        ? {
            ok: false,
            detail: `${path} differs from the lock ${lockName} (${driftCount(drift)}: ${describeDrift(drift)}); a run rebuilds it beside the running one and switches to it`,
          }
        : { ok: true, detail: `${path}: ${venv.installed.size} distributions as locked` }
    },
  }
}
