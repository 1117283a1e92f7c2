import { performance } from 'node:perf_hooks'
import type { Readable } from 'node:stream'
import { StringDecoder } from 'node:string_decoder'
import type { ClientChannel } from 'ssh2'
import { LineMasker } from '../core/secret.js'
import type { CommandResult, RunOptions } from './connection.js'
import type { ConnectOptions, SshLogEvent } from './connect-options.js'
import { PID_MARKER, remoteCommand, type Privilege } from './remote-command.js'

/** How long after asking a timed-out command to stop we stop waiting for its channel to close. */
const KILL_GRACE_MS = 3_000

export interface ExecRequest {
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

/** What one command needs of its connection (SshConnection hands itself in through this). */
export interface ExecContext {
  readonly host: string
  readonly privilege: Privilege
  readonly sudoPassword: string | undefined
  readonly onOutput: ConnectOptions['onOutput']
  readonly onVerbose: ConnectOptions['onVerbose']
  /** Abort functions of commands in flight, called when the connection drops. */
  readonly pending: Set<(reason: string) => void>
  lostReason(): string | undefined
  log(event: Omit<SshLogEvent, 'host'>): void
  openSession(wire: string, cancelled: () => boolean, callback: (error: Error | undefined, channel: ClientChannel) => void): void
  killRemote(pid: number): void
}

export function appendNote(text: string, note: string): string {
  return text === '' || text.endsWith('\n') ? `${text}${note}\n` : `${text}\n${note}\n`
}

/**
 * Send a signal to the remote command (sshd does killpg on the session as the login user). ssh2's
 * channel.signal() sends nothing once our side has sent EOF (after stdin is written), which is when
 * we need it, so this goes one level down when the channel is still open for requests.
 */
export function signalChannel(channel: ClientChannel, name: string): void {
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

/**
 * Run one command on an open connection whose channel slot the caller holds (`release` frees it):
 * output collected and echoed masked, stdin piped, a deadline that kills the remote process. Never throws:
 * a timeout, a lost connection or a refused channel resolve with code null and say so in stderr.
 */
export function execCommand(ctx: ExecContext, request: ExecRequest, timeoutMs: number, release: () => void): Promise<CommandResult> {
  const { display } = request
  const started = performance.now()
  const wire = remoteCommand(request.command, ctx.privilege, timeoutMs > 0 ? timeoutMs : undefined)
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
    let pidHeader: Buffer | undefined = ctx.privilege === 'root' && timeoutMs > 0 ? Buffer.alloc(0) : undefined
    let remotePid: number | undefined
    const stdinStream = typeof request.stdin === 'object' && !Buffer.isBuffer(request.stdin) ? request.stdin : undefined

    // The live echo (--verbose) gets whole lines, masked: a chunk may end inside a secret.
    const echoes = !request.secretOutput && (ctx.onOutput !== undefined || ctx.onVerbose !== undefined)
    const echo = (stream: 'stdout' | 'stderr') =>
      new LineMasker((line) => {
        try {
          ctx.onOutput?.(ctx.host, line, stream)
          ctx.onVerbose?.({ host: ctx.host, command: display, stream, chunk: line })
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
      ctx.pending.delete(abort)
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
      ctx.log({
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
    ctx.pending.add(abort)

    if (timeoutMs > 0) {
      deadline = setTimeout(() => {
        timedOut = true
        try {
          // TERM reaches the host-side `timeout` (directly, or relayed by sudo), which kills the command's process group.
          if (channel) signalChannel(channel, 'TERM')
          if (remotePid !== undefined) ctx.killRemote(remotePid)
          channel?.close()
        } catch {
          // Closing a channel on a dead connection throws; the grace timer still ends the wait.
        }
        grace = setTimeout(() => finish(`timed out after ${timeoutMs} ms`), KILL_GRACE_MS)
      }, timeoutMs)
    }

    ctx.openSession(
      wire,
      () => done,
      (error, ch) => {
        if (error) {
          finish(`could not open an SSH channel on ${ctx.host}: ${error.message}`)
          return
        }
        if (done) {
          ch.close()
          return
        }
        channel = ch
        if (request.stdoutTo) {
          const sink = request.stdoutTo
          // The receiver gone (error, or closed: a relay whose other end died) would leave the channel
          // paused with unread data and never 'close': unpipe, drain, close, so this command ends too.
          const cut = (note: string) => {
            if (done) return
            stderr = appendNote(stderr, note)
            ch.unpipe(sink)
            ch.resume()
            ch.close()
          }
          sink.once('error', (err: Error) => cut(`writing the output failed: ${err.message}`))
          sink.once('close', () => cut('the output stream was closed'))
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
            if (remotePid === undefined)
              output(
                errDecoder.write(Buffer.concat([Buffer.from(line), newline < 0 ? Buffer.alloc(0) : Buffer.from('\n'), rest])),
                'stderr',
              )
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
          else if (code === null && signal === null) finish(ctx.lostReason() ?? 'the SSH channel closed without an exit status')
          else finish()
        })
        if (ctx.privilege === 'sudo-password') ch.write(`${ctx.sudoPassword}\n`)
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
      },
    )
  })
}
