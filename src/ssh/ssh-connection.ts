import { performance } from 'node:perf_hooks'
import type { NodeSSH } from 'node-ssh'
import type { ClientChannel } from 'ssh2'
import { maskSecrets } from '../core/secret.js'
import { Semaphore } from '../core/semaphore.js'
import type { ShellCommand } from '../core/shell.js'
import type { ConnectOptions, SshLogEvent } from './connect-options.js'
import { checked, RemoteCommandError, type CommandResult, type Connection, type FileWrite, type RunOptions } from './connection.js'
import type { Endpoint } from './endpoint.js'
import { execCommand, type ExecContext, type ExecRequest } from './exec.js'
import { remoteCommand, type Privilege } from './remote-command.js'
import type { SshHost } from './settings.js'
import { SpawnedProcess } from './spawned.js'
import { putDirectoryRequest, putFileRequest, writeRequest, writesRequest, type PutOptions } from './transfer.js'

/** Attempts to open a channel the server refused (25 ms doubling to 1 s: about 8 s in all). */
const OPEN_RETRIES = 12

/**
 * One SSH connection to one host (through jump hosts when configured). Commands run as root (sudo
 * when the login user is not root), at most `maxChannels` at once, each with a deadline. The
 * connection never throws after it is made: when it drops, every pending and later command
 * resolves with code null and says so.
 */
export class SshConnection implements Connection {
  readonly host: string
  readonly endpoint: Endpoint
  readonly hops: readonly Endpoint[]
  readonly privilege: Privilege
  readonly #ssh: NodeSSH
  readonly #hopConnections: NodeSSH[]
  readonly #options: ConnectOptions
  readonly #defaultTimeoutMs: number
  readonly #channels: Semaphore
  readonly #maxSpawned: number
  #spawned = 0
  readonly #sudoPassword: string | undefined
  /** Abort functions of commands in flight, called when the connection drops. */
  readonly #pending = new Set<(reason: string) => void>()
  #lostReason: string | undefined
  #lastError: Error | undefined
  #closing: Promise<void> | undefined
  readonly #context: ExecContext

  /** @internal use connect() */
  constructor(init: {
    host: SshHost
    endpoint: Endpoint
    hops: Endpoint[]
    ssh: NodeSSH
    hopConnections: NodeSSH[]
    privilege: Privilege
    sudoPassword: string | undefined
    options: ConnectOptions
  }) {
    this.host = init.host.name
    this.endpoint = init.endpoint
    this.hops = init.hops
    this.privilege = init.privilege
    this.#ssh = init.ssh
    this.#hopConnections = init.hopConnections
    this.#options = init.options
    this.#sudoPassword = init.sudoPassword
    this.#defaultTimeoutMs = init.host.ssh.commandTimeoutMs
    this.#channels = new Semaphore(init.options.maxChannels ?? 8)
    this.#maxSpawned = init.options.maxSpawned ?? 2
    this.#context = {
      host: this.host,
      privilege: this.privilege,
      sudoPassword: this.#sudoPassword,
      onOutput: this.#options.onOutput,
      onVerbose: this.#options.onVerbose,
      pending: this.#pending,
      lostReason: () => this.#lostReason,
      log: (event) => this.#log(event),
      openSession: (wire, cancelled, callback) => this.#openSession(wire, cancelled, callback),
      killRemote: (pid) => this.#killRemote(pid),
    }
    this.#watch(init.ssh, this.host)
    // A jump host dropping cuts the target too; its own errors must not crash the process either.
    init.hopConnections.forEach((hop, i) => this.#watch(hop, `jump host ${init.hops[i]?.label ?? i}`))
  }

  #watch(ssh: NodeSSH, what: string): void {
    const client = ssh.connection
    if (!client) return
    client.on('error', (error: Error) => {
      this.#lastError = error
      this.#log({ msg: `SSH error on ${what}: ${error.message}` })
    })
    const lost = () => this.#connectionLost(`connection to ${what} lost${this.#lastError ? `: ${this.#lastError.message}` : ''}`)
    client.on('end', lost)
    client.on('close', lost)
  }

  #connectionLost(reason: string): void {
    if (this.#lostReason !== undefined) return
    this.#lostReason = this.#closing ? `connection to ${this.host} was closed` : reason
    if (!this.#closing) this.#log({ msg: reason })
    for (const abort of [...this.#pending]) abort(this.#lostReason)
  }

  #log(event: Omit<SshLogEvent, 'host'>): void {
    try {
      this.#options.log?.({ host: this.host, ...event })
    } catch {
      // A broken logger must not break the transport.
    }
  }

  /** False once the connection (or a jump host's) dropped or was closed. */
  isAlive(): boolean {
    return this.#lostReason === undefined && this.#closing === undefined && this.#ssh.isConnected()
  }

  async run(command: ShellCommand, options: RunOptions = {}): Promise<CommandResult> {
    const request: ExecRequest = { command: command.text, display: maskSecrets(command.text) }
    if (options.stdin !== undefined) request.stdin = options.stdin
    if (options.timeoutMs !== undefined) request.timeoutMs = options.timeoutMs
    if (options.onOutput !== undefined) request.onOutput = options.onOutput
    if (options.secretOutput) request.secretOutput = true
    if (options.stdoutTo !== undefined) request.stdoutTo = options.stdoutTo
    return checked(this.host, await this.#exec(request), options)
  }

  #lostResult(display: string, reason: string): CommandResult {
    return { command: display, code: null, signal: null, stdout: '', stderr: `${reason}\n`, durationMs: 0, timedOut: false }
  }

  async #exec(request: ExecRequest): Promise<CommandResult> {
    const { display } = request
    const timeoutMs = request.timeoutMs ?? this.#defaultTimeoutMs
    const release = await this.#channels.acquire()
    const unavailable = this.#lostReason ?? (this.#closing ? `connection to ${this.host} is closed` : undefined)
    if (unavailable !== undefined) {
      release()
      if (typeof request.stdin === 'object' && 'destroy' in request.stdin) request.stdin.destroy()
      const result = this.#lostResult(display, unavailable)
      this.#log({ command: display, code: null, durationMs: 0, msg: `not run: ${unavailable}` })
      return result
    }
    return execCommand(this.#context, request, timeoutMs, release)
  }

  /**
   * Open an exec channel, retrying when the server refuses it: sshd frees a session slot only some
   * time after the channel is closed on both sides, so a burst of short commands can briefly find
   * all MaxSessions slots taken even below our own limit. Errors are passed to `callback`, never thrown.
   */
  #openSession(
    wire: string,
    cancelled: () => boolean,
    callback: (error: Error | undefined, channel: ClientChannel) => void,
    attempt = 0,
  ): void {
    const client = this.#ssh.connection
    const fail = (error: Error) => callback(error, undefined as unknown as ClientChannel)
    if (!client || this.#lostReason !== undefined) return fail(new Error(this.#lostReason ?? 'not connected'))
    try {
      client.exec(wire, (error, channel) => {
        if (!error) return callback(undefined, channel)
        const refused = /Channel open failure/i.test(error.message) && !/closed channel unexpectedly/i.test(error.message)
        if (refused && attempt < OPEN_RETRIES && !cancelled() && this.#lostReason === undefined) {
          if (attempt === 0) this.#log({ msg: `server refused a channel (${error.message}); retrying` })
          setTimeout(() => this.#openSession(wire, cancelled, callback, attempt + 1), Math.min(25 * 2 ** attempt, 1_000))
          return
        }
        fail(error)
      })
    } catch (error) {
      fail(error as Error)
    }
  }

  /** TERM a root command's `timeout` wrapper, which passes it on to the command's process group. */
  #killRemote(pid: number): void {
    try {
      // Outside the channel semaphore: every slot may be held by hung commands.
      this.#ssh.connection?.exec(`kill -TERM ${pid}`, (error, ch) => {
        if (error) return
        ch.on('error', () => undefined)
        ch.resume()
        ch.stderr.resume()
        ch.end()
      })
    } catch {
      // The connection is gone; so is the command.
    }
  }

  async writeFile(file: FileWrite): Promise<void> {
    const { request, what } = writeRequest(file)
    this.#checkedTransfer(await this.#exec(request), what)
  }

  async writeFiles(files: readonly FileWrite[]): Promise<void> {
    if (files.length <= 1) return files.length ? this.writeFile(files[0]!) : undefined
    const { request, what } = writesRequest(files)
    this.#checkedTransfer(await this.#exec(request), what)
  }

  async putFile(localPath: string, remotePath: string, options: PutOptions = {}): Promise<void> {
    const { request, what } = await putFileRequest(localPath, remotePath, options)
    this.#checkedTransfer(await this.#exec(request), what)
  }

  async putDirectory(localDir: string, remoteDir: string, options: PutOptions = {}): Promise<void> {
    const { request, what } = await putDirectoryRequest(localDir, remoteDir, options)
    this.#checkedTransfer(await this.#exec(request), what)
  }

  #checkedTransfer(result: CommandResult, what: string): void {
    if (result.code !== 0) throw new RemoteCommandError(this.host, result, what)
  }

  spawn(command: ShellCommand, options: { stdin?: string } = {}): SpawnedProcess {
    const display = maskSecrets(command.text)
    const child = new SpawnedProcess(display)
    const unavailable = this.#lostReason ?? (this.#closing ? `connection to ${this.host} is closed` : undefined)
    if (unavailable !== undefined) {
      child.fail(this.#lostResult(display, unavailable))
      return child
    }
    if (this.#spawned >= this.#maxSpawned) {
      throw new Error(`at most ${this.#maxSpawned} long-lived processes per connection (${this.host}); end one first`)
    }
    this.#spawned++
    const started = performance.now()
    const wire = remoteCommand(command.text, this.privilege)
    const onDone = (result: CommandResult) => {
      this.#spawned--
      this.#pending.delete(abort)
      this.#log({ command: display, code: result.code, durationMs: result.durationMs, msg: 'long-lived command ended' })
    }
    const abort = (reason: string) => child.abort(reason)
    this.#pending.add(abort)
    child.onDone = onDone
    child.started = started
    this.#log({ command: display, msg: 'long-lived command started' })
    this.#openSession(
      wire,
      () => child.ended,
      (error, ch) => {
        if (error) return child.abort(`could not open an SSH channel on ${this.host}: ${error.message}`)
        if (this.privilege === 'sudo-password') ch.write(`${this.#sudoPassword}\n`)
        if (options.stdin !== undefined) ch.write(options.stdin)
        child.attach(ch)
      },
    )
    return child
  }

  /** Close the connection and its jump hosts; commands still running resolve with code null. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const closed = (ssh: NodeSSH) =>
        new Promise<void>((resolve) => {
          const client = ssh.connection
          if (!client) return resolve()
          const timer = setTimeout(resolve, 2_000)
          client.once('close', () => {
            clearTimeout(timer)
            resolve()
          })
          ssh.dispose()
        })
      // The target first, then the hops from the nearest inward.
      await closed(this.#ssh)
      this.#connectionLost(`connection to ${this.host} was closed`)
      for (const hop of [...this.#hopConnections].reverse()) await closed(hop)
      this.#log({ msg: 'disconnected' })
    })()
    return this.#closing
  }
}
