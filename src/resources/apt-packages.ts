import { debPackages } from '../facts/packages.js'
import { aptListsPresent } from '../facts/system.js'
import { RemoteCommandError, type Connection } from '../ssh/connection.js'
import { raw, sh, type ShellCommand } from '../core/shell.js'
import type { Change, Resource } from './resource.js'

export interface PackageSpec {
  name: string
  /** Exact Debian version to pin (apt-get install name=version). */
  version?: string
}

export interface AptPackagesSpec {
  packages: (string | PackageSpec)[]
  /** debconf-set-selections lines, preseeded before install: "pkg question type value". */
  debconf?: string[]
  /** Units and paths these packages bring, so the dry run can predict the chain on a fresh host. */
  provides?: { units?: string[]; paths?: string[] }
  /** Label in plans, e.g. "postgres server". */
  label?: string
  /** Runs the apt-get install inside a guard (e.g. one that keeps maintainer scripts from starting a unit). */
  wrapInstall?: (install: ShellCommand) => ShellCommand
}

const APT_ENV = raw`DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a`

/**
 * Seconds apt waits for another apt/dpkg (unattended-upgrades) to release the dpkg lock before the
 * install fails, instead of failing at once: 180, or the environment variable MP_DPKG_LOCK_TIMEOUT
 * (whole seconds; the fault tests set a few). Read at each install, so a test can set it per run.
 */
export function dpkgLockTimeout(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.MP_DPKG_LOCK_TIMEOUT?.trim()
  return raw && /^\d+$/.test(raw) ? Number(raw) : 180
}

const aptOpts = (lockTimeout: number) =>
  sh`-y -q --no-install-recommends -o DPkg::Lock::Timeout=${lockTimeout} -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold`

/** pid and command line of every process that has the dpkg locks open (fuser is not on minimal hosts). */
const DPKG_LOCK_HOLDERS = raw`for p in /proc/[0-9]*; do for f in "$p"/fd/*; do case "$(readlink "$f" 2>/dev/null)" in /var/lib/dpkg/lock|/var/lib/dpkg/lock-frontend) \
printf '%s %s\\n' "\${p#/proc/}" "$(tr '\\0' ' ' < "$p/cmdline")"; break;; esac; done; done 2>/dev/null`

export async function aptUpdate(conn: Connection): Promise<void> {
  await conn.run(sh`${APT_ENV} apt-get -q update -o DPkg::Lock::Timeout=${dpkgLockTimeout()}`, { timeoutMs: 600_000 })
}

/** Debian packages present (and pinned versions exact). */
export function aptPackages(spec: AptPackagesSpec): Resource {
  const pkgs = spec.packages.map((p) => (typeof p === 'string' ? { name: p } : p))
  const id = `apt:${pkgs.map((p) => p.name).join(',')}`
  return {
    id,
    facts: () => [debPackages, aptListsPresent],
    plan(ctx) {
      const installed = ctx.facts.get(debPackages)
      const missing = pkgs.filter((p) => {
        const have = installed.get(p.name)
        return have === undefined || (p.version !== undefined && have !== p.version)
      })
      if (missing.length === 0) return null
      for (const p of missing) ctx.predicted.packages.add(p.name)
      ctx.predicted.factsAfter.set(
        debPackages.id,
        new Map([...installed, ...missing.map((p) => [p.name, p.version ?? '(planned)'] as const)]),
      )
      for (const u of spec.provides?.units ?? []) ctx.predicted.units.set(u, `package ${missing.map((p) => p.name).join(', ')}`)
      for (const path of spec.provides?.paths ?? []) ctx.predicted.paths.add(path)
      const names = missing.map((p) => (p.version ? `${p.name}=${p.version}` : p.name))
      const change: Change = {
        resource: id,
        kind: 'package',
        action: 'install',
        summary: `install ${names.join(' ')}${spec.debconf?.length ? ` (debconf preseeded: ${spec.debconf.length} answers)` : ''}`,
        touches: missing.map((p) => `pkg:${p.name}`),
        backupPaths: [],
        reach: 'anything',
      }
      return change
    },
    async apply(change, ctx) {
      const { conn } = ctx
      if (spec.debconf?.length) {
        await conn.run(sh`debconf-set-selections`, { stdin: spec.debconf.join('\n') + '\n' })
      }
      const lists = await conn.run(aptListsPresent.command, { allowFailure: true })
      if (ctx.state.aptListsStale || Number(lists.stdout.trim() || 0) === 0) {
        await aptUpdate(conn)
        ctx.state.aptListsStale = false
      }
      const names = change.touches
        .map((t) => t.slice(4))
        .map((n) => {
          const p = pkgs.find((x) => x.name === n)
          return p?.version ? `${n}=${p.version}` : n
        })
      const lockTimeout = dpkgLockTimeout()
      const plain = sh`${APT_ENV} apt-get install ${aptOpts(lockTimeout)} ${names}`
      const install = spec.wrapInstall ? spec.wrapInstall(plain) : plain
      let r = await conn.run(install, { timeoutMs: 1_200_000, allowFailure: true })
      if (r.code !== 0 && /dpkg was interrupted/.test(r.stderr + r.stdout)) {
        // An earlier install was cut off (a lost connection, a reboot): finish dpkg's work, then retry.
        await conn.run(sh`${APT_ENV} dpkg --configure -a --force-confdef --force-confold`, { timeoutMs: 1_200_000 })
        r = await conn.run(install, { timeoutMs: 1_200_000, allowFailure: true })
      }
      if (r.code !== 0 && /Unable to locate package|has no installation candidate|404\s+Not Found/.test(r.stderr + r.stdout)) {
        await aptUpdate(conn) // stale lists: refresh once and retry
        r = await conn.run(install, { timeoutMs: 1_200_000, allowFailure: true })
      }
      if (r.code !== 0 && /Could not get lock|dpkg frontend lock/.test(r.stderr)) {
        // apt names the holder while it waits, on stdout ("It is held by process 1234 (unattended-upgr)"); it may have gone since.
        const aptSays = [...(r.stdout + r.stderr).matchAll(/It is held by process \d+ \([^)]*\)/g)].pop()?.[0]
        const holders = (await conn.run(DPKG_LOCK_HOLDERS, { allowFailure: true })).stdout.trim()
        throw new Error(
          `the dpkg lock stayed held for ${lockTimeout} s by another process${aptSays ? ` (${aptSays})` : ''}:\n` +
            `${holders || '(the holder has exited since)'}\nwait for it to finish, then run again`,
        )
      }
      if (r.code !== 0) throw new RemoteCommandError(conn.host, r, `installing ${names.join(' ')}`)
    },
  }
}
