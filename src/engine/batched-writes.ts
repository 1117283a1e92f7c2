import type { CommandResult, Connection, FileWrite, RemoteProcess, RunOptions } from '../ssh/connection.js'
import type { ShellCommand } from '../core/shell.js'

/**
 * The connection apply works through: a file write waits, and consecutive writes go out together as
 * one writeFiles round trip. They are sent before anything else reaches the host (a command, a fact
 * probe, an upload, a restart) and at the end of each task, so every write still lands before what
 * follows it, and a failed write fails the task that made it.
 */
export class BatchedWrites implements Connection {
  #queue: FileWrite[] = []
  #sent = 0

  constructor(private readonly conn: Connection) {}

  get host(): string {
    return this.conn.host
  }

  /** Writes waiting to be sent. */
  get queued(): number {
    return this.#queue.length
  }

  /**
   * How many batches reached the host. A write queued when this was n is on the host once it is
   * greater than n; if it is still n after a failure, the write was lost with the batch.
   */
  get sentBatches(): number {
    return this.#sent
  }

  async flush(): Promise<void> {
    if (this.#queue.length === 0) return
    const queue = this.#queue
    this.#queue = []
    await this.conn.writeFiles(queue)
    this.#sent++
  }

  // Queued, not sent: the contract's promise resolves at once (flush sends them).
  writeFile(file: FileWrite): Promise<void> {
    this.#queue.push(file)
    return Promise.resolve()
  }

  writeFiles(files: readonly FileWrite[]): Promise<void> {
    this.#queue.push(...files)
    return Promise.resolve()
  }

  async run(command: ShellCommand, options?: RunOptions): Promise<CommandResult> {
    await this.flush()
    return this.conn.run(command, options)
  }

  async putFile(localPath: string, remotePath: string, options?: { owner?: string; group?: string; mode?: number }): Promise<void> {
    await this.flush()
    return this.conn.putFile(localPath, remotePath, options)
  }

  async putDirectory(localDir: string, remoteDir: string, options?: { owner?: string; group?: string; mode?: number }): Promise<void> {
    await this.flush()
    return this.conn.putDirectory(localDir, remoteDir, options)
  }

  spawn(command: ShellCommand, options?: { stdin?: string }): RemoteProcess {
    // spawn cannot wait for a flush; nothing in apply spawns (the lock is taken before).
    if (this.#queue.length) throw new Error(`spawn with ${this.#queue.length} file writes not sent yet`)
    return this.conn.spawn(command, options)
  }

  async close(): Promise<void> {
    await this.flush()
    return this.conn.close()
  }
}
