import { defineFact } from '../facts/fact.js'
import { ensureSuccess } from '../ssh/connection.js'
import { raw, sh } from '../ssh/shell.js'
import type { Resource } from './resource.js'

export interface VirtualenvSpec {
  /** e.g. /opt/venvs/matrix-synapse */
  path: string
  /** Requirement to install, e.g. matrix-synapse[postgres,redis]==1.120.0 */
  requirement: string
  /** Import name and expected version to compare, e.g. { module: 'synapse', version: '1.120.0' }. */
  probe: { module: string; version: string }
  /** A controller directory of wheels, uploaded and installed with --no-index (offline hosts). */
  wheelhouse?: string
  indexUrl?: string
  /** Label used as `pkg:<name>` in touches, so services watching the package restart on upgrade. */
  packageName: string
  /** Extra arguments for `python3 -m venv` (e.g. --system-site-packages). */
  venvArgs?: string[]
}

const WHEELHOUSE_DIR = '/var/cache/matrix-provision/wheelhouse'

/** A Python virtualenv with one requirement at an exact version: pip from an index or from an uploaded wheelhouse. */
export function pythonVirtualenv(spec: VirtualenvSpec): Resource {
  const py = `${spec.path}/bin/python`
  const fact = defineFact(
    `venv:${spec.path}:${spec.probe.module}`,
    sh`${py} -c ${`import importlib.metadata as m, ${spec.probe.module} as s; print(getattr(s, '__version__', ''))`}`,
    (out, code) => (code === 0 ? out.trim() : null),
  )
  const id = `venv:${spec.path}`
  return {
    id,
    facts: () => [fact],
    async plan(ctx) {
      const have = ctx.facts.get(fact)
      if (have === spec.probe.version) return null
      ctx.predicted.paths.add(spec.path)
      return {
        resource: id,
        kind: 'virtualenv',
        action: have ? 'update' : 'install',
        summary: `${have ? `upgrade ${spec.packageName} ${have} ->` : 'install'} ${spec.requirement} into ${spec.path}${spec.wheelhouse ? ' (from the uploaded wheelhouse, offline)' : spec.indexUrl ? ` (from ${spec.indexUrl})` : ''}`,
        touches: [`pkg:${spec.packageName}`, spec.path + '/'],
        backupPaths: [],
        reach: 'anything',
      }
    },
    async apply(_change, ctx) {
      const { conn } = ctx
      const pip = [`${spec.path}/bin/pip`, 'install', '--disable-pip-version-check', '--no-input']
      if (spec.wheelhouse) {
        ensureSuccess(conn.host, await conn.run(sh`rm -rf ${WHEELHOUSE_DIR} && mkdir -p ${WHEELHOUSE_DIR}`), 'preparing the wheelhouse directory')
        await conn.putDirectory(spec.wheelhouse, WHEELHOUSE_DIR, { mode: 0o644 })
        pip.push('--no-index', '--find-links', WHEELHOUSE_DIR)
      } else if (spec.indexUrl) {
        pip.push('--index-url', spec.indexUrl)
      }
      pip.push(spec.requirement)
      // An old venv pip may not know the wheels' manylinux tags: upgrade it first when the wheelhouse has one.
      const upgradePip = spec.wheelhouse ? sh`if ls ${WHEELHOUSE_DIR}/pip-*.whl >/dev/null 2>&1; then ${`${spec.path}/bin/pip`} install -q --disable-pip-version-check --no-index --find-links ${WHEELHOUSE_DIR} --upgrade pip; fi; ` : raw('')
      const script = sh`set -e; [ -x ${py} ] || python3 -m venv ${spec.venvArgs ?? []} ${spec.path}; ${upgradePip}${pip}`
      ensureSuccess(conn.host, await conn.run(script, { timeoutMs: 1_200_000 }), `pip install ${spec.requirement}`)
    },
  }
}
