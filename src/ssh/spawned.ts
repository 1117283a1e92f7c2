import { performance } from 'node:perf_hooks'
import { StringDecoder } from 'node:string_decoder'
import type { ClientChannel } from 'ssh2'
import type { CommandResult, RemoteProcess } from './connection.js'
import { appendNote, signalChannel } from './exec.js'

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
    channel.on('close', () =>
      this.#finish(this.#code === null && this.#signal === null ? 'the SSH channel closed without an exit status' : undefined),
    )
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
    // The pattern lies within one line: each chunk is searched from the start of the line it continues, not from
    // the start of the output (a lock's channel carries every probe's output: tens of kB, a chunk at a time).
    const line = new RegExp(re.source, re.flags.replace(/[gy]/g, '') + 'g')
    const from = { stdout: 0, stderr: 0 }
    const found = (stream: 'stdout' | 'stderr', text: string) => {
      line.lastIndex = from[stream]
      const hit = line.test(text)
      from[stream] = text.lastIndexOf('\n') + 1
      return hit
    }
    return new Promise((resolve, reject) => {
      const check = () => {
        if (found('stdout', this.#stdout) || found('stderr', this.#stderr)) {
          cleanup()
          resolve(this.#stdout + this.#stderr)
        } else if (this.#result) {
          cleanup()
          const text = this.#stdout + this.#stderr
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
