import { findTarget, SUPPORTED_TARGETS } from '../../src/synapse/compat.js'
import { freeDiskMiB, listeningTcp, memoryMiB, osRelease } from '../../src/facts/system.js'
import type { AfterCheck, BeforeCheck, CheckOutcome } from '../../src/engine/task.js'
import type { Connection } from '../../src/ssh/connection.js'
import { sh } from '../../src/core/shell.js'

/** The target table entry for this host, if it is a supported one. */
export function targetOf(os: { id: string; versionId: string; codename: string }) {
  return findTarget(os.id, os.versionId) ?? findTarget(os.id, os.codename)
}

export const supportedTarget: BeforeCheck = {
  name: 'supported target',
  facts: [osRelease],
  evaluate(facts): CheckOutcome {
    const os = facts.get(osRelease)
    const t = targetOf(os)
    if (!t) {
      return {
        ok: false,
        detail: `${os.prettyName} is not a supported target; use one of ${SUPPORTED_TARGETS.map((x) => `${x.distribution} ${x.version} (${x.codename})`).join(', ')}`,
      }
    }
    if (t.warning) return { ok: true, warning: true, detail: `${os.prettyName}: ${t.warning}` }
    return { ok: true, detail: os.prettyName }
  },
}

export function minimumMemory(mib: number): BeforeCheck {
  return {
    name: `at least ${mib} MiB of memory`,
    facts: [memoryMiB],
    evaluate: (facts) => {
      const have = facts.get(memoryMiB)
      return have >= mib
        ? { ok: true, detail: `${have} MiB` }
        : {
            ok: false,
            detail: `the host has ${have} MiB of memory; this task needs at least ${mib} MiB: add memory or move the role to a bigger host`,
          }
    },
  }
}

export function minimumDisk(path: string, mib: number): BeforeCheck {
  const fact = freeDiskMiB(path)
  return {
    name: `at least ${mib} MiB free under ${path}`,
    facts: [fact],
    evaluate: (facts) => {
      const have = facts.get(fact)
      return have >= mib
        ? { ok: true, detail: `${have} MiB free` }
        : { ok: false, detail: `only ${have} MiB free under ${path}; this task needs ${mib} MiB: free some space first` }
    },
  }
}

/** A port we are about to listen on must be free, or already ours (by process name or socket owner). */
export function portAvailable(port: number, own: string[], what: string): BeforeCheck {
  return {
    name: `port ${port} free for ${what}`,
    facts: [listeningTcp],
    evaluate: (facts) => {
      const holders = facts.get(listeningTcp).filter((s) => s.port === port)
      const foreign = holders.filter((s) => !own.some((p) => s.process.startsWith(p) || s.user === p))
      return foreign.length === 0
        ? { ok: true, detail: holders.length ? `used by ${what} already` : 'free' }
        : {
            ok: false,
            detail: `port ${port} (for ${what}) is taken by ${foreign.map((s) => s.process || `a process of user ${s.user}`).join(', ')} on ${foreign[0]!.address}; stop it or configure another port`,
          }
    },
  }
}

/**
 * Ask an HTTP URL on the host, for up to `waitS` seconds (services take a moment after a restart).
 * With `unit`, a unit that is not running (inactive, failed) fails the check at once: nothing is
 * about to answer, so there is nothing to wait for.
 */
export async function httpOnHost(
  conn: Connection,
  url: string,
  options: { waitS: number; unit?: string; curlArgs?: string[]; expect?: RegExp },
): Promise<CheckOutcome> {
  const args = ['-sS', '--max-time', '5', ...(options.curlArgs ?? []), url]
  const wait = Math.max(0, Math.floor(options.waitS))
  const unitGone = options.unit
    ? sh`s=$(systemctl is-active ${options.unit}); case "$s" in active|activating|reloading) ;; *) printf '%s' "$s"; exit 3;; esac; `
    : sh``
  const r = await conn.run(
    sh`i=0; while :; do if out=$(curl -f ${args} 2>&1); then printf '%s' "$out"; exit 0; fi; ${unitGone}[ $i -ge ${wait} ] && break; i=$((i+1)); sleep 1; done; printf '%s' "$out"; exit 1`,
    { timeoutMs: (wait * 7 + 30) * 1000, allowFailure: true },
  )
  if (r.code === 3)
    return {
      ok: false,
      detail: `${options.unit} is ${r.stdout.trim() || 'not running'}, so ${url} cannot answer; see journalctl -u ${options.unit}`,
    }
  if (r.code !== 0)
    return {
      ok: false,
      detail: wait
        ? `${url} did not answer within ${wait} s: ${r.stdout.trim().slice(-300)}`
        : `${url} did not answer: ${r.stdout.trim().slice(-300)}`,
    }
  if (options.expect && !options.expect.test(r.stdout))
    return { ok: false, detail: `${url} answered unexpectedly: ${r.stdout.trim().slice(0, 300)}` }
  return { ok: true, detail: `${url} answered` }
}

export function unitActive(unit: string): AfterCheck {
  return {
    name: `${unit} active`,
    async run(conn) {
      const r = await conn.run(sh`systemctl is-active ${unit}`, { allowFailure: true })
      return r.stdout.trim() === 'active'
        ? { ok: true, detail: 'active' }
        : { ok: false, detail: `${unit} is ${r.stdout.trim() || 'unknown'}; see journalctl -u ${unit}` }
    },
  }
}
