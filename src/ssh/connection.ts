import type { Readable, Writable } from 'node:stream'
import { maskSecrets, type Secret } from '../core/secret.js'
import type { ShellCommand } from '../core/shell.js'

/** What a command did. `run` returns it for an exit 0; any other outcome throws it inside RemoteCommandError, unless allowFailure. */
export interface CommandResult {
  /** The command as sent, with secrets masked. */
  command: string
  /** Exit code; null when killed by a signal or when the channel closed without an exit status. */
  code: number | null
  signal: string | null
  stdout: string
  stderr: string
  durationMs: number
  timedOut: boolean
}

export interface RunOptions {
  /** Data for the command's stdin (a stream is piped, with backpressure). Secrets travel here, never on the command line. */
  stdin?: string | Buffer | Readable
  /** Kill the command after this long; the result then has timedOut = true. */
  timeoutMs?: number
  /** Live output (for --verbose and progress). */
  onOutput?: (chunk: string, stream: 'stdout' | 'stderr') => void
  /**
   * The output may hold secret values the run does not know yet (stored secrets, a sensitive file read
   * for a diff): only this call's own onOutput sees it; the connection's live echo (--verbose) does not.
   */
  secretOutput?: boolean
  /**
   * Send stdout, as bytes, into this stream instead of the result (whose stdout stays empty), with
   * backpressure: a slow writer pauses the remote command through the SSH window, so memory stays flat
   * however much comes (a database dump, a media tar). The caller ends the stream.
   */
  stdoutTo?: Writable
  /**
   * A non-zero exit, a timeout or a lost connection is data the caller reads (a probe, a check, a
   * retry): return the result instead of throwing RemoteCommandError.
   */
  allowFailure?: boolean
  /** What the command does, for the error when it fails ("pip install of the lock X"): the command text alone may say little. */
  what?: string
}

export interface FileWrite {
  path: string
  content: string | Buffer | Secret
  owner?: string
  group?: string
  /** e.g. 0o644; defaults to 0o644, or 0o600 when content is a Secret. */
  mode?: number
}

/**
 * A connection to one host. Every command runs as root: directly when the login user is root,
 * through sudo otherwise. Commands run with `sh -c`; they are built with the `sh` tagged template (shell.ts).
 */
export interface Connection {
  /** Inventory name of the host. */
  readonly host: string
  /** The result of an exit 0; otherwise throws RemoteCommandError, unless `allowFailure` (then any result). */
  run(command: ShellCommand, options?: RunOptions): Promise<CommandResult>
  /** Atomic: temp file in the same directory (0600), owner and mode set, then rename. Content on stdin. */
  writeFile(file: FileWrite): Promise<void>
  /** Many writeFile in one round trip, in order; the first failure stops the rest. */
  writeFiles(files: readonly FileWrite[]): Promise<void>
  /** Upload a local file (e.g. a wheel or tarball) atomically to a root-owned path. */
  putFile(localPath: string, remotePath: string, options?: { owner?: string; group?: string; mode?: number }): Promise<void>
  /** Send a whole controller directory as one tar stream on stdin, unpacked into remoteDir. */
  putDirectory(localDir: string, remoteDir: string, options?: { owner?: string; group?: string; mode?: number }): Promise<void>
  /** A long-lived remote command whose lifetime is the connection's (e.g. the host lock). */
  spawn(command: ShellCommand, options?: { stdin?: string }): RemoteProcess
  close(): Promise<void>
}

export interface RemoteProcess {
  write(data: string): void
  end(): void
  /**
   * Resolves with all output so far once it matches (within one line of stdout or stderr); rejects after timeoutMs or
   * when the process exits first.
   */
  waitForOutput(re: RegExp, timeoutMs: number): Promise<string>
  exited: Promise<CommandResult>
}

export class RemoteCommandError extends Error {
  readonly result: CommandResult
  readonly host: string

  constructor(host: string, result: CommandResult, what?: string) {
    const tail = (result.stderr.trim() || result.stdout.trim()).split('\n').slice(-8).join('\n')
    const status = result.timedOut
      ? 'timed out'
      : result.code === null
        ? `was cut off${result.signal ? ` by ${result.signal}` : ' (connection lost?)'}`
        : `failed with exit code ${result.code}`
    // The command is masked already; its output may still echo a secret (a path, a failed login).
    super(maskSecrets(`${what ?? 'command'} on ${host} ${status}: ${result.command}${tail ? `\n${tail}` : ''}`))
    this.name = 'RemoteCommandError'
    this.result = result
    this.host = host
  }
}

/** Connection.run's contract, for every implementation: the result of an exit 0, else RemoteCommandError unless the caller allows failure. */
export function checked(host: string, result: CommandResult, options: Pick<RunOptions, 'allowFailure' | 'what'> = {}): CommandResult {
  if (result.code !== 0 && !options.allowFailure) throw new RemoteCommandError(host, result, options.what)
  return result
}
