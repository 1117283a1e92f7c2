import { createReadStream } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import { performance } from 'node:perf_hooks'
import type { Readable } from 'node:stream'
import { StringDecoder } from 'node:string_decoder'
import { NodeSSH, type Config } from 'node-ssh'
import type { ClientChannel } from 'ssh2'
import type { SshHost } from './settings.js'
import { isSecret, LineMasker, maskSecrets, type Secret } from '../core/secret.js'
import { ensureSuccess, type CommandResult, type Connection, type FileWrite, type RemoteProcess, type RunOptions } from './connection.js'
import { resolveRoute, type Endpoint, type InventoryDefaults } from './endpoint.js'
import { ConnectError, HostKeyError } from './errors.js'
import { checkHostKey } from './host-key.js'
import { appendKnownHost, hostKeyAlgorithmOrder, knownHostName, lookupHostKeys, readKnownHosts } from './known-hosts.js'
import { atomicWriteScript, atomicWritesScript, extractTarScript, octalMode, PID_MARKER, remoteCommand, type Privilege } from './remote-command.js'
import { Semaphore } from '../core/semaphore.js'
import type { ShellCommand } from '../core/shell.js'
import { loadSshConfig } from './ssh-config.js'
import { tarStream } from './tar.js'

export type SshLogEvent = {
  /** Inventory name of the host. */
  host: string
  /** The command with secrets masked (sudo and timeout wrappers left out). */
  command?: string
  code?: number | null
  durationMs?: number
  msg: string
}

export type SshOutputEvent = {
  host: string
  /** As displayed in results: secrets masked. */
  command: string
  stream: 'stdout' | 'stderr'
  /** Whole lines of output (each ending in a newline) with known secret values masked. */
  chunk: string
}

/** Options of putFile/putDirectory (the Connection contract's, plus a deadline). */
export interface PutOptions {
  owner?: string
  group?: string
  mode?: number
  /** Deadline for the whole transfer; defaults to the host's ssh.commandTimeoutMs. */
  timeoutMs?: number
}

export interface ConnectOptions {
  /** Every connect, command (with duration and exit code), and connection loss. */
  log?: (event: SshLogEvent) => void
  /** Live output of every command, masked, with the command it belongs to (for --verbose). */
  onVerbose?: (event: SshOutputEvent) => void
  /** Live output of every command, whole lines masked (a secret split across chunks is still found): the simple form of onVerbose. */
  onOutput?: (host: string, chunk: string, stream: 'stdout' | 'stderr') => void
  /** Password for sudo when the login user has no NOPASSWD rule. Sent on stdin, never on a command line. */
  sudoPassword?: string | Secret
  /** ssh_config file for host aliases; default ~/.ssh/config; false to ignore it. */
  sshConfigFile?: string | false
  /** The inventory's defaults, so ~/.ssh/config values fill exactly the settings the inventory left unset. */
  inventoryDefaults?: InventoryDefaults
  /** Look up inventory hosts by name, for `ssh.jump: <inventory host>`. */
  resolveHost?: (name: string) => SshHost | undefined
  /** Concurrent command channels per connection; default 8 (OpenSSH's MaxSessions is 10). */
  maxChannels?: number
  /** Long-lived processes (spawn) per connection, on top of maxChannels; default 2. */
  maxSpawned?: number
}

/** How long after asking a timed-out command to stop we stop waiting for its channel to close. */
const KILL_GRACE_MS = 3_000
/** Attempts to open a channel the server refused (25 ms doubling to 1 s: about 8 s in all). */
const OPEN_RETRIES = 12

interface ExecRequest {
  /** The command as the caller wrote it (run under sh -c as root). */
  command: string
  /** What results and logs show. */
  display: string
  stdin?: string | Buffer | Readable
  timeoutMs?: number
  onOutput?: RunOptions['onOutput']
  secretOutput?: boolean
  stdoutTo?: RunOptions['stdoutTo']
}

/** A FileWrite as bytes plus its script parameters and the line the log shows (never the content). */
function prepareWrite(file: FileWrite) {
  const secret = isSecret(file.content)
  const content = isSecret(file.content) ? Buffer.from(file.content.reveal(), 'utf8') : typeof file.content === 'string' ? Buffer.from(file.content, 'utf8') : file.content
  const owner = file.owner ?? 'root'
  const group = file.group ?? 'root'
  const mode = file.mode ?? (secret ? 0o600 : 0o644)
  const display = `write ${file.path} (${owner}:${group} ${octalMode(mode)}, ${content.length} bytes${secret ? ', secret' : ''})`
  return { path: file.path, owner, group, mode, size: content.length, content, display }
}

function appendNote(text: string, note: string): string {
  return text === '' || text.endsWith('\n') ? `${text}${note}\n` : `${text}\n${note}\n`
}

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

  run(command: ShellCommand, options: RunOptions = {}): Promise<CommandResult> {
    const request: ExecRequest = { command: command.text, display: maskSecrets(command.text) }
    if (options.stdin !== undefined) request.stdin = options.stdin
    if (options.timeoutMs !== undefined) request.timeoutMs = options.timeoutMs
    if (options.onOutput !== undefined) request.onOutput = options.onOutput
    if (options.secretOutput) request.secretOutput = true
    if (options.stdoutTo !== undefined) request.stdoutTo = options.stdoutTo
    return this.#exec(request)
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
    const started = performance.now()
    const wire = remoteCommand(request.command, this.privilege, timeoutMs > 0 ? timeoutMs : undefined)
    return new Promise<CommandResult>((resolve) => {
      let stdout = ''
      let stderr = ''
      let code: number | null = null
      let signal: string | null = null
      let timedOut = false
      let done = false
      let channel: ClientChannel | undefined
      let deadline: NodeJS.Timeout | undefined
      let grace: NodeJS.Timeout | undefined
      const outDecoder = new StringDecoder('utf8')
      const errDecoder = new StringDecoder('utf8')
      // Timed root commands report their pid first (sshd will not signal root sessions); see remoteCommand.
      let pidHeader: Buffer | undefined = this.privilege === 'root' && timeoutMs > 0 ? Buffer.alloc(0) : undefined
      let remotePid: number | undefined
      const stdinStream = typeof request.stdin === 'object' && !Buffer.isBuffer(request.stdin) ? request.stdin : undefined

      // The live echo (--verbose) gets whole lines, masked: a chunk may end inside a secret.
      const echoes = !request.secretOutput && (this.#options.onOutput !== undefined || this.#options.onVerbose !== undefined)
      const echo = (stream: 'stdout' | 'stderr') =>
        new LineMasker((line) => {
          try {
            this.#options.onOutput?.(this.host, line, stream)
            this.#options.onVerbose?.({ host: this.host, command: display, stream, chunk: line })
          } catch {
            // Output listeners must not break the command.
          }
        })
      const echoOf = echoes ? { stdout: echo('stdout'), stderr: echo('stderr') } : undefined
      const output = (text: string, stream: 'stdout' | 'stderr') => {
        if (text === '') return
        if (stream === 'stdout') stdout += text
        else stderr += text
        try {
          request.onOutput?.(text, stream)
        } catch {
          // Output listeners must not break the command.
        }
        echoOf?.[stream].push(text)
      }

      const finish = (note?: string) => {
        if (done) return
        done = true
        clearTimeout(deadline)
        clearTimeout(grace)
        this.#pending.delete(abort)
        output(outDecoder.end(), 'stdout')
        output(errDecoder.end(), 'stderr')
        echoOf?.stdout.flush()
        echoOf?.stderr.flush()
        if (note) stderr = appendNote(stderr, note)
        // A command we killed has no exit code of its own (the host-side wrapper may report 124 or 143).
        if (timedOut) code = null
        stdinStream?.unpipe()
        stdinStream?.destroy()
        release()
        const result: CommandResult = {
          command: display,
          code,
          signal,
          stdout,
          stderr,
          durationMs: Math.round(performance.now() - started),
          timedOut,
        }
        this.#log({
          command: display,
          code,
          durationMs: result.durationMs,
          msg: timedOut ? 'command timed out' : code === null ? `command cut off${note ? `: ${note}` : ''}` : 'command finished',
        })
        resolve(result)
      }

      const abort = (reason: string) => {
        code = null
        finish(reason)
        try {
          channel?.close()
        } catch {
          // The channel may already be gone with the connection.
        }
      }
      this.#pending.add(abort)

      if (timeoutMs > 0) {
        deadline = setTimeout(() => {
          timedOut = true
          try {
            // TERM reaches the host-side `timeout` (directly, or relayed by sudo), which kills the command's process group.
            if (channel) signalChannel(channel, 'TERM')
            if (remotePid !== undefined) this.#killRemote(remotePid)
            channel?.close()
          } catch {
            // Closing a channel on a dead connection throws; the grace timer still ends the wait.
          }
          grace = setTimeout(() => finish(`timed out after ${timeoutMs} ms`), KILL_GRACE_MS)
        }, timeoutMs)
      }

      this.#openSession(wire, () => done, (error, ch) => {
        if (error) {
          finish(`could not open an SSH channel on ${this.host}: ${error.message}`)
          return
        }
        if (done) {
          ch.close()
          return
        }
        channel = ch
        if (request.stdoutTo) {
          const sink = request.stdoutTo
          sink.once('error', (err: Error) => {
            stderr = appendNote(stderr, `writing the output failed: ${err.message}`)
            ch.close()
          })
          ch.pipe(sink, { end: false })
        } else ch.on('data', (chunk: Buffer) => output(outDecoder.write(chunk), 'stdout'))
        ch.stderr.on('data', (chunk: Buffer) => {
          if (pidHeader !== undefined) {
            // The first stderr line of a timed root command is its pid, for us only.
            pidHeader = Buffer.concat([pidHeader, chunk])
            const newline = pidHeader.indexOf(0x0a)
            if (newline < 0 && pidHeader.length < 64) return
            const line = pidHeader.subarray(0, Math.max(newline, 0)).toString('latin1')
            const rest = newline < 0 ? pidHeader : pidHeader.subarray(newline + 1)
            pidHeader = undefined
            if (line.startsWith(PID_MARKER)) remotePid = Number(line.slice(PID_MARKER.length)) || undefined
            if (remotePid === undefined) output(errDecoder.write(Buffer.concat([Buffer.from(line), newline < 0 ? Buffer.alloc(0) : Buffer.from('\n'), rest])), 'stderr')
            else output(errDecoder.write(rest), 'stderr')
            return
          }
          output(errDecoder.write(chunk), 'stderr')
        })
        ch.on('exit', (exitCode: number | null, exitSignal?: string) => {
          if (typeof exitCode === 'number') code = exitCode
          else signal = exitSignal ?? null
        })
        ch.on('error', (err: Error) => {
          stderr = appendNote(stderr, `SSH channel error: ${err.message}`)
        })
        ch.on('close', () => {
          if (timedOut) finish(`timed out after ${timeoutMs} ms`)
          else if (code === null && signal === null) finish(this.#lostReason ?? 'the SSH channel closed without an exit status')
          else finish()
        })
        if (this.privilege === 'sudo-password') ch.write(`${this.#sudoPassword}\n`)
        if (stdinStream) {
          stdinStream.on('error', (err: Error) => {
            stderr = appendNote(stderr, `reading local input failed: ${err.message}`)
            ch.close()
          })
          stdinStream.pipe(ch)
        } else if (request.stdin !== undefined) {
          ch.end(request.stdin)
        } else {
          ch.end()
        }
      })
    })
  }

  /**
   * Open an exec channel, retrying when the server refuses it: sshd frees a session slot only some
   * time after the channel is closed on both sides, so a burst of short commands can briefly find
   * all MaxSessions slots taken even below our own limit. Errors are passed to `callback`, never thrown.
   */
  #openSession(wire: string, cancelled: () => boolean, callback: (error: Error | undefined, channel: ClientChannel) => void, attempt = 0): void {
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
    const w = prepareWrite(file)
    const result = await this.#exec({ command: atomicWriteScript(w).text, display: w.display, stdin: w.content })
    ensureSuccess(this.host, result, `writing ${file.path}`)
  }

  async writeFiles(files: readonly FileWrite[]): Promise<void> {
    if (files.length <= 1) return files.length ? this.writeFile(files[0]!) : undefined
    const ws = files.map(prepareWrite)
    const display = `write ${ws.length} files: ${ws.map((w) => w.display.replace(/^write /, '')).join('; ')}`
    const result = await this.#exec({ command: atomicWritesScript(ws).text, display, stdin: Buffer.concat(ws.map((w) => w.content)) })
    ensureSuccess(this.host, result, `writing ${files.map((f) => f.path).join(', ')}`)
  }

  async putFile(localPath: string, remotePath: string, options: PutOptions = {}): Promise<void> {
    const size = (await stat(localPath)).size
    const owner = options.owner ?? 'root'
    const group = options.group ?? 'root'
    const mode = options.mode ?? 0o644
    const script = atomicWriteScript({ path: remotePath, owner, group, mode, size })
    const display = `upload ${localPath} -> ${remotePath} (${owner}:${group} ${octalMode(mode)}, ${size} bytes)`
    const stdin = createReadStream(localPath, { highWaterMark: 256 * 1024 })
    const request: ExecRequest = { command: script.text, display, stdin }
    if (options.timeoutMs !== undefined) request.timeoutMs = options.timeoutMs
    const result = await this.#exec(request)
    ensureSuccess(this.host, result, `uploading ${localPath} to ${remotePath}`)
  }

  async putDirectory(localDir: string, remoteDir: string, options: PutOptions = {}): Promise<void> {
    if (!(await stat(localDir)).isDirectory()) throw new Error(`${localDir} is not a directory`)
    const owner = options.owner ?? 'root'
    const group = options.group ?? 'root'
    // Directories get an x wherever the file mode has an r.
    const dirMode = options.mode === undefined ? 0o755 : options.mode | ((options.mode & 0o444) >> 2)
    const script = extractTarScript({ dir: remoteDir, owner, group, dirMode })
    const tarOptions = options.mode === undefined ? { owner, group, dirMode } : { owner, group, dirMode, fileMode: options.mode }
    const display = `upload directory ${localDir} -> ${remoteDir} (${owner}:${group}${options.mode === undefined ? '' : ` ${octalMode(options.mode)}`})`
    const request: ExecRequest = { command: script.text, display, stdin: tarStream(localDir, tarOptions) }
    if (options.timeoutMs !== undefined) request.timeoutMs = options.timeoutMs
    const result = await this.#exec(request)
    ensureSuccess(this.host, result, `uploading ${localDir} to ${remoteDir}`)
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
    this.#openSession(wire, () => child.ended, (error, ch) => {
      if (error) return child.abort(`could not open an SSH channel on ${this.host}: ${error.message}`)
      if (this.privilege === 'sudo-password') ch.write(`${this.#sudoPassword}\n`)
      if (options.stdin !== undefined) ch.write(options.stdin)
      child.attach(ch)
    })
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

/**
 * Send a signal to the remote command (sshd does killpg on the session as the login user). ssh2's
 * channel.signal() sends nothing once our side has sent EOF (after stdin is written), which is when
 * we need it, so this goes one level down when the channel is still open for requests.
 */
function signalChannel(channel: ClientChannel, name: string): void {
  const internal = channel as unknown as {
    outgoing?: { id?: number; state?: string }
    _client?: { _protocol?: { signal?: (id: number, signal: string) => void } }
  }
  const state = internal.outgoing?.state
  const id = internal.outgoing?.id
  const protocol = internal._client?._protocol
  if ((state === 'open' || state === 'eof') && id !== undefined && typeof protocol?.signal === 'function') protocol.signal(id, name)
  else channel.signal(name)
}

/** A long-lived command whose lifetime is the connection's (e.g. a host lock held with flock). */
export class SpawnedProcess implements RemoteProcess {
  readonly exited: Promise<CommandResult>
  onDone: ((result: CommandResult) => void) | undefined
  started = performance.now()
  #resolve!: (result: CommandResult) => void
  #channel: ClientChannel | undefined
  #queued: (string | null)[] = []
  #stdout = ''
  #stderr = ''
  #code: number | null = null
  #signal: string | null = null
  #result: CommandResult | undefined
  #watchers = new Set<() => void>()

  get ended(): boolean {
    return this.#result !== undefined
  }

  readonly #display: string
  readonly #out = new StringDecoder('utf8')
  readonly #err = new StringDecoder('utf8')

  constructor(display: string) {
    this.#display = display
    this.exited = new Promise((resolve) => (this.#resolve = resolve))
  }

  attach(channel: ClientChannel): void {
    if (this.#result) {
      channel.close()
      return
    }
    this.#channel = channel
    channel.on('data', (chunk: Buffer) => this.#output(this.#out.write(chunk), 'stdout'))
    channel.stderr.on('data', (chunk: Buffer) => this.#output(this.#err.write(chunk), 'stderr'))
    channel.on('exit', (code: number | null, signal?: string) => {
      if (typeof code === 'number') this.#code = code
      else this.#signal = signal ?? null
    })
    channel.on('error', () => undefined)
    channel.on('close', () => this.#finish(this.#code === null && this.#signal === null ? 'the SSH channel closed without an exit status' : undefined))
    for (const item of this.#queued) {
      if (item === null) channel.end()
      else channel.write(item)
    }
    this.#queued = []
  }

  #output(text: string, stream: 'stdout' | 'stderr'): void {
    if (text === '') return
    if (stream === 'stdout') this.#stdout += text
    else this.#stderr += text
    for (const watcher of [...this.#watchers]) watcher()
  }

  #finish(note?: string): void {
    if (this.#result) return
    this.#stdout += this.#out.end()
    this.#stderr += this.#err.end()
    if (note) this.#stderr = appendNote(this.#stderr, note)
    this.#result = {
      command: this.#display,
      code: this.#code,
      signal: this.#signal,
      stdout: this.#stdout,
      stderr: this.#stderr,
      durationMs: Math.round(performance.now() - this.started),
      timedOut: false,
    }
    this.onDone?.(this.#result)
    this.#resolve(this.#result)
    for (const watcher of [...this.#watchers]) watcher()
  }

  /** The connection dropped (or the channel could not open). */
  abort(reason: string): void {
    this.#code = null
    this.#finish(reason)
    try {
      this.#channel?.close()
    } catch {
      // Gone with the connection.
    }
  }

  fail(result: CommandResult): void {
    this.#result = result
    this.#resolve(result)
  }

  write(data: string): void {
    if (this.#result) return
    if (this.#channel) this.#channel.write(data)
    else this.#queued.push(data)
  }

  end(): void {
    if (this.#result) return
    if (this.#channel) this.#channel.end()
    else this.#queued.push(null)
  }

  /** Ask it to stop (TERM, relayed by sudo) and close the channel. */
  kill(): void {
    if (this.#result) return
    try {
      if (this.#channel) signalChannel(this.#channel, 'TERM')
      this.#channel?.close()
    } catch {
      // Gone with the connection.
    }
  }

  waitForOutput(re: RegExp, timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const text = this.#stdout + this.#stderr
        if (re.test(this.#stdout) || re.test(this.#stderr)) {
          cleanup()
          resolve(text)
        } else if (this.#result) {
          cleanup()
          const tail = text.trim().split('\n').slice(-8).join('\n')
          reject(new Error(`${this.#display} ended (exit code ${this.#result.code}) before printing ${re}${tail ? `:\n${tail}` : ''}`))
        }
      }
      const timer = setTimeout(() => {
        cleanup()
        reject(new Error(`${this.#display} did not print ${re} within ${timeoutMs} ms`))
      }, timeoutMs)
      const cleanup = () => {
        clearTimeout(timer)
        this.#watchers.delete(check)
      }
      this.#watchers.add(check)
      check()
    })
  }
}

// ---------------------------------------------------------------------------------------------
// Connecting

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
            log(`accept-new: added ${verdict.keyType} key of ${knownHostName(endpoint.address, endpoint.port)} to ${endpoint.knownHostsFile}`)
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
    await ssh.connect(config)
  } catch (error) {
    ssh.dispose()
    if (refusal) throw refusal
    throw classify(endpoint, error, methods.join(', '))
  }
  // ssh2 leaves Nagle on: every small write (stdin, EOF) would wait for the host's delayed ACK (~40 ms).
  ssh.connection?.setNoDelay(true)
  log(`connected to ${endpoint.user}@${knownHostName(endpoint.address, endpoint.port)}${learned ? ' (host key learned)' : ''}`)
  return ssh
}

async function runRaw(ssh: NodeSSH, command: string, stdin?: string): Promise<{ code: number | null; stderr: string }> {
  const result = await ssh.execCommand(command, stdin === undefined ? { noTrim: true } : { noTrim: true, stdin })
  return { code: result.code, stderr: result.stderr }
}

/** How this login gets root: directly, sudo -n, or sudo -S with the password (checked now, not mid-run). */
async function findPrivilege(ssh: NodeSSH, endpoint: Endpoint, sudoPassword: string | undefined): Promise<Privilege> {
  if (endpoint.user === 'root') return 'root'
  const noPassword = await runRaw(ssh, 'sudo -n true')
  if (noPassword.code === 0) return 'sudo'
  if (noPassword.code === 127) {
    throw new ConnectError(endpoint.label, 'auth', `${endpoint.user}@${endpoint.address} is not root and sudo is not installed: log in as root (ssh.user: root) or install sudo.`)
  }
  if (sudoPassword === undefined) {
    throw new ConnectError(
      endpoint.label,
      'auth',
      `${endpoint.user} on ${endpoint.label} cannot sudo without a password (${noPassword.stderr.trim() || `exit ${noPassword.code}`}): ` +
        `set ssh.sudoPassword, allow NOPASSWD sudo for ${endpoint.user}, or log in as root.`,
    )
  }
  const withPassword = await runRaw(ssh, `sudo -k -S -p '' -- true`, `${sudoPassword}\n`)
  if (withPassword.code === 0) return 'sudo-password'
  throw new ConnectError(
    endpoint.label,
    'auth',
    `sudo refused the password for ${endpoint.user} on ${endpoint.label} (${maskSecrets(withPassword.stderr.trim()) || `exit ${withPassword.code}`}): check ssh.sudoPassword.`,
  )
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
          sock = (await prev.forwardOut('127.0.0.1', 0, endpoint.address, endpoint.port)) as unknown as NodeJS.ReadableStream
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
    const sudoPassword = options.sudoPassword === undefined ? undefined : isSecret(options.sudoPassword) ? options.sudoPassword.reveal() : options.sudoPassword
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
