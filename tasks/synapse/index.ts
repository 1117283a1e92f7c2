import { readdirSync, readFileSync } from 'node:fs'
import { pythonVersion } from '../../src/facts/system.js'
import { debPackages } from '../../src/facts/packages.js'
import type { HostSpec, Inventory, MatrixSettings } from '../../src/inventory/types.js'
import { workerAfterChecks } from '../common/worker-checks.js'
import { synapseRelease, type ReleaseSpec } from './release.js'
import { codeSchemaOfWheelhouse } from './schema-probe.js'
import type { AfterCheck, Task, TaskContext } from '../../src/engine/task.js'
import { aptPackages, dpkgLockTimeout } from '../../src/resources/apt-packages.js'
import { aptSourceFact, guardedInstall, packageInstallCommand, SYNAPSE_PACKAGE } from './apt-package.js'
import { aptConverge, aptDriftCheck, aptDriftWarning, aptRunStateFact, processTargets } from './apt-drift.js'
import { command } from '../../src/resources/command.js'
import { directory, file } from '../../src/resources/file.js'
import { pythonVirtualenv } from '../../src/resources/python-venv.js'
import { runningVenvHoldsLock } from './venv-lock-check.js'
import type { Resource } from '../../src/resources/resource.js'
import { service } from '../../src/resources/systemd-service.js'
import { raw, sh } from '../../src/core/shell.js'
import { instancesOn } from '../../src/inventory/workers.js'
import { workerHosts, workerInstancesOnHost, workerUnits } from '../../src/topology/instances.js'
import { httpOnHost, minimumDisk, minimumMemory, portAvailable, supportedTarget, unitActive } from '../common/checks.js'
import { addressOf } from '../common/topology.js'
import { masLockoutCheck } from './mas-lockout.js'
import { renderSynapseMasConfig } from './templates/mas.js'
import { signingKey, signingKeyFromSecret } from './signing-key.js'
import { backgroundUpdaterCheck } from './background-updates.js'
import { stopWorkersBeforeSharedChange } from './worker-handover.js'
import { mediaStorePathOf, renderSynapseConfig, signingKeyPathOf } from './templates/homeserver.js'
import { renderLogConfig } from './templates/logging.js'
import { renderSynapseServiceDropIn, renderSynapseUnit, renderBaseHomeserverYaml } from './templates/units.js'
import {
  HOMESERVER_YAML,
  SYNAPSE_CONF_D,
  SYNAPSE_CONFIG_DIR,
  SYNAPSE_PYTHON,
  SYNAPSE_UNIT,
  SYNAPSE_UNIT_DROP_IN_PATH,
  SYNAPSE_UNIT_PATH,
  SYNAPSE_WORKERS_DIR,
  VENV_LINK,
} from '../../src/synapse/paths.js'

/** One file per CA: Synapse reads only the first certificate of each file in federation_custom_ca_list. */
export const federationCaPath = (i: number) => `${SYNAPSE_CONFIG_DIR}/federation-ca-${i + 1}.pem`
/** Every --config-path the units pass, in order: the base file, then conf.d. */
export const CONFIG_ARGS = [`--config-path=${HOMESERVER_YAML}`, `--config-path=${SYNAPSE_CONF_D}/`]

/** Synapse version a wheelhouse holds (from the matrix_synapse wheel's file name). */
export function wheelhouseVersion(dir: string): string | undefined {
  const wheel = readdirSync(dir).find((f) => /^matrix_synapse-\d/.test(f))
  return wheel ? /^matrix_synapse-([^-]+)-/.exec(wheel)?.[1] : undefined
}

/** The Synapse release the host runs: the pinned version, else the wheelhouse's (undefined: the newest). */
export function installedSynapseVersion(v: TaskContext['host']['vars']): string | undefined {
  return v.synapse.version ?? (v.synapse.wheelhouse ? wheelhouseVersion(v.synapse.wheelhouse) : undefined)
}

/** Config values every Synapse-side task needs: resolved secrets and where Postgres and Redis are. */
export function synapseConfigFiles(ctx: TaskContext, v: MatrixSettings = ctx.host.vars) {
  const files = renderSynapseConfig(v, {
    postgresHost: addressOf(ctx, v.postgres.host),
    redisHost: addressOf(ctx, v.redis.host),
    federationCaPaths: v.synapse.federationCaFiles.map((_f, i) => federationCaPath(i)),
    synapseVersion: installedSynapseVersion(v),
    secrets: {
      postgresPassword: ctx.secret(v.postgres.password).reveal(),
      macaroonSecret: ctx.secret(v.synapse.macaroonSecret).reveal(),
      formSecret: ctx.secret(v.synapse.formSecret).reveal(),
      registrationSharedSecret: ctx.secret(v.synapse.registrationSharedSecret).reveal(),
      replicationSecret: ctx.secret(v.workers.replicationSecret).reveal(),
      redisPassword: v.redis.password ? ctx.secret(v.redis.password).reveal() : undefined,
    },
  })
  return [...files, renderSynapseMasConfig(v, v.mas.enabled ? ctx.secret(v.mas.synapseSecret).reveal() : undefined)]
}

/**
 * Workers whose file is in /etc/matrix-synapse/workers but who are no longer in the set: their units
 * are stopped and disabled and their files removed (a preset switched back, a worker dropped).
 */
export function retiredWorkers(keep: readonly string[]): Resource {
  const dir = SYNAPSE_WORKERS_DIR
  const stale = sh`for f in ${dir}/*.yaml; do [ -e "$f" ] || continue; n=$(basename "$f" .yaml); case " "${keep.join(' ')}" " in *" $n "*) ;; *) echo "$n";; esac; done`
  return command({
    name: 'retired workers',
    summary: `stop and remove the workers that left the set (units, files in ${dir}/, log configs)`,
    unless: sh`test -z "$(${stale})"`,
    // One systemctl call stops them all side by side (fifteen one-of-each workers one after another took a minute).
    command: sh`stale=$(${stale}); units=; for n in $stale; do units="$units matrix-synapse-worker@$n.service"; done; systemctl disable --now $units && for n in $stale; do rm -f ${dir}/"$n.yaml" /etc/matrix-synapse/"$n-log.yaml"; done`,
    touches: [`${dir}/`],
  })
}

/** Validate the whole configuration as Synapse itself reads it, without starting it. */
// Run as the service user: parsing creates media_store_path, which must not end up owned by root.
export const validateConfig = (python: string, worker?: string) => {
  const main = sh`cd /var/lib/matrix-synapse && runuser -u matrix-synapse -- ${python} -m synapse.config ${CONFIG_ARGS}`
  return worker ? sh`${main} ${`--config-path=${SYNAPSE_WORKERS_DIR}/${worker}.yaml`}` : main
}
export const VALIDATE_CONFIG = validateConfig(SYNAPSE_PYTHON)

/** The checks of a serving main process (the task's after-checks, and an upgrade's). */
export function synapseAfterChecks(vars: MatrixSettings): AfterCheck[] {
  const port = vars.synapse.listenPort
  const SIGNING_KEY = signingKeyPathOf(vars)
  return [
    unitActive(SYNAPSE_UNIT),
    {
      name: '/health answers',
      run: (conn, c) => httpOnHost(conn, `http://127.0.0.1:${port}/health`, { waitS: c.waitS(120), unit: SYNAPSE_UNIT, expect: /OK/ }),
    },
    {
      name: '/_matrix/client/versions answers',
      run: (conn, c) =>
        httpOnHost(conn, `http://127.0.0.1:${port}/_matrix/client/versions`, {
          waitS: c.waitS(60),
          unit: SYNAPSE_UNIT,
          expect: /"versions"/,
        }),
    },
    ...(vars.synapse.install === 'pip' && vars.synapse.lock ? [runningVenvHoldsLock(vars.synapse.lock)] : []),
    ...(vars.synapse.install === 'apt' && vars.synapse.version ? [aptDriftCheck(vars.synapse.version, processTargets(vars))] : []),
    {
      name: 'signing key readable only by matrix-synapse',
      async run(conn) {
        const r = await conn.run(sh`stat -c '%U %a' ${SIGNING_KEY}`, { allowFailure: true })
        return /^matrix-synapse 600$/.test(r.stdout.trim())
          ? { ok: true, detail: r.stdout.trim() }
          : { ok: false, detail: `${SIGNING_KEY} is ${r.stdout.trim() || 'missing'}; expected matrix-synapse 600` }
      },
    },
    backgroundUpdaterCheck(VENV_LINK, SYNAPSE_CONFIG_DIR, SYNAPSE_UNIT),
  ]
}

/** The apt method's part of a release (and of `provision rollback`): the source read fresh, the guarded install. */
export const aptMethod = () => ({ source: aptSourceFact, install: (deb: string) => packageInstallCommand(deb, dpkgLockTimeout()) })

/** The ordered version switch (release.ts) with this host's settings: its workers (the topology's one list), checks and backup place. */
export function releaseSpec(
  host: HostSpec,
  inventory: Inventory,
  version: string,
): Omit<ReleaseSpec, 'method' | 'install' | 'controllerCode' | 'aptInstall'> {
  const v = host.vars
  const units = workerUnits(inventory, host.name)
  return {
    version,
    workerUnits: units,
    remoteWorkers: workerHosts(inventory, host.name)
      .filter((h) => h !== host.name)
      .map((h) => ({ host: h, units: workerUnits(inventory, h) })),
    healthUrl: `http://127.0.0.1:${v.synapse.listenPort}/health`,
    afterChecks: [...synapseAfterChecks(v), ...(units.length ? workerAfterChecks(v, host.name) : [])],
    keepVenvs: v.synapse.keepVenvs,
    keepDumps: v.synapse.keepDumps,
    backupDir: v.synapse.backupDir,
    signingKey: signingKeyPathOf(v),
    postgresLocal: !v.postgres.host || v.postgres.host === host.name,
    database: v.postgres.database,
    databaseOwner: v.postgres.user,
    configChecks: (python) => [
      validateConfig(python),
      ...workerInstancesOnHost(inventory, host.name).map((w) => validateConfig(python, w.name)),
    ],
  }
}

export const synapseTask: Task = {
  name: 'synapse',
  title: 'Synapse homeserver (apt package or pip virtualenv), configured in conf.d/',
  // Synapse connects to its database and Redis when it starts: on other hosts, they come first.
  needs(ctx) {
    const v = ctx.host.vars
    return [
      { host: v.postgres.host, task: 'postgres' as const },
      { host: v.redis.host, task: 'redis' as const },
    ].filter((n): n is { host: string; task: 'postgres' | 'redis' } => n.host !== undefined && n.host !== ctx.host.name)
  },
  before(ctx) {
    const v = ctx.host.vars.synapse
    return [
      supportedTarget,
      // The guide's monitoring section: cache factor 4 uses up to about 3 GB.
      minimumMemory(Math.max(1024, Math.ceil(v.cacheFactor * 768) + 512)),
      minimumDisk('/var/lib', 2048),
      portAvailable(v.listenPort, ['python', 'synapse', 'matrix-synapse'], 'the Synapse client/federation listener'),
      ...masLockoutCheck(ctx),
      ...(v.install === 'apt' && v.version ? [aptDriftWarning(v.version, aptRunStateFact(processTargets(ctx.host.vars)))] : []),
      {
        name: 'Python new enough for Synapse (pip method)',
        facts: [pythonVersion],
        evaluate(facts) {
          if (v.install !== 'pip') return { ok: true, detail: 'apt method: the package brings its own Python' }
          const py = facts.get(pythonVersion)
          if (!py) return { ok: true, detail: 'python3 is installed by this task' }
          const [maj, min] = py.split('.').map(Number)
          return maj! > 3 || (maj === 3 && min! >= 10)
            ? { ok: true, detail: `Python ${py}` }
            : {
                ok: false,
                detail: `Python ${py} on this host is too old for current Synapse (3.10+); pin an older synapse.version or use a newer OS`,
              }
        },
      },
    ]
  },
  resources(ctx) {
    const v = ctx.host.vars
    const out: Resource[] = []
    const watch = [
      HOMESERVER_YAML,
      `${SYNAPSE_CONF_D}/`,
      `${SYNAPSE_CONFIG_DIR}/log.yaml`,
      ...v.synapse.federationCaFiles.map((_f, i) => federationCaPath(i)),
      'pkg:matrix-synapse',
      'pkg:matrix-synapse-py3',
      SYNAPSE_UNIT_PATH,
      SYNAPSE_UNIT_DROP_IN_PATH,
    ]
    if (v.synapse.install === 'apt') {
      // An installed package at another version is upgraded by the release, in the upgrade order.
      const installed = ctx.facts.get(debPackages).has(SYNAPSE_PACKAGE)
      // packages.matrix.org's naming (1.157.0+bookworm1); the release checks the source really offers it.
      const debVersion = v.synapse.version ? `${v.synapse.version}+${ctx.os.codename}1` : undefined
      if (v.synapse.version) {
        // Checks the pinned version against the source before anything changes; on an installed host
        // it also changes the version, in the upgrade order.
        out.push(
          synapseRelease({
            ...releaseSpec(ctx.host, ctx.inventory, v.synapse.version),
            method: 'apt',
            apt: aptMethod(),
          }),
          // Package at that version but a process on other code, or the hold gone (a hand apt-get): converged here.
          aptConverge({
            version: v.synapse.version,
            targets: processTargets(v),
            healthUrl: `http://127.0.0.1:${v.synapse.listenPort}/health`,
          }),
        )
      }
      out.push(
        aptPackages({
          packages: [{ name: SYNAPSE_PACKAGE, version: installed ? undefined : debVersion }],
          debconf: [
            `matrix-synapse-py3 matrix-synapse/server-name string ${v.serverName}`,
            `matrix-synapse-py3 matrix-synapse/report-stats boolean ${v.synapse.reportStats}`,
          ],
          provides: { units: [SYNAPSE_UNIT], paths: [SYNAPSE_CONFIG_DIR, VENV_LINK] },
          // The package's postinst would start main on its own SQLite config (a stray homeserver.db):
          // main starts once its configuration is written, by the service resource below.
          wrapInstall: guardedInstall,
        }),
        // The config files are group-readable by matrix-synapse. The package's postinst makes that group
        // (adduser --system --group, since 1.66); packages before gave the user the group nogroup.
        command({
          name: 'group matrix-synapse',
          unless: raw`id -nG matrix-synapse | grep -qw matrix-synapse`,
          command: raw`getent group matrix-synapse >/dev/null || groupadd --system matrix-synapse; usermod -a -G matrix-synapse matrix-synapse`,
          summary: 'create group matrix-synapse and add the service user to it',
        }),
      )
    } else {
      // The inventory loader read and validated it (or refused the inventory): pip installs only a locked set.
      const lock = v.synapse.lock
      if (!lock)
        throw new Error('synapse.install pip needs the Synapse lock, which the inventory loader reads: load the inventory with locks')
      const version = lock.synapseVersion
      const wheelhouse = v.synapse.wheelhouse
      out.push(
        ...pipHostBase(),
        // Each version in its own venv, from its lock; the release switches /opt/venvs/matrix-synapse to it in order.
        synapseRelease({
          ...releaseSpec(ctx.host, ctx.inventory, version),
          method: 'pip',
          installAt: (path) =>
            pythonVirtualenv({
              path,
              lock,
              packageName: 'matrix-synapse',
              wheelhouse: v.synapse.wheelhouse,
              indexUrl: v.synapse.pipIndexUrl,
            }),
          lock,
          controllerCode: wheelhouse ? () => codeSchemaOfWheelhouse(wheelhouse) : undefined,
        }),
        file({ path: SYNAPSE_UNIT_PATH, content: renderSynapseUnit() }),
      )
    }
    // The Debian package owns /etc/matrix-synapse as matrix-synapse (dpkg-statoverride); the pip method matches it.
    out.push(
      directory({ path: SYNAPSE_CONFIG_DIR, owner: 'matrix-synapse', group: 'matrix-synapse', mode: 0o755 }),
      directory({ path: SYNAPSE_CONF_D, mode: 0o755 }),
      directory({ path: '/var/lib/matrix-synapse', owner: 'matrix-synapse', group: 'matrix-synapse', mode: 0o750 }),
      directory({ path: mediaStorePathOf(v), owner: 'matrix-synapse', group: 'matrix-synapse', mode: 0o750 }),
      directory({ path: '/var/log/matrix-synapse', owner: 'matrix-synapse', group: 'matrix-synapse', mode: 0o750 }),
    )
    // Every setting lives in conf.d: the package's homeserver.yaml (or an adopted one, edited in place
    // with the database password, 0644 from the package) becomes the empty base, 0640 like the secrets.
    out.push(file({ path: HOMESERVER_YAML, content: renderBaseHomeserverYaml(), group: 'matrix-synapse', mode: 0o640 }))
    v.synapse.federationCaFiles.forEach((f, i) => out.push(file({ path: federationCaPath(i), content: readFileSync(f), mode: 0o644 })))
    // Before the shared config changes: a worker that left the set must not keep writing a stream
    // the new config gives to another process.
    out.push(retiredWorkers(instancesOn(v, ctx.host.name).map((w) => w.name)))
    const configFiles = synapseConfigFiles(ctx)
    const shared = configFiles.find((f) => f.path.endsWith('/40-workers.yaml'))!
    if (v.workers.enabled) {
      const remote = workerHosts(ctx.inventory, ctx.host.name).filter((h) => h !== ctx.host.name)
      out.push(
        stopWorkersBeforeSharedChange({
          path: shared.path,
          content: shared.content,
          localUnits: workerUnits(ctx.inventory, ctx.host.name),
          remote: remote.map((h) => ({ host: h, units: workerUnits(ctx.inventory, h) })),
        }),
      )
    }
    for (const f of [renderLogConfig('homeserver'), ...configFiles]) {
      out.push(file({ path: f.path, content: f.content, owner: f.owner, group: f.group, mode: f.mode, sensitive: f.sensitive }))
    }
    const SIGNING_KEY = signingKeyPathOf(v)
    // apt: the drop-in on the package's unit (target membership, no --generate-keys at each start).
    if (v.synapse.install === 'apt')
      out.push(
        directory({ path: SYNAPSE_UNIT_DROP_IN_PATH.replace(/\/[^/]+$/, '') }),
        file({ path: SYNAPSE_UNIT_DROP_IN_PATH, content: renderSynapseServiceDropIn() }),
      )
    out.push(
      // The inventory's key (a homeserver on several hosts: each gets the same), or, unset, a key that
      // exists (the package's, an adopted server's made by hand) keeps its bytes; only its owner,
      // group and mode are set.
      v.synapse.signingKey
        ? signingKeyFromSecret({
            path: SIGNING_KEY,
            key: ctx.secret(v.synapse.signingKey),
            owner: 'matrix-synapse',
            group: 'matrix-synapse',
          })
        : signingKey({
            path: SIGNING_KEY,
            python: SYNAPSE_PYTHON,
            configArgs: CONFIG_ARGS,
            owner: 'matrix-synapse',
            group: 'matrix-synapse',
            mode: 0o600,
          }),
      service({ unit: SYNAPSE_UNIT, watch, validate: VALIDATE_CONFIG }),
    )
    return out
  },
  after: (ctx) => synapseAfterChecks(ctx.host.vars),
}

/** What a pip install needs before its venv, on the synapse host and on a worker host alike. */
export function pipHostBase(): Resource[] {
  return [
    aptPackages({ packages: ['python3-venv', 'libpq5', 'curl'], label: 'Python venv support' }),
    command({
      name: 'system user matrix-synapse',
      unless: raw`id -u matrix-synapse`,
      command: raw`useradd --system --user-group --home-dir /var/lib/matrix-synapse --shell /usr/sbin/nologin matrix-synapse`,
      summary: 'create system user matrix-synapse',
    }),
    directory({ path: '/opt/venvs' }),
  ]
}
