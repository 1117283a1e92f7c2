/**
 * Inventory YAML -> typed, validated Inventory. Three passes, each collecting all of its issues:
 *
 *   1. YAML syntax (duplicate keys, indentation, tabs, unclosed quotes, several documents)
 *   2. structure (zod schema of the raw file: types, ranges, names, unknown keys)
 *   3. meaning (after merging defaults under each host: required values, roles, references
 *      between hosts, secrets, version compatibility, port clashes)
 *
 * A pass runs only when the one before found nothing, so every issue is about the file as the
 * user wrote it. Every issue carries file:line:col of the node that causes it.
 */
import { readFile } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, visit, type Document } from 'yaml'
import type { z } from 'zod'
import { minimumPostgresFor, POSTGRES_MINIMUMS } from '../synapse/compat.js'
import { describeValue, formatPath, InventoryError, type InventoryIssue, splitHint, suggestion } from './errors.js'
import {
  allowedKeysAt,
  APT_REPOSITORY_DEFAULTS,
  HOST_NAME,
  inventorySchema,
  type RawHost,
  type RawInventory,
  type RawSsh,
  type RawVars,
  SSH_DEFAULTS,
  VAR_SECRETS,
  VARS_DEFAULTS,
} from './schema.js'
import { isIP } from 'node:net'
import { checkWorkerEntries, entriesOf, instancePorts, instancesOn, MAX_AUTO_PORT_INSTANCES, mediaStoreHost, ofKind, placedHost, spansHosts, workerInstances } from './workers.js'
import { WORKER_KINDS } from '../synapse/worker-kinds.js'
import { WHEELHOUSE_MANIFEST } from '../synapse/lock/wheelhouse-manifest.js'
import { DEFAULT_LOCK_DIR, LockError, type SynapseLock } from '../synapse/lock/lock-file.js'
import { readLock, readWheelhouseManifest } from './controller-files.js'
import { resolveControllerPath, resolveSecretRef, type SecretContext, osReason } from './secrets.js'
import { registerUrlCredentials } from '../core/secret.js'
import type { SecretRef, SecretValue } from '../core/secret.js'
import type { SshSettings } from '../ssh/settings.js'
import { type HostSpec, type Inventory, type MatrixSettings, type Role, ROLES } from './types.js'

type Path = readonly PropertyKey[]
type ZodIssue = z.core.$ZodIssue
type ZodRawIssue = z.core.$ZodRawIssue

/**
 * Credentials in any URL of the inventory (pipIndexUrl, aptRepository.url, element.url: user:password@)
 * are secrets from here on: masked in plans, messages, logs and JSON, before validation can quote them.
 */
function registerInventoryUrlCredentials(value: unknown, path: (string | number)[]): void {
  if (typeof value === 'string') {
    if (/:\/\/[^\s/?#@]*:[^\s/?#@]*@/.test(value)) registerUrlCredentials(value, formatPath(path) || 'the inventory')
  } else if (Array.isArray(value)) value.forEach((v, i) => registerInventoryUrlCredentials(v, [...path, i]))
  else if (value !== null && typeof value === 'object') for (const [k, v] of Object.entries(value)) registerInventoryUrlCredentials(v, [...path, k])
}

export interface LoadOptions {
  /**
   * Read and validate the Synapse lock of every pip host (default true). `provision lock`, which
   * writes the locks, loads without them.
   */
  locks?: boolean
}

/** Read and validate an inventory file. Bad input of any kind throws InventoryError. */
export async function loadInventory(file: string, env: NodeJS.ProcessEnv = process.env, options: LoadOptions = {}): Promise<Inventory> {
  let source: string
  try {
    source = await readFile(file, 'utf8')
  } catch (error) {
    throw new InventoryError([
      {
        file,
        line: 1,
        col: 1,
        path: '',
        message: `cannot read the inventory file ${resolve(file)}: ${osReason(error)}`,
        hint: 'check the path given with --inventory (see inventories/example.yaml for the format)',
      },
    ])
  }
  return loadInventoryFromString(source, file, env, options)
}

/** Validate inventory text; `file` is used for messages and as the base of relative paths. */
export async function loadInventoryFromString(source: string, file: string, env: NodeJS.ProcessEnv = process.env, options: LoadOptions = {}): Promise<Inventory> {
  const lineCounter = new LineCounter()
  const doc = parseDocument(source, { lineCounter, uniqueKeys: true, prettyErrors: false, merge: true })
  const locator = new Locator(doc, lineCounter, file)

  const syntaxIssues = doc.errors.map((error) => yamlIssue(error, locator, source))
  if (syntaxIssues.length > 0) throw new InventoryError(syntaxIssues)

  let data: unknown
  try {
    data = doc.toJS({ maxAliasCount: 100 })
  } catch (error) {
    throw new InventoryError([
      { file, line: 1, col: 1, path: '', message: `cannot read the YAML: ${error instanceof Error ? error.message : String(error)}`, hint: 'use fewer aliases (*name)' },
    ])
  }
  registerInventoryUrlCredentials(data, [])

  const parsed = inventorySchema.safeParse(data, { error: genericMessage })
  if (!parsed.success) throw new InventoryError(parsed.error.issues.flatMap((issue) => schemaIssue(issue, data, locator)))

  const builder = new InventoryBuilder(parsed.data, file, env, locator, options)
  return builder.build()
}

// ---------------------------------------------------------------------------------------------
// Positions

class Locator {
  constructor(
    readonly doc: Document,
    readonly lineCounter: LineCounter,
    readonly file: string,
  ) {}

  private deref(node: unknown): unknown {
    return isAlias(node) ? node.resolve(this.doc) : node
  }

  /** The value node at `path` and the key node that names it. */
  find(path: Path): { node: unknown; key: unknown } | undefined {
    let node: unknown = this.doc.contents
    let key: unknown
    for (const segment of path) {
      node = this.deref(node)
      if (isMap(node)) {
        const pair = node.items.find((item) => keyText(item.key) === String(segment))
        if (!pair) return undefined
        key = pair.key
        node = pair.value
      } else if (isSeq(node) && typeof segment === 'number' && segment < node.items.length) {
        key = undefined
        node = node.items[segment]
      } else {
        return undefined
      }
    }
    return { node: this.deref(node), key }
  }

  private offsetOf(found: { node: unknown; key: unknown }): number {
    const node = found.node as { range?: [number, number, number] } | null
    const empty = node === null || node === undefined || !node.range || (isScalar(node) && node.value === null && node.range[0] === node.range[1])
    if (empty) {
      const key = found.key as { range?: [number, number, number] } | undefined
      if (key?.range) return key.range[0]
      return node?.range?.[0] ?? 0
    }
    return node.range![0]
  }

  /** Offset of the value at `path`, else of its nearest existing ancestor (the parent mapping of a missing key). */
  offset(path: Path): number {
    for (let length = path.length; length >= 0; length--) {
      const found = this.find(path.slice(0, length))
      if (found) return this.offsetOf(found)
    }
    return 0
  }

  /** Offset of the key that names the value at `path` (for unknown keys, bad host names). */
  keyOffset(path: Path): number {
    const found = this.find(path)
    const key = found?.key as { range?: [number, number, number] } | undefined
    return key?.range ? key.range[0] : this.offset(path)
  }

  issueAtOffset(offset: number, path: string, message: string, hint?: string): InventoryIssue {
    const { line, col } = this.lineCounter.linePos(offset)
    return { file: this.file, line, col, path, message, ...(hint ? { hint } : {}) }
  }

  issue(path: Path, message: string, hint?: string): InventoryIssue {
    return this.issueAtOffset(this.offset(path), formatPath(path), message, hint)
  }

  keyIssue(path: Path, message: string, hint?: string): InventoryIssue {
    return this.issueAtOffset(this.keyOffset(path), formatPath(path), message, hint)
  }
}

function keyText(key: unknown): string {
  if (isScalar(key)) return String(key.value)
  return String(key)
}

// ---------------------------------------------------------------------------------------------
// Pass 1: YAML syntax

interface YamlErrorLike {
  code: string
  message: string
  pos: [number, number]
}

/**
 * The quote or bracket still open at `offset`, if any: YAML reports an unclosed one where it gives
 * up (often lines later), the user needs the place where it was opened. A light scanner: quotes
 * and brackets count only where a value starts, comments are skipped.
 */
export function findUnclosedOpener(source: string, offset: number): { offset: number; char: string } | undefined {
  const stack: { offset: number; char: string }[] = []
  let quote: { offset: number; char: string } | undefined
  let comment = false
  const atValueStart = (index: number): boolean => {
    let j = index - 1
    while (j >= 0 && (source[j] === ' ' || source[j] === '\t')) j--
    if (j < 0 || source[j] === '\n') return true
    return ':-[{,?'.includes(source[j]!) && (j === index - 1 ? source[j] !== ':' && source[j] !== '-' : true)
  }
  const end = Math.min(offset, source.length)
  for (let i = 0; i < end; i++) {
    const ch = source[i]!
    if (comment) {
      if (ch === '\n') comment = false
      continue
    }
    if (quote) {
      if (quote.char === '"' && ch === '\\') i++
      else if (ch === quote.char) {
        if (ch === "'" && source[i + 1] === "'") i++
        else quote = undefined
      }
      continue
    }
    if (ch === '#' && (i === 0 || /\s/.test(source[i - 1]!))) comment = true
    else if ((ch === '"' || ch === "'") && atValueStart(i)) quote = { offset: i, char: ch }
    else if ((ch === '[' || ch === '{') && (stack.length > 0 || atValueStart(i))) stack.push({ offset: i, char: ch })
    else if ((ch === ']' || ch === '}') && stack.length > 0) stack.pop()
  }
  return quote ?? stack[stack.length - 1]
}

/** Offset of the first non-space character from `offset` on the same line (where a badly indented key starts). */
function skipSpaces(source: string, offset: number): number {
  let i = offset
  while (source[i] === ' ') i++
  return source[i] === undefined || source[i] === '\n' ? offset : i
}

function yamlIssue(error: YamlErrorLike, locator: Locator, source: string): InventoryIssue {
  const offset = error.pos[0]
  const text = error.message.replace(/\s+/g, ' ').trim()
  const lower = text.charAt(0).toLowerCase() + text.slice(1)
  if (error.code === 'MISSING_CHAR' || /quote|flow (?:sequence|map|collection)/i.test(text)) {
    const opener = findUnclosedOpener(source, Math.max(error.pos[1], offset))
    if (opener) {
      const noticed = locator.lineCounter.linePos(offset)
      const closer = opener.char === '[' ? ']' : opener.char === '{' ? '}' : opener.char
      const what = opener.char === '[' ? 'list' : opener.char === '{' ? 'mapping' : 'quote'
      return locator.issueAtOffset(
        opener.offset,
        '',
        `YAML syntax error: this ${opener.char} (${what}) is never closed with ${closer} (noticed at line ${noticed.line}, column ${noticed.col}: ${lower})`,
        `add the closing ${closer} on the same line, or write the value in block style`,
      )
    }
  }
  switch (error.code) {
    case 'DUPLICATE_KEY':
      return duplicateKeyIssue(offset, locator)
    case 'TAB_AS_INDENT':
      return locator.issueAtOffset(offset, '', 'YAML syntax error: a tab character is used for indentation; only spaces may indent YAML', 'replace the tab with spaces (2 per level)')
    case 'MULTIPLE_DOCS':
      return locator.issueAtOffset(
        offset,
        '',
        'YAML syntax error: a "---" line starts a second document; an inventory is exactly one YAML document',
        'remove the "---" line and merge what follows into the first document, or split it into two inventory files',
      )
    case 'BAD_INDENT':
    case 'BLOCK_AS_IMPLICIT_KEY':
    case 'MULTILINE_IMPLICIT_KEY':
      return locator.issueAtOffset(
        skipSpaces(source, offset),
        '',
        `YAML syntax error (bad indentation): ${lower}`,
        'keys of one mapping start in the same column and nested values are indented further than their key, with spaces; also check for a missing ":" or an unclosed quote or bracket above',
      )
    case 'MISSING_CHAR':
    case 'UNEXPECTED_TOKEN':
      return locator.issueAtOffset(
        offset,
        '',
        `YAML syntax error: ${lower}`,
        'close every quote ("..." or \'...\'), [list] and {mapping} on the line where it opens, or use block style instead',
      )
    default:
      return locator.issueAtOffset(offset, '', `YAML syntax error: ${lower}`, 'see inventories/example.yaml for the expected layout')
  }
}

function duplicateKeyIssue(offset: number, locator: Locator): InventoryIssue {
  let name: string | undefined
  let firstOffset: number | undefined
  let underHosts = false
  const hostsNode = locator.find(['hosts'])?.node
  visit(locator.doc, {
    Pair(_, pair, path) {
      const key = pair.key as { range?: [number, number, number] } | null
      if (!key?.range || key.range[0] !== offset) return undefined
      name = keyText(pair.key)
      const parent = path[path.length - 1]
      underHosts = parent === hostsNode && parent !== undefined
      if (isMap(parent)) {
        const first = parent.items.find((item) => keyText(item.key) === name)
        const firstKey = first?.key as { range?: [number, number, number] } | undefined
        if (firstKey?.range && firstKey.range[0] !== offset) firstOffset = firstKey.range[0]
      }
      return visit.BREAK
    },
  })
  const firstLine = firstOffset === undefined ? undefined : locator.lineCounter.linePos(firstOffset).line
  const seen = firstLine === undefined ? '' : ` (first defined on line ${firstLine})`
  if (underHosts && name !== undefined) {
    return locator.issueAtOffset(
      offset,
      `hosts.${name}`,
      `duplicate host name "${name}"${seen}: host names must be unique within hosts`,
      'rename one of the hosts, or merge their settings into one entry',
    )
  }
  const label = name === undefined ? 'duplicate key' : `duplicate key "${name}"`
  return locator.issueAtOffset(offset, '', `${label}${seen}: a key may appear only once in a mapping`, 'remove or rename one of them')
}

// ---------------------------------------------------------------------------------------------
// Pass 2: structure

const TYPE_NAMES: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  int: 'an integer',
  boolean: 'true or false',
  object: 'a mapping',
  record: 'a mapping',
  map: 'a mapping',
  array: 'a list',
  null: 'null',
  undefined: 'nothing',
}

/** Messages for issues whose schema gives none: what is expected, never zod's wording. */
function genericMessage(issue: ZodRawIssue): string | undefined {
  switch (issue.code) {
    case 'invalid_type':
      return `expected ${TYPE_NAMES[issue.expected] ?? issue.expected}`
    case 'invalid_value':
      return `expected ${issue.values.map((value) => JSON.stringify(value)).join(' or ')}`
    case 'too_small':
      return issue.origin === 'array' ? `expected at least ${issue.minimum} item(s)` : issue.origin === 'string' ? 'expected a non-empty string' : `expected a value >= ${issue.minimum}`
    case 'too_big':
      return issue.origin === 'array' ? `expected at most ${issue.maximum} item(s)` : issue.origin === 'string' ? `expected at most ${issue.maximum} characters` : `expected a value <= ${issue.maximum}`
    case 'invalid_format':
      return `expected a ${issue.format}`
    default:
      return undefined
  }
}

function valueAt(data: unknown, path: Path): { exists: boolean; value: unknown } {
  let current: unknown = data
  for (const segment of path) {
    if (current === null || typeof current !== 'object') return { exists: false, value: undefined }
    const record = current as Record<PropertyKey, unknown>
    if (!Object.prototype.hasOwnProperty.call(record, segment as PropertyKey)) return { exists: false, value: undefined }
    current = record[segment as PropertyKey]
  }
  return { exists: true, value: current }
}

function schemaIssue(issue: ZodIssue, data: unknown, locator: Locator): InventoryIssue[] {
  const path = issue.path
  if (issue.code === 'unrecognized_keys') {
    const allowed = allowedKeysAt(path)
    return issue.keys.map((key) => {
      const keyPath = [...path, key]
      return locator.keyIssue(keyPath, `unknown key "${key}"; ${suggestion(key, allowed, 'allowed keys')}`)
    })
  }
  if (issue.code === 'invalid_key') {
    const name = String(path[path.length - 1])
    const inner = splitHint(issue.issues[0]?.message ?? 'invalid name')
    const what = path.length === 2 && path[0] === 'hosts' ? 'invalid host name' : 'invalid key'
    return [locator.keyIssue(path, `${what} ${describeValue(name)}: ${inner.message}`, inner.hint)]
  }

  const { message: template, hint } = splitHint(issue.message)
  const found = valueAt(data, path)
  let message: string
  if (!found.exists) {
    const last = path[path.length - 1]
    const name = last === undefined ? 'the inventory' : `"${String(last)}"`
    message = `missing required key ${name}: ${template.replace(/,? got \{got\}/, '').replace('{got}', 'nothing')}`
  } else if (template.includes('{got}')) {
    message = template.replace('{got}', describeValue(found.value))
  } else if (issue.code === 'invalid_union') {
    // Secret references: never echo what was written (it may be the secret itself).
    message = template
  } else {
    message = `${template}, got ${describeValue(found.value)}`
  }
  if (issue.code === 'invalid_value' && typeof found.value === 'string') {
    const values = issue.values.map(String)
    message += `; ${suggestion(found.value, values, 'allowed')}`
  }
  return [locator.issue(path, message, hint)]
}

// ---------------------------------------------------------------------------------------------
// Pass 3: meaning, defaults, secrets

const SECRET_PATH_KEYS = new Set(VAR_SECRETS.map((secret) => secret.path.join('.')))

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

/** Deep merge, `over` wins; lists and secret references are replaced whole. */
function mergeVars(base: unknown, over: unknown, path: string[] = []): unknown {
  if (over === undefined) return base
  if (base === undefined) return over
  if (isPlainObject(base) && isPlainObject(over) && !SECRET_PATH_KEYS.has(path.join('.'))) {
    const result: Record<string, unknown> = { ...base }
    for (const [key, value] of Object.entries(over)) result[key] = mergeVars(base[key], value, [...path, key])
    return result
  }
  return over
}

function hasPath(data: unknown, path: Path): boolean {
  return valueAt(data, path).exists && valueAt(data, path).value !== undefined
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b)
}

interface HostEntry {
  name: string
  raw: RawHost
  roles: Role[]
  vars: RawVars
  ssh: RawSsh
}

const NEEDS_POSTGRES: readonly Role[] = ['synapse', 'workers']

class InventoryBuilder {
  private readonly issues: InventoryIssue[] = []
  private readonly hosts: HostEntry[]
  private readonly names: string[]
  private readonly baseDir: string
  private readonly secretContext: SecretContext
  private readonly secretCache = new Map<string, Promise<{ value?: SecretValue }>>()
  private readonly lockCache = new Map<string, Promise<SynapseLock | LockError>>()

  constructor(
    private readonly raw: RawInventory,
    private readonly file: string,
    private readonly env: NodeJS.ProcessEnv,
    private readonly locator: Locator,
    private readonly options: LoadOptions = {},
  ) {
    this.baseDir = dirname(resolve(file))
    this.secretContext = { baseDir: this.baseDir, env, fileCache: new Map() }
    const defaultsVars = raw.defaults?.vars ?? {}
    const defaultsSsh = raw.defaults?.ssh ?? {}
    this.hosts = Object.entries(raw.hosts).map(([name, host]) => ({
      name,
      raw: host,
      roles: host.roles,
      vars: mergeVars(defaultsVars, host.vars ?? {}) as RawVars,
      ssh: { ...defaultsSsh, ...(host.ssh ?? {}) },
    }))
    this.names = this.hosts.map((host) => host.name)
  }

  // -- positions -------------------------------------------------------------------------------

  /** Where a merged vars value was written: the host's vars, else defaults.vars; undefined when it is a default. */
  private varsOrigin(host: string, sub: Path): PropertyKey[] | undefined {
    if (hasPath(this.raw.hosts[host]?.vars, sub)) return ['hosts', host, 'vars', ...sub]
    if (hasPath(this.raw.defaults?.vars, sub)) return ['defaults', 'vars', ...sub]
    return undefined
  }

  private sshOrigin(host: string, key: string): string[] | undefined {
    if (hasPath(this.raw.hosts[host]?.ssh, [key])) return ['hosts', host, 'ssh', key]
    if (hasPath(this.raw.defaults?.ssh, [key])) return ['defaults', 'ssh', key]
    return undefined
  }

  private add(path: Path, message: string, hint?: string): void {
    this.issues.push(this.locator.issue(path, message, hint))
  }

  /** An issue about a merged value: at the value when written, else at the host's node. */
  private addForVar(host: string, sub: Path, message: string, hint?: string): void {
    const origin = this.varsOrigin(host, sub)
    if (origin) this.add(origin, message, hint)
    else this.issues.push(this.locator.issueAtOffset(this.locator.offset(['hosts', host]), formatPath(['hosts', host, 'vars', ...sub]), message, hint))
  }

  private roleIndex(host: HostEntry, role: Role): number {
    return host.roles.indexOf(role)
  }

  private addForRole(host: HostEntry, role: Role, message: string, hint?: string): void {
    this.add(['hosts', host.name, 'roles', this.roleIndex(host, role)], message, hint)
  }

  // -- checks ----------------------------------------------------------------------------------

  private hostsWithRole(role: Role): HostEntry[] {
    return this.hosts.filter((host) => host.roles.includes(role))
  }

  private checkHostReference(path: Path, name: string, what: string): boolean {
    if (this.names.includes(name)) return true
    this.add(path, `${what} "${name}" is not a host of this inventory; ${suggestion(name, this.names, 'the hosts are')}`, 'name a host defined under hosts:')
    return false
  }

  /** The inventory host that runs `role` for `host`: explicit vars.<role>.host, the only host with the role, else this host. */
  private serviceHost(host: HostEntry, role: 'postgres' | 'redis'): { name?: string; explicit: boolean; candidates: HostEntry[] } {
    const explicit = host.vars[role]?.host
    const candidates = this.hostsWithRole(role)
    if (explicit !== undefined) return { name: explicit, explicit: true, candidates }
    if (candidates.length === 1) return { name: candidates[0]!.name, explicit: false, candidates }
    if (candidates.length === 0 || host.roles.includes(role)) return { name: host.name, explicit: false, candidates }
    return { explicit: false, candidates }
  }

  private checkRoles(host: HostEntry): void {
    host.roles.forEach((role, index) => {
      const first = host.roles.indexOf(role)
      if (first !== index) this.add(['hosts', host.name, 'roles', index], `role "${role}" is listed twice (first at position ${first + 1})`, 'list each role once')
    })
    if (host.roles.includes('backup') && !host.roles.includes('synapse')) {
      this.addForRole(host, 'backup', 'the backup role needs the synapse role on the same host: it backs up that homeserver (its media, signing key and database)', `add synapse to hosts.${host.name}.roles, or move backup to the host that has synapse`)
    }
  }

  private checkServiceReferences(host: HostEntry): void {
    for (const role of ['postgres', 'redis'] as const) {
      const explicit = host.vars[role]?.host
      if (explicit === undefined) continue
      const origin = this.varsOrigin(host.name, [role, 'host']) ?? ['hosts', host.name]
      if (!this.checkHostReference(origin, explicit, `${role}.host`)) continue
      const target = this.hosts.find((other) => other.name === explicit)!
      if (!target.roles.includes(role)) {
        this.add(origin, `${role}.host is "${explicit}", but that host does not have the ${role} role, so nothing installs ${role === 'postgres' ? 'PostgreSQL' : 'Redis'} there`, `add ${role} to hosts.${explicit}.roles`)
      }
    }
    const allowFrom = host.vars.postgres?.allowFrom
    if (allowFrom) {
      const origin = this.varsOrigin(host.name, ['postgres', 'allowFrom'])
      allowFrom.forEach((name, index) => {
        if (origin) this.checkHostReference([...origin, index], name, 'postgres.allowFrom entry')
      })
    }
  }

  private checkDatabaseNeeds(host: HostEntry): void {
    if (!NEEDS_POSTGRES.some((role) => host.roles.includes(role))) return
    const postgres = this.serviceHost(host, 'postgres')
    if (postgres.name === undefined) {
      this.addForVar(
        host.name,
        ['postgres', 'host'],
        `several hosts have the postgres role (${postgres.candidates.map((c) => c.name).join(', ')}); which one does ${host.name} use?`,
        'set vars.postgres.host to one of them',
      )
    }
    if (host.roles.includes('workers')) {
      const redis = this.serviceHost(host, 'redis')
      if (!redis.explicit && redis.candidates.length === 0) {
        this.addForRole(
          host,
          'workers',
          'the workers role needs Redis (Synapse replicates between processes only over Redis since 1.67), but no host has the redis role',
          `add redis to the roles of ${host.name} (or of another host and set vars.redis.host to it)`,
        )
      } else if (redis.name === undefined) {
        this.addForVar(
          host.name,
          ['redis', 'host'],
          `several hosts have the redis role (${redis.candidates.map((c) => c.name).join(', ')}); which one does ${host.name} use?`,
          'set vars.redis.host to one of them',
        )
      }
    }
  }

  /** A generated secret lives on one host; a service on another host cannot read it. */
  private checkSharedSecret(client: HostEntry, service: 'postgres' | 'redis'): void {
    const serverName = this.serviceHost(client, service).name
    if (serverName === undefined || serverName === client.name) return
    const server = this.hosts.find((host) => host.name === serverName)
    if (!server) return
    const generatedByDefault = service === 'postgres'
    const clientRef = client.vars[service]?.password ?? (generatedByDefault ? { generate: true } : undefined)
    const serverRef = server.vars[service]?.password ?? (generatedByDefault ? { generate: true } : undefined)
    const label = service === 'postgres' ? 'PostgreSQL' : 'Redis'
    const generated = (ref: unknown) => isPlainObject(ref) && ref.generate === true
    if (generated(clientRef) || generated(serverRef)) {
      const at = generated(clientRef) ? client : server
      this.addForVar(
        at.name,
        [service, 'password'],
        `${service}.password is { generate: true }, but ${label} runs on ${server.name} and its client on ${client.name}: a password generated on one host cannot be read by the other`,
        `use { env: NAME } or { file: path } for ${service}.password (in defaults.vars, so both hosts get the same value)`,
      )
    } else if (!sameJson(clientRef, serverRef)) {
      this.addForVar(
        client.name,
        [service, 'password'],
        `${service}.password of ${client.name} differs from the one of ${server.name}, which runs ${label}: both must be the same secret`,
        `set ${service}.password once in defaults.vars`,
      )
    }
  }

  private checkPostgresVersion(host: HostEntry): void {
    const pairs: { synapseHost: HostEntry; postgresHost: HostEntry }[] = []
    if (host.roles.includes('synapse')) {
      const name = this.serviceHost(host, 'postgres').name
      const postgresHost = this.hosts.find((other) => other.name === name)
      if (postgresHost) pairs.push({ synapseHost: host, postgresHost })
    }
    if (host.roles.includes('postgres') && !host.roles.includes('synapse')) pairs.push({ synapseHost: host, postgresHost: host })
    for (const { synapseHost, postgresHost } of pairs) {
      const version = postgresHost.vars.postgres?.version
      if (version === undefined) continue
      const synapseVersion = synapseHost.vars.synapse?.version
      const minimum = minimumPostgresFor(synapseVersion)
      if (version >= minimum) continue
      const since = POSTGRES_MINIMUMS.find((entry) => entry.postgres === minimum)?.since
      this.addForVar(
        postgresHost.name,
        ['postgres', 'version'],
        `PostgreSQL ${version} is too old for Synapse ${synapseVersion ?? '(latest release)'}: Synapse ${since ?? ''}${since ? ' and newer need' : 'needs'} PostgreSQL ${minimum} or newer`,
        `set postgres.version to ${minimum} or higher (or leave it unset to use the distribution's default), or pin an older synapse.version`,
      )
    }
  }

  /**
   * The pip method installs a locked set: read <lockDir>/<version>.txt (once per file) into
   * settings.synapse.lock, and hold an uploaded wheelhouse to the lock it must have been built from.
   */
  private async synapseLock(host: HostEntry, settings: MatrixSettings): Promise<void> {
    const synapse = settings.synapse
    if (this.options.locks === false || synapse.install !== 'pip' || !host.roles.includes('synapse')) return
    const manifest = synapse.wheelhouse ? readWheelhouseManifest(synapse.wheelhouse) : undefined
    if (synapse.wheelhouse && !manifest) {
      this.addForVar(host.name, ['synapse', 'wheelhouse'], `${synapse.wheelhouse} is not a wheelhouse built by matrix-provision (no readable ${WHEELHOUSE_MANIFEST})`, 'build it from the lock (provision lock --wheelhouse DIR --python X.Y), or leave synapse.wheelhouse out to install from the index')
      return
    }
    const version = synapse.version ?? manifest?.synapseVersion
    if (!version) {
      this.addForVar(host.name, ['synapse', 'install'], 'synapse.install pip needs synapse.version (or a wheelhouse, whose version is used)', 'set synapse.version, e.g. "1.163.2"')
      return
    }
    synapse.version = version
    const key = `${synapse.lockDir}\0${version}`
    let pending = this.lockCache.get(key)
    if (!pending) {
      pending = readLock(synapse.lockDir, version, this.file).catch((error: unknown) => {
        if (error instanceof LockError) return error
        throw error
      })
      this.lockCache.set(key, pending)
    }
    const lock = await pending
    const where = this.varsOrigin(host.name, ['synapse', 'lockDir']) ? ['synapse', 'lockDir'] : this.varsOrigin(host.name, ['synapse', 'version']) ? ['synapse', 'version'] : ['synapse', 'install']
    if (lock instanceof LockError) {
      this.addForVar(host.name, where, `${lock.file}${lock.line ? `:${lock.line}` : ''}: ${lock.problem}`, lock.hint)
      return
    }
    if (manifest && manifest.lockDigest !== lock.digest) {
      this.addForVar(
        host.name,
        ['synapse', 'wheelhouse'],
        `the wheelhouse ${synapse.wheelhouse} was not built from ${lock.file} (it holds Synapse ${manifest.synapseVersion}${manifest.lockDigest ? ' from another lock' : ' without a lock'})`,
        'build the wheelhouse again from this lock (provision lock --wheelhouse DIR --python X.Y)',
      )
      return
    }
    synapse.lock = lock
  }

  private checkElement(host: HostEntry, settings: MatrixSettings): void {
    if (!host.roles.includes('element')) return
    const element = host.vars.element ?? {}
    if (element.version === undefined && element.url === undefined && element.file === undefined) {
      this.addForVar(
        host.name,
        ['element'],
        'the element role needs to know what to install, but element has neither version, url nor file',
        'set element.version (e.g. "1.11.85", downloaded from GitHub), element.url, or element.file (a tarball on this machine)',
      )
    }
    if (element.url !== undefined && element.file !== undefined) {
      this.addForVar(host.name, ['element', 'file'], 'element.url and element.file are both set; only one source is allowed', 'remove one of them')
    }
    if (element.signatureUrl !== undefined && element.signatureFile !== undefined) {
      this.addForVar(host.name, ['element', 'signatureFile'], 'element.signatureUrl and element.signatureFile are both set; only one is allowed', 'remove one of them')
    }
    const serverHost = settings.serverName.replace(/:\d+$/, '')
    if (settings.element.host === settings.publicHost || settings.element.host === serverHost) {
      this.addForVar(
        host.name,
        ['element', 'host'],
        `element.host "${settings.element.host}" is also the homeserver's host name: Element must have its own host name (same-origin XSS risk)`,
        `use a separate name such as element.${serverHost}`,
      )
    }
  }

  private checkTls(host: HostEntry): void {
    if (!host.roles.includes('apache')) return
    const tls = host.vars.apache?.tls ?? {}
    const mode = tls.mode ?? VARS_DEFAULTS.apache.tls.mode
    const modeOrigin = this.varsOrigin(host.name, ['apache', 'tls', 'mode'])
    const tlsPath = modeOrigin ? modeOrigin.slice(0, -1) : ['hosts', host.name]
    if (mode === 'files') {
      const missing = (['certificateFile', 'keyFile'] as const).filter((key) => tls[key] === undefined)
      if (missing.length > 0) {
        this.add(
          tlsPath,
          `tls mode "files" needs ${missing.join(' and ')}: the certificate and key uploaded to the host`,
          'set apache.tls.certificateFile and apache.tls.keyFile (paths on this machine), or use mode self-signed or acme',
        )
      }
    }
    if (mode === 'acme' && tls.acmeEmail === undefined) {
      this.add(tlsPath, 'tls mode "acme" needs acmeEmail (the Let\'s Encrypt account address)', 'set apache.tls.acmeEmail, e.g. admin@example.org')
    }
  }

  private checkAptRepository(host: HostEntry): void {
    const apt = host.vars.aptRepository
    if (apt?.keyringUrl !== undefined && apt.keyringFile !== undefined) {
      this.addForVar(host.name, ['aptRepository', 'keyringFile'], 'aptRepository.keyringUrl and keyringFile are both set; only one keyring source is allowed', 'remove one of them')
    }
  }

  private checkPorts(host: HostEntry, settings: MatrixSettings, setOrigin: HostEntry): void {
    const used: { port: number; label: string; sub: Path }[] = []
    const has = (role: Role) => host.roles.includes(role)
    if (has('synapse')) {
      used.push({ port: settings.synapse.listenPort, label: 'synapse.listenPort', sub: ['synapse', 'listenPort'] })
      if (settings.monitoring.enableMetrics) used.push({ port: settings.monitoring.mainMetricsPort, label: 'monitoring.mainMetricsPort', sub: ['monitoring', 'mainMetricsPort'] })
    }
    if (has('workers')) {
      if (has('synapse')) used.push({ port: settings.workers.replicationPort, label: 'workers.replicationPort', sub: ['workers', 'replicationPort'] })
      const here = new Set(instancesOn(settings, host.name).map((w) => w.name))
      workerInstances(settings).forEach((w, index) => {
        if (!here.has(w.name)) return
        for (const p of instancePorts(w, settings.monitoring.enableMetrics)) {
          const sub = this.workerPortOrigin(setOrigin, settings, index, p.field)
          if (setOrigin === host) used.push({ port: p.port, label: p.label, sub })
          else used.push({ port: p.port, label: `${p.label} (placed here by ${setOrigin.name})`, sub })
        }
      })
    }
    if (has('monitoring') && settings.monitoring.prometheus.enabled) {
      used.push({ port: settings.monitoring.prometheus.port, label: 'monitoring.prometheus.port', sub: ['monitoring', 'prometheus', 'port'] })
      used.push({ port: settings.monitoring.prometheus.nodeExporterPort, label: 'monitoring.prometheus.nodeExporterPort', sub: ['monitoring', 'prometheus', 'nodeExporterPort'] })
    }
    if (has('redis')) used.push({ port: settings.redis.port, label: 'redis.port', sub: ['redis', 'port'] })
    if (has('postgres')) used.push({ port: settings.postgres.port, label: 'postgres.port', sub: ['postgres', 'port'] })
    if (has('apache')) {
      used.push({ port: settings.apache.httpsPort, label: 'apache.httpsPort', sub: ['apache', 'httpsPort'] })
      used.push({ port: 80, label: 'Apache\'s http port 80', sub: ['apache'] })
      if (settings.apache.delegation === 'port-8448') used.push({ port: 8448, label: 'the federation port 8448 (delegation port-8448)', sub: ['apache', 'delegation'] })
    }
    const seen = new Map<number, string>()
    for (const entry of used) {
      const first = seen.get(entry.port)
      if (first === undefined) {
        seen.set(entry.port, entry.label)
        continue
      }
      this.addForVar(host.name, entry.sub, `port ${entry.port} of ${entry.label} is already used on ${host.name} by ${first}`, 'give each service on a host its own port')
    }
  }

  /** Where a worker's port was set: its entry in workers.instances, the guide's legacy keys, else portBase. */
  private workerPortOrigin(host: HostEntry, settings: MatrixSettings, index: number, field: 'port' | 'replicationPort' | 'metricsPort'): Path {
    if (settings.workers.instances) return hasPath(host.vars, ['workers', 'instances', index, field]) ? ['workers', 'instances', index, field] : ['workers', 'portBase']
    if (settings.workers.preset === 'guide') {
      const legacy = index === 0 ? ['workers', 'federationReader', field] : ['workers', 'federationSender', field]
      return legacy
    }
    return ['workers', 'portBase']
  }

  /** The worker set: a preset or an explicit list, not both; the list's own rules (workers.ts). */
  private checkWorkers(host: HostEntry): void {
    const w = host.vars.workers
    if (!w) return
    if (w.preset !== undefined && w.instances !== undefined) {
      this.addForVar(host.name, ['workers', 'instances'], 'workers.preset and workers.instances are both set; the worker set is one or the other', 'remove preset to use the explicit list, or remove instances to use the preset')
    }
    if (w.instances) {
      for (const issue of checkWorkerEntries(w.instances)) this.addForVar(host.name, ['workers', 'instances', issue.index, issue.key], issue.message, issue.hint)
      if (w.instances.length > MAX_AUTO_PORT_INSTANCES) {
        this.addForVar(host.name, ['workers', 'instances'], `at most ${MAX_AUTO_PORT_INSTANCES} workers get automatic ports, got ${w.instances.length}`, 'split the homeserver, or give the extra workers their own ports')
      }
    }
  }

  /**
   * Where each homeserver's workers run (workers.placement, an instance's host): every named host has
   * the workers role and no homeserver of its own, every workers-only host is named by exactly one
   * homeserver and takes that homeserver's worker settings. A homeserver that spans hosts binds its
   * shared listeners to private addresses (IPs), and every host must read the same secrets and key.
   * Returns, for each worker host, the host whose vars define its set (for positions).
   */
  private placeWorkers(specs: HostSpec[]): Map<string, HostEntry> {
    const origins = new Map<string, HostEntry>()
    const placedBy = new Map<string, string[]>()
    const entryOf = (name: string) => this.hosts.find((h) => h.name === name)!
    for (const main of specs.filter((h) => h.roles.includes('synapse') && h.roles.includes('workers'))) {
      const w = main.vars.workers
      const entries = entriesOf(w)
      const placement = w.placement ?? {}
      const known = new Set<string>([...entries.map((e) => e.name), ...entries.map((e) => e.kind)])
      for (const key of Object.keys(placement)) {
        if (known.has(key)) continue
        const what = (WORKER_KINDS as readonly string[]).includes(key) ? `kind ${key}, which no worker of the set has` : `"${key}", neither a worker of the set nor one of its kinds`
        this.addForVar(main.name, ['workers', 'placement', key], `workers.placement names ${what}; ${suggestion(key, [...known], 'the set has')}`, 'name a worker or a kind of the set (workers.preset or workers.instances)')
      }
      entries.forEach((e, index) => {
        const target = placedHost(w, e)
        if (target === undefined || target === main.name) return
        const sub = e.host !== undefined ? ['workers', 'instances', index, 'host'] : ['workers', 'placement', placement[e.name] !== undefined ? e.name : e.kind]
        const origin = this.varsOrigin(main.name, sub) ?? ['hosts', main.name]
        if (!this.checkHostReference(origin, target, `the host of worker ${e.name}`)) return
        const other = specs.find((h) => h.name === target)!
        if (!other.roles.includes('workers')) {
          this.add(origin, `worker ${e.name} is placed on ${target}, which does not have the workers role`, `add workers to hosts.${target}.roles`)
        } else if (other.roles.includes('synapse')) {
          this.add(origin, `worker ${e.name} is placed on ${target}, which runs a homeserver of its own (synapse role): one host holds one homeserver's configuration`, `place it on a host without the synapse role, or on ${main.name}`)
        } else if (!(placedBy.get(target) ?? []).includes(main.name)) {
          placedBy.set(target, [...(placedBy.get(target) ?? []), main.name])
        }
      })
    }
    for (const host of specs.filter((h) => h.roles.includes('workers') && !h.roles.includes('synapse'))) {
      const mains = placedBy.get(host.name) ?? []
      const entry = entryOf(host.name)
      if (mains.length !== 1) {
        this.addForRole(
          entry,
          'workers',
          mains.length === 0
            ? `the workers role needs the synapse role on the same host, or a homeserver that places workers on ${host.name} (workers.placement or an instance's host)`
            : `${host.name} is given workers by several homeservers (${mains.join(', ')}); a host holds one homeserver's configuration`,
          mains.length === 0 ? `add synapse to hosts.${host.name}.roles, or set workers.placement (e.g. { generic: ${host.name} }) on the synapse host` : 'place each homeserver\'s workers on hosts of their own',
        )
        continue
      }
      const main = specs.find((h) => h.name === mains[0])!
      // The worker set is the homeserver's: the worker host renders the same names, ports and placement.
      host.vars.workers = { ...main.vars.workers, enabled: true }
      origins.set(host.name, entryOf(main.name))
    }
    for (const main of specs.filter((h) => h.roles.includes('synapse') && spansHosts(h.vars))) {
      const hosts = [main, ...specs.filter((h) => h.vars.workers.homeserverHost === main.name && h !== main)]
      const addresses: Record<string, string> = {}
      for (const h of hosts) {
        addresses[h.name] = h.privateAddress
        if (isIP(h.privateAddress) === 0) {
          const raw = entryOf(h.name).raw
          this.add(
            ['hosts', h.name, raw.privateAddress !== undefined ? 'privateAddress' : 'address'],
            `${h.name} runs workers of a homeserver spread over several hosts: its listeners bind to its private address, which must be an IP address, got "${h.privateAddress}"`,
            `set hosts.${h.name}.privateAddress to the IP the homeserver's hosts reach it at`,
          )
        }
      }
      for (const h of hosts) h.vars.workers.addresses = addresses
      this.checkSharedAcrossHosts(main, hosts.filter((h) => h !== main).map((h) => h.name))
      this.checkMediaStore(main)
      // Each worker host connects to Postgres: an explicit allowFrom must name it (pg_hba, the firewall).
      const pgHost = specs.find((h) => h.name === main.vars.postgres.host)
      if (pgHost && this.varsOrigin(pgHost.name, ['postgres', 'allowFrom'])) {
        for (const h of hosts.filter((x) => x !== main && x !== pgHost && !pgHost.vars.postgres.allowFrom?.includes(x.name))) {
          this.addForVar(pgHost.name, ['postgres', 'allowFrom'], `${h.name} runs workers of ${main.name} and connects to Postgres on ${pgHost.name}, but postgres.allowFrom does not list it`, `add ${h.name} to postgres.allowFrom, or remove allowFrom (by default every host with the synapse or workers role)`)
        }
      }
    }
    return origins
  }

  /**
   * The media store lives on one host: media repositories on several hosts would each keep their own
   * (nothing here shares a store), and the scheduled backup on the synapse host reads only its own disk.
   */
  private checkMediaStore(main: HostSpec): void {
    const repositories = ofKind(workerInstances(main.vars), 'media_repository')
    const hosts = [...new Set(repositories.map((w) => w.host ?? main.name))]
    if (hosts.length > 1) {
      this.addForVar(main.name, ['workers'], `the media repositories (${repositories.map((w) => w.name).join(', ')}) run on several hosts (${hosts.join(', ')}); each would keep its own media store`, 'place every media_repository worker on one host')
    }
    const store = mediaStoreHost(main)
    const entry = this.hosts.find((h) => h.name === main.name)
    if (store !== main.name && entry && main.roles.includes('backup')) {
      this.addForRole(entry, 'backup', `the scheduled backup runs on ${main.name}, but the media store is on ${store} (its media_repository worker): the timer would back up no media`, `take backups with provision backup from the controller (it reads the media from ${store}), or keep the media_repository worker on ${main.name}`)
    }
  }

  /** Every host of a spread homeserver reads the same secrets and signing key: none may be generated on one host. */
  private checkSharedAcrossHosts(main: HostSpec, others: string[]): void {
    const v = main.vars
    const where = `the workers on ${others.join(', ')} read it too, and a value generated on ${main.name} cannot be read there`
    const shared: [string[], SecretValue | undefined][] = [
      [['postgres', 'password'], v.postgres.password],
      [['synapse', 'macaroonSecret'], v.synapse.macaroonSecret],
      [['synapse', 'formSecret'], v.synapse.formSecret],
      [['synapse', 'registrationSharedSecret'], v.synapse.registrationSharedSecret],
      [['workers', 'replicationSecret'], v.workers.replicationSecret],
    ]
    for (const [sub, value] of shared) {
      if (value?.kind === 'generate') this.addForVar(main.name, sub, `${sub.join('.')} is generated (the default or { generate: true }), but ${where}`, `set ${sub.join('.')} to { env: NAME } or { file: path } in defaults.vars`)
    }
    if (v.redis.password === undefined || v.redis.password.kind === 'generate') {
      this.addForVar(main.name, ['redis', 'password'], `redis.password must be set: Redis is reached from ${others.join(', ')}, and it never listens beyond loopback without a password`, 'set redis.password to { env: NAME } or { file: path } in defaults.vars')
    }
    if (v.synapse.install !== 'pip') {
      this.addForVar(main.name, ['synapse', 'install'], `workers on other hosts install Synapse with the pip method (the package would start a main process of its own on ${others.join(', ')})`, 'set synapse.install: pip (with synapse.version or a wheelhouse)')
    }
    if (v.synapse.signingKey === undefined) {
      this.addForVar(main.name, ['synapse', 'signingKey'], `synapse.signingKey must be set: the workers on ${others.join(', ')} sign with the server's key, which Synapse would otherwise generate on ${main.name} alone`, 'copy the key (/etc/matrix-synapse/homeserver.signing.key of a running server, or one from python -m synapse._scripts.generate_signing_key) and set synapse.signingKey to { file: path } or { env: NAME }')
    }
  }

  private checkJump(host: HostEntry): void {
    const jump = host.ssh.jump
    if (jump === undefined) return
    const origin = this.sshOrigin(host.name, 'jump')!
    const external = jump.includes('@') || jump.includes(':')
    if (external) return
    if (!HOST_NAME.test(jump) || !this.names.includes(jump)) {
      const others = this.names.filter((name) => name !== host.name)
      this.add(
        origin,
        `ssh.jump "${jump}" is not a host of this inventory; ${others.length === 0 ? 'this inventory has no other hosts' : suggestion(jump, others, 'the other hosts are')}`,
        'name an inventory host, or write user@host:port for a jump host outside the inventory',
      )
      return
    }
    if (jump === host.name) {
      this.add(origin, `host ${host.name} cannot jump through itself`, 'name another inventory host, or remove ssh.jump')
      return
    }
    // Follow the chain: a loop would never connect.
    const chain = [host.name]
    let current: string | undefined = jump
    while (current !== undefined && !chain.includes(current)) {
      chain.push(current)
      const next: string | undefined = this.hosts.find((other) => other.name === current)?.ssh.jump
      current = next !== undefined && this.names.includes(next) ? next : undefined
    }
    if (current !== undefined && current === host.name) {
      this.add(origin, `ssh.jump hosts form a loop: ${[...chain, current].join(' -> ')}`, 'make one host of the chain connect directly')
    }
  }

  // -- typed values ----------------------------------------------------------------------------

  private controllerPath(path: string | undefined): string | undefined {
    return path === undefined ? undefined : resolveControllerPath(path, this.baseDir, this.env)
  }

  private async secret(path: Path | undefined, ref: SecretRef | undefined, generatedName: string | undefined): Promise<SecretValue | undefined> {
    if (ref === undefined) return undefined
    const key = path ? JSON.stringify(path) : JSON.stringify(ref)
    let pending = this.secretCache.get(key)
    if (!pending) {
      pending = resolveSecretRef(ref, generatedName, this.secretContext).then((result) => {
        if (result.ok) return { value: result.value }
        if (path) this.add(path, result.message, result.hint)
        return {}
      })
      this.secretCache.set(key, pending)
    }
    return (await pending).value
  }

  private async varSecret(host: HostEntry, sub: readonly string[], name: string, byDefault: boolean): Promise<SecretValue | undefined> {
    const ref = valueAt(host.vars, sub).value as SecretRef | undefined
    if (ref === undefined) return byDefault ? { kind: 'generate', name } : undefined
    return this.secret(this.varsOrigin(host.name, sub), ref, name)
  }

  private async settings(host: HostEntry): Promise<MatrixSettings> {
    const v = host.vars
    const serverName = v.serverName ?? ''
    const serverHost = serverName.replace(/:\d+$/, '')
    const publicHost = v.publicHost ?? `matrix.${serverHost}`
    const httpsPort = v.apache?.httpsPort ?? VARS_DEFAULTS.apache.httpsPort
    const apt = v.aptRepository ?? {}
    const customKeyring = apt.keyringUrl !== undefined || apt.keyringFile !== undefined
    const secrets = new Map<string, SecretValue | undefined>()
    for (const secret of VAR_SECRETS) {
      secrets.set(secret.name, await this.varSecret(host, secret.path, secret.name, secret.generateByDefault))
    }
    const must = (name: string): SecretValue => secrets.get(name) ?? { kind: 'generate', name }
    const synapseHosts = this.hosts.filter((other) => NEEDS_POSTGRES.some((role) => other.roles.includes(role))).map((other) => other.name)
    const element = v.element ?? {}
    const elementVersion = element.version?.replace(/^v/, '') ?? /element-v?(\d+\.\d+\.\d+)/.exec(element.url ?? element.file ?? '')?.[1] ?? ''
    const tls = v.apache?.tls ?? {}
    return {
      serverName,
      publicHost,
      publicBaseUrl: v.publicBaseUrl ?? (httpsPort === 443 ? `https://${publicHost}` : `https://${publicHost}:${httpsPort}`),
      aptRepository: {
        url: apt.url ?? APT_REPOSITORY_DEFAULTS.url,
        keyringUrl: customKeyring ? apt.keyringUrl : APT_REPOSITORY_DEFAULTS.keyringUrl,
        keyringFile: this.controllerPath(apt.keyringFile),
        fingerprint: apt.fingerprint?.replace(/\s+/g, '').toUpperCase() ?? (customKeyring ? undefined : APT_REPOSITORY_DEFAULTS.fingerprint),
        suite: apt.suite,
        components: apt.components ?? [...APT_REPOSITORY_DEFAULTS.components],
      },
      postgres: {
        host: this.serviceHost(host, 'postgres').name,
        port: v.postgres?.port ?? VARS_DEFAULTS.postgres.port,
        database: v.postgres?.database ?? VARS_DEFAULTS.postgres.database,
        user: v.postgres?.user ?? VARS_DEFAULTS.postgres.user,
        password: must('postgres-password'),
        version: v.postgres?.version,
        allowFrom: v.postgres?.allowFrom ?? synapseHosts,
      },
      redis: {
        host: this.serviceHost(host, 'redis').name,
        port: v.redis?.port ?? VARS_DEFAULTS.redis.port,
        password: secrets.get('redis-password'),
      },
      synapse: {
        install: v.synapse?.install ?? VARS_DEFAULTS.synapse.install,
        version: v.synapse?.version,
        pipIndexUrl: v.synapse?.pipIndexUrl,
        wheelhouse: this.controllerPath(v.synapse?.wheelhouse),
        lockDir: this.controllerPath(v.synapse?.lockDir) ?? resolve(this.baseDir, DEFAULT_LOCK_DIR),
        listenPort: v.synapse?.listenPort ?? VARS_DEFAULTS.synapse.listenPort,
        enableRegistration: v.synapse?.enableRegistration ?? VARS_DEFAULTS.synapse.enableRegistration,
        reportStats: v.synapse?.reportStats ?? VARS_DEFAULTS.synapse.reportStats,
        cacheFactor: v.synapse?.cacheFactor ?? VARS_DEFAULTS.synapse.cacheFactor,
        federationCaFiles: (v.synapse?.federationCaFiles ?? []).map((path) => this.controllerPath(path)!),
        extraConfig: v.synapse?.extraConfig ?? {},
        signingKeyPath: v.synapse?.signingKeyPath,
        mediaStorePath: v.synapse?.mediaStorePath,
        signingKey: secrets.get('signing-key'),
        macaroonSecret: must('macaroon-secret'),
        formSecret: must('form-secret'),
        registrationSharedSecret: must('registration-shared-secret'),
        keepVenvs: v.synapse?.keepVenvs ?? VARS_DEFAULTS.synapse.keepVenvs,
        backupDir: v.synapse?.backupDir ?? VARS_DEFAULTS.synapse.backupDir,
      },
      workers: {
        enabled: host.roles.includes('workers'),
        preset: v.workers?.instances ? undefined : (v.workers?.preset ?? VARS_DEFAULTS.workers.preset),
        instances: v.workers?.instances?.map((e) => ({ ...e })),
        placement: v.workers?.placement ? { ...v.workers.placement } : undefined,
        homeserverHost: host.roles.includes('synapse') ? host.name : undefined,
        portBase: v.workers?.portBase ?? VARS_DEFAULTS.workers.portBase,
        replicationPort: v.workers?.replicationPort ?? VARS_DEFAULTS.workers.replicationPort,
        replicationSecret: must('replication-secret'),
        federationReader: {
          port: v.workers?.federationReader?.port ?? VARS_DEFAULTS.workers.federationReader.port,
          metricsPort: v.workers?.federationReader?.metricsPort ?? VARS_DEFAULTS.workers.federationReader.metricsPort,
        },
        federationSender: { metricsPort: v.workers?.federationSender?.metricsPort ?? VARS_DEFAULTS.workers.federationSender.metricsPort },
      },
      apache: {
        tls: {
          mode: tls.mode ?? VARS_DEFAULTS.apache.tls.mode,
          certificateFile: this.controllerPath(tls.certificateFile),
          keyFile: this.controllerPath(tls.keyFile),
          acmeEmail: tls.acmeEmail,
          acmeServer: tls.acmeServer,
          acmeCaFile: this.controllerPath(tls.acmeCaFile),
        },
        delegation: v.apache?.delegation ?? VARS_DEFAULTS.apache.delegation,
        httpsPort,
        maxClients: v.apache?.maxClients ?? VARS_DEFAULTS.apache.maxClients,
      },
      element: {
        enabled: host.roles.includes('element'),
        version: elementVersion,
        host: element.host ?? `element.${serverHost}`,
        url: element.url,
        file: this.controllerPath(element.file),
        sha256: element.sha256?.toLowerCase(),
        signatureFile: this.controllerPath(element.signatureFile),
        signatureUrl: element.signatureUrl,
        releaseKeyFile: this.controllerPath(element.releaseKeyFile),
      },
      monitoring: {
        enableMetrics: v.monitoring?.enableMetrics ?? VARS_DEFAULTS.monitoring.enableMetrics,
        mainMetricsPort: v.monitoring?.mainMetricsPort ?? VARS_DEFAULTS.monitoring.mainMetricsPort,
        prometheusScrapeFile: v.monitoring?.prometheusScrapeFile,
        prometheus: { ...VARS_DEFAULTS.monitoring.prometheus, ...v.monitoring?.prometheus },
      },
      backup: {
        directory: v.backup?.directory ?? VARS_DEFAULTS.backup.directory,
        keep: v.backup?.keep ?? VARS_DEFAULTS.backup.keep,
        onCalendar: v.backup?.onCalendar ?? VARS_DEFAULTS.backup.onCalendar,
        minFreeMiB: v.backup?.minFreeMiB ?? VARS_DEFAULTS.backup.minFreeMiB,
      },
    }
  }

  private async sshSettings(host: HostEntry): Promise<SshSettings> {
    const ssh = host.ssh
    const sudoRef = ssh.sudoPassword
    const sudoPassword = sudoRef === undefined ? undefined : await this.secret(this.sshOrigin(host.name, 'sudoPassword'), sudoRef, undefined)
    return {
      user: ssh.user ?? SSH_DEFAULTS.user,
      port: ssh.port ?? SSH_DEFAULTS.port,
      identityFile: this.controllerPath(ssh.identityFile),
      knownHostsFile: this.controllerPath(ssh.knownHostsFile ?? SSH_DEFAULTS.knownHostsFile)!,
      hostKeyPolicy: ssh.hostKeyPolicy ?? SSH_DEFAULTS.hostKeyPolicy,
      jump: ssh.jump,
      sudoPassword,
      connectTimeoutMs: Math.round((ssh.connectTimeout ?? SSH_DEFAULTS.connectTimeout) * 1000),
      commandTimeoutMs: Math.round((ssh.commandTimeout ?? SSH_DEFAULTS.commandTimeout) * 1000),
      keepaliveIntervalMs: Math.round((ssh.keepaliveInterval ?? SSH_DEFAULTS.keepaliveInterval) * 1000),
    }
  }

  async build(): Promise<Inventory> {
    const specs: HostSpec[] = []
    for (const host of this.hosts) {
      if (host.vars.serverName === undefined) {
        this.issues.push(
          this.locator.issueAtOffset(
            this.locator.offset(['hosts', host.name]),
            formatPath(['hosts', host.name, 'vars', 'serverName']),
            `missing required value serverName for host ${host.name}: it is set neither in defaults.vars nor in hosts.${host.name}.vars; expected a DNS name such as example.org`,
            'set defaults.vars.serverName (the part after the colon in user IDs, e.g. example.org)',
          ),
        )
      }
      this.checkRoles(host)
      this.checkServiceReferences(host)
      this.checkDatabaseNeeds(host)
      if (NEEDS_POSTGRES.some((role) => host.roles.includes(role))) this.checkSharedSecret(host, 'postgres')
      if (host.roles.includes('synapse') || host.roles.includes('workers')) {
        const redis = this.serviceHost(host, 'redis')
        if (redis.explicit || redis.candidates.length > 0) this.checkSharedSecret(host, 'redis')
      }
      this.checkPostgresVersion(host)
      this.checkTls(host)
      this.checkAptRepository(host)
      this.checkJump(host)
      this.checkWorkers(host)

      const vars = await this.settings(host)
      if (vars.synapse.signingKey?.kind === 'generate') {
        this.addForVar(host.name, ['synapse', 'signingKey'], 'synapse.signingKey cannot be { generate: true }: the key is in Synapse\'s own format (leave it unset and Synapse generates one on the synapse host)', 'use { file: path } or { env: NAME }, or remove synapse.signingKey')
      }
      await this.synapseLock(host, vars)
      if (host.vars.serverName !== undefined) this.checkElement(host, vars)
      specs.push({
        name: host.name,
        address: host.raw.address,
        privateAddress: host.raw.privateAddress ?? host.raw.address,
        ssh: await this.sshSettings(host),
        roles: [...host.roles].sort((a, b) => ROLES.indexOf(a) - ROLES.indexOf(b)).filter((role, index, all) => all.indexOf(role) === index),
        vars,
      })
    }
    const origins = this.placeWorkers(specs)
    this.hosts.forEach((host, i) => this.checkPorts(host, specs[i]!.vars, origins.get(host.name) ?? host))
    if (this.issues.length > 0) throw new InventoryError(this.issues)
    return { file: this.file, hosts: specs }
  }
}
