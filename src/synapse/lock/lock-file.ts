import { createHash } from 'node:crypto'
import { join } from 'node:path'
import { evaluateMarker, MarkerError, type MarkerEnvironment } from './markers.js'

/**
 * A Synapse lock: every distribution a Synapse venv holds, pinned `name==version` with the sha256 of
 * every artifact PyPI had for it, resolved once on the controller as of the release's own date. It is
 * a pip requirements file (pip-tools/uv style, universal: environment markers pick lines per Python),
 * so `pip install --no-deps --require-hashes -r` reads it as is, with a header of `# key: value` lines
 * that say what it is for. One file per version: `<lockDir>/<version>.txt`, reviewed and committed.
 */
export const LOCK_FORMAT = 1
export const LOCK_TITLE = `# matrix-provision Synapse lock, format ${LOCK_FORMAT}`
/** The extras every pip install of Synapse needs here: the Postgres driver and Redis (workers). */
export const SYNAPSE_EXTRAS = ['postgres', 'redis'] as const
/** Default lock directory, relative to the inventory file. */
export const DEFAULT_LOCK_DIR = 'synapse-lock'

export interface LockEntry {
  /** PEP 503 normalized name: lowercase, runs of -_. as one -. */
  name: string
  version: string
  marker?: string
  /** sha256 hex digests of the artifacts this pin allows. */
  hashes: string[]
  line: number
}

export interface SynapseLock {
  file: string
  synapseVersion: string
  /** e.g. matrix-synapse[postgres,redis]==1.163.2 */
  requirement: string
  /** The --exclude-newer cutoff: nothing uploaded after it was considered. */
  resolvedAsOf: string
  /** Python versions the resolution covers, e.g. >=3.10. */
  python: string
  resolver: string
  entries: LockEntry[]
  /** sha256 of the file's bytes: a wheelhouse records the lock it was built from. */
  digest: string
  /** The file's text, uploaded to a host that installs from an index. */
  text: string
}

/** A lock that cannot be used: where, what, and what to do. */
export class LockError extends Error {
  constructor(
    readonly file: string,
    readonly line: number | undefined,
    readonly problem: string,
    readonly hint: string,
  ) {
    super(`${file}${line ? `:${line}` : ''}: ${problem}\n  hint: ${hint}`)
    this.name = 'LockError'
  }
}

export function normalizeName(name: string): string {
  return name.toLowerCase().replace(/[-_.]+/g, '-')
}

export function lockPath(lockDir: string, synapseVersion: string): string {
  return join(lockDir, `${synapseVersion}.txt`)
}

/** The command that (re)creates a lock, for messages. */
export function lockCommand(inventoryFile: string, synapseVersion?: string): string {
  return `provision lock --inventory ${inventoryFile}${synapseVersion ? ` --synapse-version ${synapseVersion}` : ''}`
}

export interface LockHeader {
  synapseVersion: string
  requirement: string
  resolvedAsOf: string
  python: string
  resolver: string
  index: string
  regenerate: string
}

export function renderLockHeader(h: LockHeader): string {
  return [
    `${LOCK_TITLE}. Generated; do not edit. Review and commit it with the inventory.`,
    `# regenerate: ${h.regenerate}`,
    `# synapse: ${h.synapseVersion}`,
    `# requirement: ${h.requirement}`,
    `# resolved-as-of: ${h.resolvedAsOf}`,
    `# python: ${h.python}`,
    `# resolver: ${h.resolver}`,
    `# index: ${h.index}`,
    '',
  ].join('\n')
}

const PIN = /^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;]+)\s*(?:;\s*(.*?))?\s*$/
const HASH = /^--hash=sha256:([0-9a-f]{64})$/

/** Parse and validate a lock's text. `expectedVersion`: the Synapse version the inventory asks for. */
export function parseLock(text: string, file: string, expectedVersion?: string): SynapseLock {
  const fail = (line: number | undefined, problem: string, hint: string): never => {
    throw new LockError(file, line, problem, hint)
  }
  const regenerate = `run \`${lockCommand('<inventory>', expectedVersion)}\` to resolve it again`
  const lines = text.split('\n')
  if (!lines[0]?.startsWith(LOCK_TITLE))
    fail(1, `not a matrix-provision Synapse lock (the first line must start with "${LOCK_TITLE}")`, regenerate)
  const header = new Map<string, string>()
  const entries: LockEntry[] = []
  for (let i = 0; i < lines.length; i++) {
    const start = i + 1
    let logical = lines[i]!
    while (logical.trimEnd().endsWith('\\') && i + 1 < lines.length) logical = logical.trimEnd().slice(0, -1) + ' ' + lines[++i]!
    const trimmed = logical.trim()
    if (!trimmed) continue
    if (trimmed.startsWith('#')) {
      const m = /^#\s*([a-z-]+):\s*(.*)$/.exec(trimmed)
      if (m && entries.length === 0 && !header.has(m[1]!)) header.set(m[1]!, m[2]!.trim())
      continue
    }
    const [spec, ...rest] = trimmed.replace(/\s+#.*$/, '').split(/\s+(?=--)/)
    const pin = PIN.exec(spec!)
    if (!pin) fail(start, `"${spec}" is not an exact pin name==version`, `every line of a lock pins one version; ${regenerate}`)
    const hashes: string[] = []
    for (const option of rest.flatMap((r) => r.trim().split(/\s+/))) {
      const h = HASH.exec(option)
      if (!h) fail(start, `"${option}" is not a --hash=sha256:<64 hex digits> option`, regenerate)
      hashes.push(h![1]!)
    }
    const [, name, , version, marker] = pin!
    if (hashes.length === 0)
      fail(start, `${name}==${version} has no --hash: pip installs only hash-checked artifacts from a lock`, regenerate)
    if (marker) {
      try {
        evaluateMarker(marker, {})
      } catch (error) {
        if (error instanceof MarkerError) fail(start, error.message, regenerate)
        throw error
      }
    }
    const entry: LockEntry = { name: normalizeName(name!), version: version!, hashes, line: start, ...(marker ? { marker } : {}) }
    const twin = entries.find((e) => e.name === entry.name && (e.marker ?? '') === (entry.marker ?? ''))
    if (twin) fail(start, `${entry.name} is pinned twice (also on line ${twin.line})`, regenerate)
    entries.push(entry)
  }
  const need = (key: string): string => header.get(key) ?? fail(undefined, `the header has no "# ${key}:" line`, regenerate)
  const synapseVersion = need('synapse')
  const requirement = need('requirement')
  const lock: SynapseLock = {
    file,
    synapseVersion,
    requirement,
    resolvedAsOf: need('resolved-as-of'),
    python: need('python'),
    resolver: header.get('resolver') ?? 'unknown',
    entries,
    digest: createHash('sha256').update(text).digest('hex'),
    text,
  }
  if (expectedVersion !== undefined && synapseVersion !== expectedVersion) {
    fail(
      undefined,
      `this lock is for Synapse ${synapseVersion}, but the inventory asks for ${expectedVersion}`,
      `run \`${lockCommand('<inventory>', expectedVersion)}\` to write ${expectedVersion}.txt`,
    )
  }
  const synapse = entries.filter((e) => e.name === 'matrix-synapse')
  if (synapse.length === 0) fail(undefined, 'no matrix-synapse line', regenerate)
  const wrong = synapse.find((e) => e.version !== synapseVersion)
  if (wrong) fail(wrong.line, `matrix-synapse is pinned to ${wrong.version}, but the header says ${synapseVersion}`, regenerate)
  const extras =
    /^matrix-synapse\[([^\]]*)\]==/
      .exec(requirement)?.[1]
      ?.split(',')
      .map((s) => s.trim()) ?? []
  const missing = SYNAPSE_EXTRAS.filter((x) => !extras.includes(x))
  if (missing.length)
    fail(undefined, `the lock was resolved without the extra(s) ${missing.join(', ')} (requirement: ${requirement})`, regenerate)
  return lock
}

/** The lock's lines that apply to an interpreter (markers evaluated). */
export function entriesFor(lock: SynapseLock, env: MarkerEnvironment): LockEntry[] {
  return lock.entries.filter((e) => evaluateMarker(e.marker, env))
}
