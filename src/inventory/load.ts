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
import { DEFAULT_LOCK_DIR } from '../synapse/lock/lock-file.js'
import type { SecretRef, SecretValue } from '../core/secret.js'
import type { SshSettings } from '../ssh/settings.js'
import { checkAptRepository, checkDatabaseNeeds, checkElement, checkJump, checkPorts, checkPostgresVersion, checkRoles, checkServiceReferences, checkSharedSecret, checkTls, checkWorkers } from './checks.js'
import { LoadContext, type HostEntry, type LoadOptions, NEEDS_POSTGRES } from './context.js'
import { synapseLock } from './controller-files.js'
import { formatPath, InventoryError } from './errors.js'
import { mergeVars } from './merge.js'
import { placeWorkers } from './placement.js'
import { Locator, type Path, yamlIssue } from './positions.js'
import { APT_REPOSITORY_DEFAULTS, inventorySchema, type RawInventory, type RawVars, SSH_DEFAULTS, VAR_SECRETS, VARS_DEFAULTS } from './schema.js'
import { osReason, resolveControllerPath, resolveSecretRef, type SecretContext } from './secrets.js'
import { type HostSpec, type Inventory, type MatrixSettings, ROLES } from './types.js'
import { genericMessage, schemaIssue, valueAt } from './zod-issues.js'

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
// Pass 3: meaning, defaults, secrets

class InventoryBuilder extends LoadContext {
  private readonly baseDir: string
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
    const hosts = Object.entries(raw.hosts).map(([name, host]) => ({
      name,
      raw: host,
      roles: host.roles,
      vars: mergeVars(defaultsVars, host.vars ?? {}) as RawVars,
      ssh: { ...defaultsSsh, ...(host.ssh ?? {}) },
    }))
    super(raw, hosts, file, locator, options)
    this.baseDir = dirname(resolve(file))
    this.secretContext = { baseDir: this.baseDir, env, fileCache: new Map() }
  }

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
      if (vars.synapse.signingKey?.kind === 'generate') {
        this.addForVar(host.name, ['synapse', 'signingKey'], 'synapse.signingKey cannot be { generate: true }: the key is in Synapse\'s own format (leave it unset and Synapse generates one on the synapse host)', 'use { file: path } or { env: NAME }, or remove synapse.signingKey')
      }
      await synapseLock(this, host, vars)
      if (host.vars.serverName !== undefined) checkElement(this, host, vars)
      specs.push({
        name: host.name,
        address: host.raw.address,
        privateAddress: host.raw.privateAddress ?? host.raw.address,
        ssh: await this.sshSettings(host),
        roles: [...host.roles].sort((a, b) => ROLES.indexOf(a) - ROLES.indexOf(b)).filter((role, index, all) => all.indexOf(role) === index),
        vars,
      })
    }
    const origins = placeWorkers(this, specs)
    this.hosts.forEach((host, i) => checkPorts(this, host, specs[i]!.vars, origins.get(host.name) ?? host))
    if (this.issues.length > 0) throw new InventoryError(this.issues)
    return { file: this.file, hosts: specs }
  }
}
