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
import { LineCounter, parseDocument } from 'yaml'
import { registerUrlCredentials } from '../core/secret.js'
import type { SecretRef, SecretValue } from '../core/secret.js'
import type { SshSettings } from '../ssh/settings.js'
import {
  checkAptRepository,
  checkDatabaseNeeds,
  checkElement,
  checkJump,
  checkAptMethod,
  checkPorts,
  checkPostgresVersion,
  checkRoles,
  checkServiceReferences,
  checkSharedSecret,
  checkTls,
  checkWorkers,
} from './checks.js'
import { LoadContext, type HostEntry, type LoadOptions, NEEDS_POSTGRES } from './context.js'
import { synapseLock } from './controller-files.js'
import { formatPath, InventoryError } from './errors.js'
import { mergeVars } from './merge.js'
import { placeWorkers } from './placement.js'
import { Locator, type Path, yamlIssue } from './positions.js'
import { inventorySchema, type ParsedSsh, type ParsedVars, type RawInventory, type RawVars, sshSchema, varsSchema } from './schema.js'
import { ROLES } from './roles.js'
import { MATRIX_ORG_KEYRING } from './settings/synapse.js'
import { leavesOf, type SettingLeaf } from './schema-walk.js'
import { osReason, resolveControllerPath, resolveSecretRef, type SecretContext } from './secrets.js'
import type { HostSpec, Inventory, MatrixSettings, Resolved } from './types.js'
import { genericMessage, schemaIssue } from './zod-issues.js'

const VAR_LEAVES = leavesOf(varsSchema)
const SSH_LEAVES = leavesOf(sshSchema)

/** The places a leaf path (with `*` for every list item) names in a value: each with its parent and key, for replacing. */
function locate(
  value: unknown,
  leafPath: readonly string[],
  at: string[] = [],
): { path: string[]; parent: Record<string, unknown>; key: string }[] {
  if (value === null || typeof value !== 'object') return []
  const [head, ...rest] = leafPath
  if (head === undefined) return []
  const record = value as Record<string, unknown>
  const keys = head === '*' ? Object.keys(record) : [head]
  return keys.flatMap((key) =>
    rest.length === 0 ? [{ path: [...at, key], parent: record, key }] : locate(record[key], rest, [...at, key]),
  )
}

/**
 * Credentials in any URL of the inventory (pipIndexUrl, aptRepository.url, element.url: user:password@)
 * are secrets from here on: masked in plans, messages, logs and JSON, before validation can quote them.
 */
function registerInventoryUrlCredentials(value: unknown, path: (string | number)[]): void {
  if (typeof value === 'string') {
    if (/:\/\/[^\s/?#@]*:[^\s/?#@]*@/.test(value)) registerUrlCredentials(value, formatPath(path) || 'the inventory')
  } else if (Array.isArray(value)) value.forEach((v, i) => registerInventoryUrlCredentials(v, [...path, i]))
  else if (value !== null && typeof value === 'object')
    for (const [k, v] of Object.entries(value)) registerInventoryUrlCredentials(v, [...path, k])
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
export async function loadInventoryFromString(
  source: string,
  file: string,
  env: NodeJS.ProcessEnv = process.env,
  options: LoadOptions = {},
): Promise<Inventory> {
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
      {
        file,
        line: 1,
        col: 1,
        path: '',
        message: `cannot read the YAML: ${error instanceof Error ? error.message : String(error)}`,
        hint: 'use fewer aliases (*name)',
      },
    ])
  }
  registerInventoryUrlCredentials(data, [])

  const parsed = inventorySchema.safeParse(data, { error: genericMessage })
  if (!parsed.success) throw new InventoryError(parsed.error.issues.flatMap((issue) => schemaIssue(issue, data, locator)))

  // The file as written, not the parsed output: positions and checks must not see the defaults.
  const builder = new InventoryBuilder(data as RawInventory, file, env, locator, options)
  return builder.build()
}

// ---------------------------------------------------------------------------------------------
// Pass 3: meaning, defaults, secrets

/**
 * The parsed vars of a host, parsed once per distinct merged vars: hosts mostly share theirs (defaults.vars), and
 * each parse builds every section's defaults (~2 ms; a tenth of a ten-host run's controller time). Each caller gets
 * its own copy: resolving secrets and paths replaces values in place.
 */
class ParsedVarsCache {
  readonly #parsed = new Map<string, ParsedVars>()

  get(vars: RawVars): ParsedVars {
    const key = JSON.stringify(vars)
    let parsed = this.#parsed.get(key)
    if (!parsed) this.#parsed.set(key, (parsed = varsSchema.parse(vars)))
    return structuredClone(parsed)
  }
}

class InventoryBuilder extends LoadContext {
  private readonly baseDir: string
  private readonly parsedVars: ParsedVarsCache
  private readonly secretContext: SecretContext
  private readonly secretCache = new Map<string, Promise<{ value?: SecretValue }>>()

  constructor(
    raw: RawInventory,
    file: string,
    private readonly env: NodeJS.ProcessEnv,
    locator: Locator,
    options: LoadOptions = {},
  ) {
    const defaultsVars = raw.defaults?.vars ?? {}
    const defaultsSsh = raw.defaults?.ssh ?? {}
    const parsedVars = new ParsedVarsCache()
    const hosts = Object.entries(raw.hosts).map(([name, host]) => {
      const vars = mergeVars(defaultsVars, host.vars ?? {}) as RawVars
      return { name, raw: host, roles: host.roles, vars, parsed: parsedVars.get(vars), ssh: { ...defaultsSsh, ...(host.ssh ?? {}) } }
    })
    super(raw, hosts, file, locator, options)
    this.parsedVars = parsedVars
    this.baseDir = dirname(resolve(file))
    this.secretContext = { baseDir: this.baseDir, env, fileCache: new Map() }
  }

  private controllerPath(path: string | undefined): string | undefined {
    return path === undefined ? undefined : resolveControllerPath(path, this.baseDir, this.env)
  }

  private async secret(
    path: Path | undefined,
    ref: SecretRef | undefined,
    generatedName: string | undefined,
  ): Promise<SecretValue | undefined> {
    if (ref === undefined) return undefined
    const key = path ? JSON.stringify(path) : JSON.stringify([ref, generatedName])
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

  /**
   * The schema's output for one host with its controller paths made absolute and its secret
   * references resolved, in place (the leaves are found by walking the schema: leavesOf).
   */
  private async resolveLeaves(value: unknown, leaves: readonly SettingLeaf[], origin: (path: string[]) => Path | undefined): Promise<void> {
    for (const leaf of leaves) {
      for (const { path, parent, key } of locate(value, leaf.path)) {
        const found = parent[key]
        if (found === undefined) continue
        if (leaf.kind === 'controllerPath') parent[key] = this.controllerPath(found as string)
        else parent[key] = await this.secret(origin(path), found as SecretRef, leaf.generatedName)
      }
    }
  }

  private async settings(host: HostEntry): Promise<MatrixSettings> {
    // Parsed again: resolving replaces values in place, and the checks read host.parsed as written.
    const v = this.parsedVars.get(host.vars)
    await this.resolveLeaves(v, VAR_LEAVES, (path) => this.varsOrigin(host.name, path))
    // resolveLeaves replaced the secret references and paths of `v`: the type follows (types.ts).
    const resolved = v as unknown as Resolved<ParsedVars>
    // Derived from several fields or from the other hosts:
    const serverName = v.serverName ?? ''
    const serverHost = serverName.replace(/:\d+$/, '')
    const publicHost = v.publicHost ?? `matrix.${serverHost}`
    const httpsPort = v.apache.httpsPort
    const apt = v.aptRepository
    const customKeyring = apt.keyringUrl !== undefined || apt.keyringFile !== undefined
    const synapseHosts = this.hosts.filter((other) => NEEDS_POSTGRES.some((role) => other.roles.includes(role))).map((other) => other.name)
    const written = host.vars.element ?? {}
    return {
      ...resolved,
      serverName,
      publicHost,
      publicBaseUrl: v.publicBaseUrl ?? (httpsPort === 443 ? `https://${publicHost}` : `https://${publicHost}:${httpsPort}`),
      aptRepository: {
        ...resolved.aptRepository,
        keyringUrl: customKeyring ? apt.keyringUrl : MATRIX_ORG_KEYRING.url,
        fingerprint: apt.fingerprint ?? (customKeyring ? undefined : MATRIX_ORG_KEYRING.fingerprint),
      },
      postgres: { ...resolved.postgres, host: this.serviceHost(host, 'postgres').name, allowFrom: v.postgres.allowFrom ?? synapseHosts },
      redis: { ...resolved.redis, host: this.serviceHost(host, 'redis').name },
      workers: {
        ...resolved.workers,
        enabled: host.roles.includes('workers'),
        preset: v.workers.instances ? undefined : v.workers.preset,
        homeserverHost: host.roles.includes('synapse') ? host.name : undefined,
      },
      mas: { ...resolved.mas, enabled: this.hosts.some((other) => other.roles.includes('mas')), host: v.mas.host ?? `auth.${serverHost}` },
      element: {
        ...resolved.element,
        enabled: host.roles.includes('element'),
        version: v.element.version ?? /element-v?(\d+\.\d+\.\d+)/.exec(written.url ?? written.file ?? '')?.[1] ?? '',
        host: v.element.host ?? `element.${serverHost}`,
      },
    }
  }

  /** SshSettings (src/ssh's own type, durations in ms) from the schema's output. */
  private async sshSettings(host: HostEntry): Promise<SshSettings> {
    const ssh = sshSchema.parse(host.ssh)
    await this.resolveLeaves(ssh, SSH_LEAVES, ([key]) => this.sshOrigin(host.name, key!))
    const { connectTimeout, commandTimeout, keepaliveInterval, ...rest } = ssh as unknown as Resolved<ParsedSsh>
    const ms = (seconds: number) => Math.round(seconds * 1000)
    return {
      ...rest,
      connectTimeoutMs: ms(connectTimeout),
      commandTimeoutMs: ms(commandTimeout),
      keepaliveIntervalMs: ms(keepaliveInterval),
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
      checkRoles(this, host)
      checkServiceReferences(this, host)
      checkDatabaseNeeds(this, host)
      if (NEEDS_POSTGRES.some((role) => host.roles.includes(role))) checkSharedSecret(this, host, 'postgres')
      if (host.roles.includes('synapse') || host.roles.includes('workers')) {
        const redis = this.serviceHost(host, 'redis')
        if (redis.explicit || redis.candidates.length > 0) checkSharedSecret(this, host, 'redis')
      }
      checkPostgresVersion(this, host)
      checkTls(this, host)
      checkAptRepository(this, host)
      checkJump(this, host)
      checkWorkers(this, host)

      const vars = await this.settings(host)
      checkAptMethod(this, host, vars)
      if (vars.synapse.signingKey?.kind === 'generate') {
        this.addForVar(
          host.name,
          ['synapse', 'signingKey'],
          "synapse.signingKey cannot be { generate: true }: the key is in Synapse's own format (leave it unset and Synapse generates one on the synapse host)",
          'use { file: path } or { env: NAME }, or remove synapse.signingKey',
        )
      }
      await synapseLock(this, host, vars)
      if (host.vars.serverName !== undefined) checkElement(this, host, vars)
      specs.push({
        name: host.name,
        address: host.raw.address,
        privateAddress: host.raw.privateAddress ?? host.raw.address,
        ssh: await this.sshSettings(host),
        roles: [...host.roles]
          .sort((a, b) => ROLES.indexOf(a) - ROLES.indexOf(b))
          .filter((role, index, all) => all.indexOf(role) === index),
        vars,
      })
    }
    const origins = placeWorkers(this, specs)
    this.hosts.forEach((host, i) => checkPorts(this, host, specs[i]!.vars, origins.get(host.name) ?? host))
    if (this.issues.length > 0) throw new InventoryError(this.issues)
    return { file: this.file, hosts: specs }
  }
}
