import { spawn } from 'node:child_process'

/** A process run on the controller (pip, gpg, tar, dpkg-deb) that exited non-zero or could not start. */
export class LocalCommandError extends Error {
  constructor(
    readonly command: string,
    readonly code: number | null,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    const tail = (stderr.trim() || stdout.trim()).split('\n').slice(-15).join('\n')
    super(`${command} exited with ${code ?? 'a signal'}${tail ? `:\n${tail}` : ''}`)
    this.name = 'LocalCommandError'
  }
}

export interface LocalRunOptions {
  cwd?: string
  env?: NodeJS.ProcessEnv
  input?: string | Buffer
  /** Called with each output line (pip's progress, for --verbose). */
  onLine?: (line: string) => void
}

/** Runs `file args...` without a shell; resolves with its output, rejects with LocalCommandError. */
export function runLocal(file: string, args: readonly string[], options: LocalRunOptions = {}): Promise<{ stdout: string; stderr: string }> {
  const command = [file, ...args].join(' ')
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] })
    const out: Buffer[] = []
    const err: Buffer[] = []
    let pending = ''
    const forward = (chunk: Buffer): void => {
      if (!options.onLine) return
      pending += chunk.toString('utf8')
      const lines = pending.split('\n')
      pending = lines.pop() ?? ''
      for (const line of lines) if (line.trim()) options.onLine(line)
    }
    child.stdout.on('data', (c: Buffer) => (out.push(c), forward(c)))
    child.stderr.on('data', (c: Buffer) => (err.push(c), forward(c)))
    child.on('error', (e) => reject(new LocalCommandError(command, null, '', e.message)))
    child.on('close', (code) => {
      if (pending.trim()) options.onLine?.(pending)
      const stdout = Buffer.concat(out).toString('utf8')
      const stderr = Buffer.concat(err).toString('utf8')
      if (code === 0) resolve({ stdout, stderr })
      else reject(new LocalCommandError(command, code, stdout, stderr))
    })
    child.stdin.on('error', () => undefined)
    child.stdin.end(options.input ?? '')
  })
}
