/**
 * The target suites tests run on, and what differs between them. TARGET_SUITES (comma-separated) names
 * the images global-setup builds: local debootstrap suites (`bookworm`, `trixie`) or registry bases
 * (`debian:12`, `ubuntu:24.04`) where a registry is reachable (.github/workflows/ci.yml). The first is
 * the suite of every test that asks for none; the Debian 13 one serves the tests written for Debian 13.
 */
export interface SuiteFacts {
  os: string
  /** The PostgreSQL major version the suite's archive installs (the cluster is postgresql@N-main). */
  postgres: number
  debian13: boolean
}

const FACTS: Record<string, SuiteFacts> = {
  bullseye: { os: 'Debian 11', postgres: 13, debian13: false },
  'debian:11': { os: 'Debian 11', postgres: 13, debian13: false },
  bookworm: { os: 'Debian 12', postgres: 15, debian13: false },
  'debian:12': { os: 'Debian 12', postgres: 15, debian13: false },
  trixie: { os: 'Debian 13', postgres: 17, debian13: true },
  'debian:13': { os: 'Debian 13', postgres: 17, debian13: true },
  'ubuntu:22.04': { os: 'Ubuntu 22.04', postgres: 14, debian13: false },
  'ubuntu:24.04': { os: 'Ubuntu 24.04', postgres: 16, debian13: false },
}

export const TARGET_SUITES = (process.env.TARGET_SUITES ?? 'bookworm,trixie')
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean)

export function suiteFacts(suite: string): SuiteFacts {
  const facts = FACTS[suite]
  if (!facts)
    throw new Error(`TARGET_SUITES: no facts for suite "${suite}" in test/support/suites.ts (known: ${Object.keys(FACTS).join(', ')})`)
  return facts
}

/**
 * The system a homeserver is moved away from (test/e2e/move.test.ts): Debian 11 stands in for the
 * guide's Ubuntu 20.04 (Python 3.9, PostgreSQL 13: too old for today's Synapse). Built by global setup
 * beside TARGET_SUITES; never a suite the tool provisions.
 */
export const OLD_SUITE = process.env.OLD_SUITE ?? (TARGET_SUITES.some((s) => s.includes(':')) ? 'debian:11' : 'bullseye')

/** The suite of tests that ask for none: the first of TARGET_SUITES. */
export const DEFAULT_SUITE = TARGET_SUITES[0] ?? 'bookworm'

/**
 * The Debian 13 suite among TARGET_SUITES, for tests written for it. A TARGET_SUITES without one is a
 * configuration error, not a reason to skip: those tests would silently not run.
 */
export function debian13Suite(): string {
  const suite = TARGET_SUITES.find((s) => suiteFacts(s).debian13)
  if (!suite)
    throw new Error(`this test needs Debian 13: add trixie (local) or debian:13 (registry) to TARGET_SUITES=${TARGET_SUITES.join(',')}`)
  return suite
}

/** `postgresql@15-main` on Debian 12: the cluster unit of the suite's PostgreSQL. */
export const postgresCluster = (suite: string) => `postgresql@${suiteFacts(suite).postgres}-main`
