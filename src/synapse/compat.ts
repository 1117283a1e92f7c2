/**
 * What runs with what: the PostgreSQL minimum per Synapse release and the operating systems this
 * project targets. Sources: Synapse CHANGES.md (1.122.0: "drops support for PostgreSQL 11 and 12";
 * 1.143.0: "requires PostgreSQL 14+"), synapse/storage/engines/postgres.py, docs/upgrade.md
 * (focal dropped in 1.119.0), scripts-dev/build_debian_packages.py.
 */

/** Newest PostgreSQL minimum first; a Synapse version at or above `since` needs `postgres` or newer. */
export const POSTGRES_MINIMUMS: readonly { since: string; postgres: number }[] = [
  { since: '1.143.0', postgres: 14 },
  { since: '1.122.0', postgres: 13 },
  { since: '0.0.0', postgres: 11 },
]

/** Parse "1.120.0", "v1.120.0" or "1.120.0rc1" into [major, minor, patch]; undefined when it is not one. */
export function parseSynapseVersion(version: string): [number, number, number] | undefined {
  const match = /^v?(\d+)\.(\d+)(?:\.(\d+))?/.exec(version.trim())
  if (!match) return undefined
  return [Number(match[1]), Number(match[2]), Number(match[3] ?? 0)]
}

/** Order of feature thresholds ("since 1.143.0"): an rc counts as its release (1.143.0rc1 has what 1.143.0 has). */
export function compareVersions(a: string, b: string): number {
  const pa = parseSynapseVersion(a) ?? [0, 0, 0]
  const pb = parseSynapseVersion(b) ?? [0, 0, 0]
  for (let i = 0; i < 3; i++) {
    const diff = pa[i]! - pb[i]!
    if (diff !== 0) return diff
  }
  return 0
}

/** Release order, -1, 0 or 1 (1.9.0 < 1.10.0): an rc sorts before its release (1.160.0 -> 1.160.0rc1 is a downgrade). */
export function compareReleases(a: string, b: string): number {
  const c = Math.sign(compareVersions(a, b))
  if (c !== 0) return c
  const rc = (v: string) => {
    const m = /^v?\d+\.\d+(?:\.\d+)?rc(\d+)/.exec(v.trim())
    return m ? Number(m[1]) : Infinity
  }
  const [x, y] = [rc(a), rc(b)]
  return x === y ? 0 : x < y ? -1 : 1
}

/**
 * Lowest PostgreSQL major version the given Synapse release accepts at startup.
 * `undefined` means "the latest release" (what apt or pip installs when no version is pinned).
 */
export function minimumPostgresFor(synapseVersion: string | undefined): number {
  if (synapseVersion === undefined || parseSynapseVersion(synapseVersion) === undefined) return POSTGRES_MINIMUMS[0]!.postgres
  for (const entry of POSTGRES_MINIMUMS) {
    if (compareVersions(synapseVersion, entry.since) >= 0) return entry.postgres
  }
  return POSTGRES_MINIMUMS[POSTGRES_MINIMUMS.length - 1]!.postgres
}

export interface SupportedTarget {
  /** `ID` from /etc/os-release. */
  distribution: 'ubuntu' | 'debian'
  /** `VERSION_ID` from /etc/os-release. */
  version: string
  /** `VERSION_CODENAME`; also the packages.matrix.org suite. */
  codename: string
  /** PostgreSQL major version the distribution installs by default (`apt install postgresql`). */
  defaultPostgres: number
  /** Python 3 version of the distribution. */
  python: string
  /** Last Synapse release built for it on packages.matrix.org, when builds have stopped. */
  lastSynapsePackage?: string
  /** Shown before running on it (end of standard support, old packages). */
  warning?: string
}

export const SUPPORTED_TARGETS: readonly SupportedTarget[] = [
  {
    distribution: 'ubuntu',
    version: '20.04',
    codename: 'focal',
    defaultPostgres: 12,
    python: '3.8',
    lastSynapsePackage: '1.118',
    warning:
      'Ubuntu 20.04 left standard support on 2025-05-31; packages.matrix.org stopped at Synapse 1.118, and its PostgreSQL 12 and Python 3.8 are below what current Synapse needs',
  },
  { distribution: 'ubuntu', version: '22.04', codename: 'jammy', defaultPostgres: 14, python: '3.10' },
  { distribution: 'ubuntu', version: '24.04', codename: 'noble', defaultPostgres: 16, python: '3.12' },
  { distribution: 'debian', version: '12', codename: 'bookworm', defaultPostgres: 15, python: '3.11' },
  { distribution: 'debian', version: '13', codename: 'trixie', defaultPostgres: 17, python: '3.13' },
]

/** The target matching /etc/os-release `ID` and `VERSION_ID` (or codename), if supported. */
export function findTarget(distribution: string, versionOrCodename: string): SupportedTarget | undefined {
  return SUPPORTED_TARGETS.find(
    (target) => target.distribution === distribution && (target.version === versionOrCodename || target.codename === versionOrCodename),
  )
}

/** "ubuntu 20.04 (focal), ubuntu 22.04 (jammy), ..." for messages. */
export function describeSupportedTargets(): string {
  return SUPPORTED_TARGETS.map((target) => `${target.distribution} ${target.version} (${target.codename})`).join(', ')
}
