import { defineFact } from '../facts/fact.js'
import { maskSecrets } from '../core/secret.js'
import { raw, sh } from '../core/shell.js'
import { driftCount, driftDiff, describeDrift, lockDrift, parseVenvContents, VENV_CONTENTS_SCRIPT } from '../synapse/lock/drift.js'
import type { SynapseLock } from '../synapse/lock/lock-file.js'
import { WHEELHOUSE_REQUIREMENTS } from '../synapse/lock/wheelhouse-manifest.js'
import { definePlanPayload, type Resource } from './resource.js'

export interface VirtualenvSpec {
  /** e.g. /opt/venvs/matrix-synapse */
  path: string
  /** The locked set the venv must hold, exactly (nothing more but pip's own tooling). */
  lock: SynapseLock
  /** The distribution the lock is for, e.g. matrix-synapse. */
  packageName: string
  /** A controller directory of wheels built from the lock, uploaded and installed with --no-index (offline hosts). */
  wheelhouse?: string
  indexUrl?: string
  /** Extra arguments for `python3 -m venv`. */
  venvArgs?: string[]
}

const WHEELHOUSE_DIR = '/var/cache/matrix-provision/wheelhouse'
const LOCK_DIR_ON_HOST = '/var/cache/matrix-provision'
const LOCK_ON_HOST = `${LOCK_DIR_ON_HOST}/synapse-lock.txt`

/** What apply does besides installing the lock's pins, planned from the venv's facts and carried on the change. */
interface VenvPlan {
  /** Distributions the lock does not hold (pip-sync: uninstalled after the install; the plan's diff lists them). */
  uninstall: string[]
}
const venvPlan = definePlanPayload<VenvPlan>('python-venv', 'venv plan')

/** The distributions installed in the venv at `path` (null: no venv there). */
export const venvContentsFact = (path: string) =>
  defineFact(`venv-contents:${path}`, sh`${`${path}/bin/python`} -c ${VENV_CONTENTS_SCRIPT}`, parseVenvContents)

/**
 * A Python virtualenv holding exactly a lock's set: `pip install --no-deps --require-hashes` of the
 * locked pins (from an uploaded wheelhouse built from the lock, or from the index with the lock
 * itself), then what the lock does not have is uninstalled (pip-sync). The fact lists the venv's
 * distributions, so the plan shows any drift from the lock as a change.
 */
export function pythonVirtualenv(spec: VirtualenvSpec): Resource {
  const py = `${spec.path}/bin/python`
  const fact = venvContentsFact(spec.path)
  const id = `venv:${spec.path}`
  const lockName = spec.lock.file.split('/').slice(-2).join('/')
  return {
    id,
    facts: () => [fact],
    plan(ctx) {
      const venv = ctx.facts.get(fact)
      const from = spec.wheelhouse
        ? ' (from the uploaded wheelhouse, offline)'
        : spec.indexUrl
          ? ` (from ${maskSecrets(spec.indexUrl)})`
          : ''
      const touches = [`pkg:${spec.packageName}`, spec.path + '/']
      if (!venv) {
        ctx.predicted.paths.add(spec.path)
        return venvPlan.carry(
          {
            resource: id,
            kind: 'virtualenv',
            action: 'install',
            summary: `install ${spec.packageName} ${spec.lock.synapseVersion} into ${spec.path} from the lock ${lockName} (${spec.lock.entries.length} pins)${from}`,
            touches,
            backupPaths: [],
            reach: 'anything',
          },
          { uninstall: [] },
        )
      }
      const drift = lockDrift(spec.lock, venv)
      if (driftCount(drift) === 0) return null
      const have = venv.installed.get(spec.packageName)
      const what =
        have !== spec.lock.synapseVersion
          ? `upgrade ${spec.packageName} ${have ?? '(missing)'} -> ${spec.lock.synapseVersion} in ${spec.path} from`
          : `bring ${spec.path} back to`
      return venvPlan.carry(
        {
          resource: id,
          kind: 'virtualenv',
          action: 'update',
          summary: `${what} the lock ${lockName}: ${driftCount(drift)} differ (${describeDrift(drift)})${from}`,
          diff: driftDiff(drift, spec.path, lockName),
          touches,
          backupPaths: [],
          reach: 'anything',
        },
        { uninstall: drift.extra.map((x) => x.name) },
      )
    },
    async apply(change, ctx) {
      const { conn } = ctx
      const { uninstall: extra } = venvPlan.of(change)
      // --no-compile, then compileall -j0 below: pip byte-compiles each wheel's files in one process,
      // about half of a Synapse install's time on a 2-core host; compileall spreads the same work over
      // every core (the same .pyc files: the service user cannot write them at start, so they must exist).
      const pip: string[] = [
        `${spec.path}/bin/pip`,
        'install',
        '--disable-pip-version-check',
        '--no-input',
        '--no-deps',
        '--require-hashes',
        '--no-compile',
      ]
      if (spec.wheelhouse) {
        await conn.run(sh`rm -rf ${WHEELHOUSE_DIR} && mkdir -p ${WHEELHOUSE_DIR}`)
        await conn.putDirectory(spec.wheelhouse, WHEELHOUSE_DIR, { mode: 0o644 })
        pip.push('--no-index', '--find-links', WHEELHOUSE_DIR, '-r', `${WHEELHOUSE_DIR}/${WHEELHOUSE_REQUIREMENTS}`)
      } else {
        await conn.run(sh`mkdir -p ${LOCK_DIR_ON_HOST}`)
        await conn.writeFile({ path: LOCK_ON_HOST, content: spec.lock.text, mode: 0o644 })
        pip.push('-r', LOCK_ON_HOST)
      }
      // pip-sync: what the lock does not hold goes (the plan listed it).
      const uninstall = extra.length ? sh`; ${`${spec.path}/bin/pip`} uninstall --disable-pip-version-check -y ${extra}` : raw``
      // The index URL may carry credentials (user:password@): it travels on stdin into PIP_INDEX_URL,
      // never on the command line (visible in ps and in the command shown in logs).
      const index = !spec.wheelhouse && spec.indexUrl ? spec.indexUrl : undefined
      const readIndex = index ? raw`IFS= read -r PIP_INDEX_URL; export PIP_INDEX_URL; ` : raw``
      // Like pip, compileall's exit status is not the install's: a file that does not compile (a test
      // fixture for another Python) is imported by nothing, and pip ignores the same failure.
      const compile = sh`${py} -m compileall -q -j0 ${`${spec.path}/lib`} >/dev/null || true`
      const script = sh`${readIndex}set -e; [ -x ${py} ] || python3 -m venv ${spec.venvArgs ?? []} ${spec.path}; ${pip}${uninstall}; ${compile}`
      await conn.run(script, {
        timeoutMs: 1_200_000,
        ...(index ? { stdin: `${index}\n` } : {}),
        what: `pip install of the lock ${lockName}`,
      })
    },
  }
}
