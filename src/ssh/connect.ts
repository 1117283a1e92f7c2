import { readFile } from 'node:fs/promises'
import { NodeSSH, type Config } from 'node-ssh'
import { isSecret } from '../core/secret.js'
import type { ConnectOptions } from './connect-options.js'
import { resolveRoute, type Endpoint } from './endpoint.js'
import { ConnectError, HostKeyError } from './errors.js'
import { checkHostKey } from './host-key.js'
import { appendKnownHost, hostKeyAlgorithmOrder, knownHostName, lookupHostKeys, readKnownHosts } from './known-hosts.js'
import { findPrivilege } from './privilege.js'
import type { SshHost } from './settings.js'
import { loadSshConfig } from './ssh-config.js'
import { SshConnection } from './ssh-connection.js'

function classify(endpoint: Endpoint, error: unknown, auth: string): ConnectError {
  const err = error as Error & { level?: string; code?: string }
  const where = `${endpoint.user}@${knownHostName(endpoint.address, endpoint.port)} (${endpoint.label})`
  const text = err?.message ?? String(error)
  if (err?.level === 'client-authentication' || /authentication methods failed/i.test(text)) {
    return new ConnectError(
      endpoint.label,
      'auth',
      `${where} refused our credentials (${auth}): check that the public key is in ~${endpoint.user}/.ssh/authorized_keys ` +
        `on the host, and ssh.user / ssh.identityFile in the inventory (or the keys loaded in ssh-agent).`,
      { cause: error },
    )
  }
  if (/privateKey|passphrase|Encrypted private/i.test(text)) {
    return new ConnectError(
      endpoint.label,
      'auth',
      `cannot use the identity file ${endpoint.identityFile} for ${where}: ${text}. ` +
        `A passphrase-protected key must be loaded into ssh-agent (ssh-add) and ssh.identityFile left unset.`,
      { cause: error },
    )
  }
  if (err?.level === 'client-timeout' || err?.code === 'ETIMEDOUT' || /timed out/i.test(text)) {
    return new ConnectError(
      endpoint.label,
      'timeout',
      `no SSH handshake with ${where} within ${endpoint.connectTimeoutMs} ms: check the address and port, firewalls, and that sshd runs ` +
        `(raise ssh.connectTimeoutMs for slow links).`,
      { cause: error },
    )
  }
  const code = err?.code
  let advice: string
  if (code === 'ECONNREFUSED') advice = `nothing accepts connections on port ${endpoint.port}: is sshd running, and is ssh.port right?`
  else if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || err?.level === 'client-dns')
    advice = `the name ${endpoint.address} does not resolve: check the address (or the alias's HostName in ~/.ssh/config).`
  else if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') advice = `no route to ${endpoint.address}: check the address and the network.`
  else if (/No response from server/i.test(text) || code === 'ECONNRESET')
    advice = `the server closed the connection during the handshake: is it really sshd on port ${endpoint.port}? (sshd MaxStartups, fail2ban or a firewall can do this too)`
  else advice = 'check the address, port and network.'
  return new ConnectError(endpoint.label, 'unreachable', `cannot connect to ${where}: ${text}. ${advice}`, { cause: error })
}

interface HopInput {
  endpoint: Endpoint
  /** A forwarded channel through the previous hop, for jump hosts. */
  sock?: NodeJS.ReadableStream
  log: (msg: string) => void
}

/** Open one hop with its host key verified against its known_hosts file before any authentication. */
async function openHop({ endpoint, sock, log }: HopInput): Promise<NodeSSH> {
  const knownHosts = await readKnownHosts(endpoint.knownHostsFile)
  for (const bad of knownHosts.invalid) log(`${endpoint.knownHostsFile}:${bad.line}: ignored (${bad.reason})`)
  const { known } = lookupHostKeys(knownHosts.entries, endpoint.address, endpoint.port)
  let refusal: HostKeyError | undefined
  let learned = false

  const config: Config = {
    port: endpoint.port,
    username: endpoint.user,
    readyTimeout: endpoint.connectTimeoutMs,
    keepaliveInterval: endpoint.keepaliveIntervalMs,
    keepaliveCountMax: 3,
    algorithms: { serverHostKey: hostKeyAlgorithmOrder(known.map((e) => e.keyType)) as never },
    hostVerifier: (key: Buffer, verify: (valid: boolean) => void) => {
      const verdict = checkHostKey({
        entries: knownHosts.entries,
        address: endpoint.address,
        port: endpoint.port,
        key,
        policy: endpoint.hostKeyPolicy,
        file: endpoint.knownHostsFile,
      })
      if (!verdict.accept) {
        refusal = new HostKeyError(endpoint.label, verdict.reason, verdict.fingerprint, verdict.message)
        verify(false)
      } else if (verdict.learn) {
        appendKnownHost(endpoint.knownHostsFile, endpoint.address, endpoint.port, verdict.keyType, verdict.keyBase64).then(
          () => {
            learned = true
            log(
              `accept-new: added ${verdict.keyType} key of ${knownHostName(endpoint.address, endpoint.port)} to ${endpoint.knownHostsFile}`,
            )
            verify(true)
          },
          (error: Error) => {
            refusal = new HostKeyError(
              endpoint.label,
              'unknown',
              '',
              `cannot add the host key of ${knownHostName(endpoint.address, endpoint.port)} to ${endpoint.knownHostsFile}: ${error.message}`,
            )
            verify(false)
          },
        )
      } else {
        verify(true)
      }
    },
  }
  if (sock) config.sock = sock as Config['sock']
  else config.host = endpoint.address

  const methods: string[] = []
  if (endpoint.identityFile !== undefined) {
    try {
      config.privateKey = await readFile(endpoint.identityFile, 'utf8')
      methods.push(`key ${endpoint.identityFile}`)
    } catch (error) {
      throw new ConnectError(endpoint.label, 'auth', `cannot read the identity file ${endpoint.identityFile}: ${(error as Error).message}`)
    }
  }
  if (process.env.SSH_AUTH_SOCK) {
    config.agent = process.env.SSH_AUTH_SOCK
    methods.push('ssh-agent')
  }
  if (methods.length === 0) {
    throw new ConnectError(
      endpoint.label,
      'auth',
      `no credentials for ${endpoint.user}@${endpoint.address}: set ssh.identityFile in the inventory, or start ssh-agent (SSH_AUTH_SOCK) with the key loaded.`,
    )
  }

  const ssh = new NodeSSH()
  try {
    const connecting = ssh.connect(config)
    // ssh2 leaves Nagle on. During the handshake, a small packet that follows another (SERVICE_REQUEST after NEWKEYS)
    // waits for the host's delayed ACK, ~40 ms per connection: off from the socket's first byte. node-ssh creates its
    // client before its first await (the key is read already); should that change, it is switched off below instead.
    const client = ssh.connection
    client?.once('connect', () => client.setNoDelay(true))
    await connecting
  } catch (error) {
    ssh.dispose()
    if (refusal) throw refusal
    throw classify(endpoint, error, methods.join(', '))
  }
  // Every later small write (stdin, EOF) would wait for the host's delayed ACK too.
  ssh.connection?.setNoDelay(true)
  log(`connected to ${endpoint.user}@${knownHostName(endpoint.address, endpoint.port)}${learned ? ' (host key learned)' : ''}`)
  return ssh
}

/**
 * Connect to a host: ~/.ssh/config alias resolution, jump hosts (each hop's key verified), host-key
 * verification against known_hosts, key or agent authentication, then a check of how to become root.
 * Fails with ConnectError (kind unreachable | timeout | auth | host-key) whose message says what to do.
 */
export async function connect(host: SshHost, options: ConnectOptions = {}): Promise<SshConnection> {
  const sshConfig = options.sshConfigFile === false ? [] : await loadSshConfig(options.sshConfigFile)
  const routeOptions: Parameters<typeof resolveRoute>[1] = { sshConfig }
  if (options.inventoryDefaults) routeOptions.defaults = options.inventoryDefaults
  if (options.resolveHost) routeOptions.resolveHost = options.resolveHost
  const { hops, target } = resolveRoute(host, routeOptions)
  const log = (msg: string) => {
    try {
      options.log?.({ host: host.name, msg })
    } catch {
      // ignore logger failures
    }
  }

  const opened: NodeSSH[] = []
  const closeOpened = () => {
    for (const ssh of opened.reverse()) ssh.dispose()
  }
  try {
    let previous: NodeSSH | undefined
    for (const endpoint of [...hops, target]) {
      let sock: NodeJS.ReadableStream | undefined
      if (previous) {
        const prev = previous
        try {
          sock = await prev.forwardOut('127.0.0.1', 0, endpoint.address, endpoint.port)
        } catch (error) {
          const via = hops[opened.length - 1]?.label ?? 'the jump host'
          throw new ConnectError(
            endpoint.label,
            'unreachable',
            `jump host ${via} cannot reach ${knownHostName(endpoint.address, endpoint.port)}: ${(error as Error).message}. ` +
              `The address must be one the jump host can reach (check the address, or HostName in ~/.ssh/config).`,
            { cause: error },
          )
        }
      }
      const input: HopInput = { endpoint, log }
      if (sock) input.sock = sock
      const ssh = await openHop(input)
      // Until SshConnection watches it, a late error must not crash the process.
      ssh.connection?.on('error', () => undefined)
      opened.push(ssh)
      previous = ssh
    }
    const ssh = opened[opened.length - 1]!
    const sudoPassword =
      options.sudoPassword === undefined ? undefined : isSecret(options.sudoPassword) ? options.sudoPassword.reveal() : options.sudoPassword
    const privilege = await findPrivilege(ssh, target, sudoPassword)
    return new SshConnection({
      host,
      endpoint: target,
      hops,
      ssh,
      hopConnections: opened.slice(0, -1),
      privilege,
      sudoPassword,
      options,
    })
  } catch (error) {
    closeOpened()
    throw error
  }
}
