/**
 * The apt method's package: which versions the matrix.org source offers (read fresh at plan time), the
 * decision whether the inventory's version can be installed, and the guarded install that keeps the
 * package's maintainer scripts from starting or restarting main behind the tool's back.
 */
import { defineFact } from '../../src/facts/fact.js'
import { raw, sh, type ShellCommand } from '../../src/core/shell.js'
import type { Step } from '../../src/resources/resource.js'
import type { Connection } from '../../src/ssh/connection.js'
import { KEYRING, SOURCES } from '../apt-keyring/index.js'
import { startUnit, type StepRunner } from './switch.js'

export const SYNAPSE_PACKAGE = 'matrix-synapse-py3'

/** `apt-cache madison PKG` -> its Debian versions as listed (newest first). An unknown package prints nothing (exit 0). */
export function parseMadison(stdout: string, pkg = SYNAPSE_PACKAGE): string[] {
  return stdout
    .split('\n')
    .map((l) => l.split('|').map((f) => f.trim()))
    .filter((f) => f.length >= 3 && f[0] === pkg)
    .map((f) => f[1]!)
}

/** Upstream part of a Debian version: 1:1.157.0+bookworm1 -> 1.157.0. */
export const upstreamOf = (debian: string) => debian.replace(/^\d+:/, '').replace(/[+~-].*$/, '')

export interface AptSourceState {
  /** The matrix.org source line exists (the apt-keyring role wrote it). */
  source: boolean
  /** The one-source `apt-get update` failed: its last lines. */
  updateError?: string
  /** Debian versions the source offers, newest first. */
  available: string[]
  /** Installed version and whether it is held (dpkg status "hi"). */
  installed?: { version: string; held: boolean }
}

export function parseAptSource(out: string): AptSourceState {
  const s: AptSourceState = { source: false, available: [] }
  const lines = out.split('\n')
  const madison: string[] = []
  const update: string[] = []
  for (const line of lines) {
    const [key, ...rest] = line.split(' ')
    const value = rest.join(' ')
    if (key === 'source') s.source = true
    else if (key === 'update-failed') s.updateError ??= update.slice(-3).join(' | ') || 'apt-get update failed'
    else if (key === 'update:') {
      update.push(value)
      // apt-get update exits 0 on some fetch and signature errors: its Err:/E: lines decide.
      if (/^(Err:|E:|W: Failed to fetch)/.test(value)) s.updateError ??= value
    } else if (key === 'madison:') madison.push(value)
    else if (key === 'installed' && value.trim()) {
      const [version, status] = value.trim().split(' ')
      s.installed = { version: version!, held: status?.startsWith('h') ?? false }
    }
  }
  s.available = parseMadison(madison.join('\n'))
  return s
}

/**
 * The matrix.org source's lists refreshed on their own (only that source, keeping the other lists:
 * List-Cleanup=0), then what it offers and what is installed. It writes apt's list cache, nothing
 * else: a fact because the plan must know whether the pinned version exists before anything stops.
 */
export const aptSourceFact = defineFact(
  `apt-source:${SYNAPSE_PACKAGE}`,
  sh`if [ -f ${SOURCES} ]; then echo source; out=$(apt-get update -q -o ${`Dir::Etc::sourcelist=${SOURCES}`} -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0 -o DPkg::Lock::Timeout=60 2>&1); rc=$?; printf '%s\\n' "$out" | sed 's/^/update: /'; [ $rc = 0 ] || echo update-failed; apt-cache madison ${SYNAPSE_PACKAGE} 2>/dev/null | sed 's/^/madison: /'; fi; echo "installed $(dpkg-query -W -f '\${Version} \${db:Status-Abbrev}' ${SYNAPSE_PACKAGE} 2>/dev/null)"`,
  (out) => parseAptSource(out),
  { paths: [SOURCES, KEYRING] },
)

export type Candidate = { ok: true; debVersion: string } | { ok: false; reason: string } | { ok: 'unknown'; reason: string }

/**
 * Whether `upstream` (the inventory's synapse.version) can be installed from the source, and as which
 * Debian version (the repository's own row, e.g. 1.157.0+bookworm1: a +bookworm2 rebuild listed first wins).
 */
export function aptCandidate(upstream: string, s: AptSourceState): Candidate {
  if (!s.source)
    return {
      ok: 'unknown',
      reason: `${SOURCES} does not exist yet (the apt-keyring role writes it in this run): the version is checked once it does`,
    }
  if (s.updateError) return { ok: false, reason: `apt-get update of the matrix.org source (${SOURCES}) failed: ${s.updateError}` }
  const deb = s.available.find((v) => upstreamOf(v) === upstream)
  if (deb) return { ok: true, debVersion: deb }
  return {
    ok: false,
    reason: s.available.length
      ? `${SYNAPSE_PACKAGE} ${upstream} is not in the repository (it offers ${s.available.join(', ')}): pin one of those in synapse.version, or wait until the repository has it`
      : `the repository of ${SOURCES} offers no ${SYNAPSE_PACKAGE} at all: check aptRepository (url, suite, components)`,
  }
}

/** The Debian version to install (undefined: the source is not written yet), or the refusal, thrown. */
export function plannedDebVersion(upstream: string, s: AptSourceState, active: string | undefined): string | undefined {
  const c = aptCandidate(upstream, s)
  if (c.ok === false)
    throw new Error(
      `refusing to install Synapse ${upstream} with apt: ${c.reason}. Nothing was changed${active ? `: Synapse ${active} keeps serving` : ''}.`,
    )
  if (c.ok === 'unknown' && active && active !== upstream)
    throw new Error(
      `cannot change Synapse ${active} -> ${upstream} with apt: ${SOURCES} does not exist on this host (the apt-keyring role writes it: add it to the host's roles)`,
    )
  return c.ok === true ? c.debVersion : undefined
}

const POLICY = '/usr/sbin/policy-rc.d'
const SAVED = `${POLICY}.matrix-provision-saved`
const MARK = '# matrix-provision: guard for one apt-get run'

/**
 * An apt-get command run so that the package's maintainer scripts neither start nor restart
 * matrix-synapse.service (deb-systemd-invoke asks /usr/sbin/policy-rc.d; 101 = not allowed): main
 * keeps serving the old code until the tool restarts it, once, in the upgrade order; a first install
 * leaves it stopped (no start on the package's own SQLite config). Other units are decided by a
 * policy-rc.d the host already had (kept aside and consulted), else allowed. The guard is removed on
 * exit, also on a signal; one left by a cut run is recognised by its marker and replaced. On success
 * the package is held again (an install with --allow-change-held-packages clears the hold).
 */
export function guardedInstall(install: ShellCommand): ShellCommand {
  const script = `#!/bin/sh
${MARK}
case "$1" in matrix-synapse|matrix-synapse.service) exit 101 ;; esac
if [ -x ${SAVED} ]; then exec ${SAVED} "$@"; fi
exit 0
`
  return sh`if [ -e ${POLICY} ] && ! grep -qxF ${MARK} ${POLICY}; then mv -f ${POLICY} ${SAVED}; fi; trap ${`rm -f ${POLICY}; if [ -e ${SAVED} ]; then mv -f ${SAVED} ${POLICY}; fi`} EXIT; trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 141' PIPE; trap 'exit 143' TERM; printf '%s' ${script} > ${`${POLICY}.tmp`} && chmod 0755 ${`${POLICY}.tmp`} && mv -f ${`${POLICY}.tmp`} ${POLICY} && ${install} && apt-mark hold ${SYNAPSE_PACKAGE} >/dev/null`
}

/** The install of an exact version over whatever is there (upgrade or downgrade, held or not). */
export function packageInstallCommand(debVersion: string, lockTimeout: number): ShellCommand {
  return guardedInstall(
    sh`${raw`DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a NEEDRESTART_SUSPEND=1`} apt-get install -y -q --no-install-recommends --allow-downgrades --allow-change-held-packages -o DPkg::Lock::Timeout=${lockTimeout} -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold ${`${SYNAPSE_PACKAGE}=${debVersion}`}`,
  )
}

/** The installed version (empty: not installed): compared after a failed install to say whether anything changed. */
export const INSTALLED_VERSION = sh`dpkg-query -W -f '\${Version}' ${SYNAPSE_PACKAGE} 2>/dev/null; true`

/**
 * After a failed install of the new version: if the package is still the old version, nothing running
 * changed (the guard kept main on it), so the workers stopped for the change start again on that same
 * code, recorded as rollback steps. Returns the run's error message, saying exactly what is true.
 */
export async function afterFailedInstall(
  conn: Connection,
  f: {
    message: string
    from: string
    debVersion: string
    dump?: string
    stopped: Step[]
    runner: StepRunner
    peer: (host: string) => Promise<Connection>
  },
): Promise<string> {
  const now = (await conn.run(INSTALLED_VERSION)).stdout.trim()
  // apt's own E: lines say why; the whole guarded command line would bury them.
  const failed = `installing ${SYNAPSE_PACKAGE}=${f.debVersion} failed: ${f.message.match(/^E: .*$/gm)?.join(' ') ?? f.message}`
  if (!now || upstreamOf(now) !== f.from) {
    return `${failed}; the package is now ${now || 'not installed'} (was ${f.from}), main and the workers were not restarted${f.dump ? `; the backup is ${f.dump}` : ''}: run again to finish the change`
  }
  const started: string[] = []
  for (const x of f.stopped) {
    const c = x.host === undefined ? conn : await f.peer(x.host)
    await f.runner.step(
      {
        kind: 'start',
        target: x.target,
        ...(x.host !== undefined ? { host: x.host } : {}),
        summary: `start ${x.target} again on ${f.from} (the install changed nothing)`,
      },
      () => startUnit(c, x.target),
    )
    started.push(x.host === undefined ? x.target : `${x.target} on ${x.host}`)
  }
  const main = (await conn.run(sh`systemctl is-active matrix-synapse.service`, { allowFailure: true })).stdout.trim()
  return `${failed}; the package is unchanged at ${now} and main kept serving ${f.from}${main === 'active' ? '' : ` (but matrix-synapse.service is ${main})`}; ${started.length ? `the stopped workers were started again (${started.join(', ')})` : 'no worker was stopped'}${f.dump ? `; the dump ${f.dump} was taken and is not needed` : ''}`
}
