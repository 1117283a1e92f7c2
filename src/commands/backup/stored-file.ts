import { createHash } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { Transform, type Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { ageEncrypt, childDone } from './age.js'

export interface StoredFile {
  /** Bytes as stored (after encryption, when encrypting). */
  bytes: number
  sha256: string
}

function meter(onChunk: (chunk: Buffer) => void): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      onChunk(chunk)
      callback(null, chunk)
    },
  })
}

/**
 * One file of a backup as it arrives: `input` takes the stream from the host, chunk by chunk (through
 * age when encrypting) into a new 0600 file; its size and SHA-256 are computed on the way, so nothing is
 * read twice and nothing is held in memory. Backpressure runs back through `input` to the SSH channel.
 */
export class BackupFileWriter {
  readonly input: Writable
  #received = 0
  readonly #done: Promise<unknown>
  readonly #hash = createHash('sha256')
  #stored = 0

  constructor(
    readonly path: string,
    options: { recipients?: string[]; onReceived?: (bytes: number) => void } = {},
  ) {
    const incoming = meter((c) => {
      this.#received += c.length
      options.onReceived?.(this.#received)
    })
    const storing = meter((c) => {
      this.#hash.update(c)
      this.#stored += c.length
    })
    // 'wx': never overwrite a file; 0600 from the start (the umask can only take bits away).
    const file = createWriteStream(path, { flags: 'wx', mode: 0o600 })
    if (options.recipients?.length) {
      const age = ageEncrypt(options.recipients)
      this.#done = Promise.all([pipeline(incoming, age.stdin!), pipeline(age.stdout!, storing, file), childDone(age, 'age --encrypt')])
    } else {
      this.#done = pipeline(incoming, storing, file)
    }
    // Errors surface in finish(); until then they must not crash the process.
    this.#done.catch(() => undefined)
    this.input = incoming
  }

  get received(): number {
    return this.#received
  }

  /** After the source has ended: close the file and give its size and hash. */
  async finish(): Promise<StoredFile> {
    if (!this.input.writableEnded) this.input.end()
    await this.#done
    return { bytes: this.#stored, sha256: this.#hash.digest('hex') }
  }

  abort(error: Error): void {
    this.input.destroy(error)
  }
}
