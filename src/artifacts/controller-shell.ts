import type { Options, ProcessOutput, Shell } from 'zx/core'

export interface ControllerShellOptions {
  cwd?: string
  env?: NodeJS.ProcessEnv
  input?: string | Buffer
  /** Every output line, stdout and stderr (pip's progress, for --verbose). */
  onLine?: ((line: string) => void) | undefined
}

let zx: typeof import('zx/core') | undefined

/**
 * zx's `$` for commands on the controller (pip, uv, gpg, tar, docker, ssh-keygen, dpkg-deb): every
 * interpolated value is quoted (an array as several words), a non-zero exit rejects with zx's
 * ProcessOutput (`.nothrow()` when the exit is data), nothing is echoed unless `onLine` asks.
 * zx is imported on first use (~100 ms): the apply path runs no controller command and never loads it.
 */
export async function controller$(options: ControllerShellOptions = {}): Promise<Shell> {
  zx ??= await import('zx/core')
  const { onLine, ...rest } = options
  const settings: Partial<Options> = { quiet: true, verbose: false, ...rest }
  if (onLine) settings.log = lineLog(onLine)
  return zx.$(settings)
}

/** A failed controller command (zx's ProcessOutput): its exit code and output are data. */
export function isCommandFailure(error: unknown): error is ProcessOutput {
  return zx !== undefined && error instanceof zx.ProcessOutput
}

/** zx's log hook as whole output lines; the rest of what zx logs (the command, its end) is not wanted. */
function lineLog(onLine: (line: string) => void): Options['log'] {
  const pending = new Map<string, string>()
  const emit = (line: string) => {
    if (line.trim()) onLine(line)
  }
  return (entry) => {
    if (entry.kind === 'stdout' || entry.kind === 'stderr') {
      const key = `${entry.id} ${entry.kind}`
      const lines = ((pending.get(key) ?? '') + entry.data.toString('utf8')).split('\n')
      pending.set(key, lines.pop() ?? '')
      lines.forEach(emit)
    } else if (entry.kind === 'end') {
      for (const kind of ['stdout', 'stderr']) {
        emit(pending.get(`${entry.id} ${kind}`) ?? '')
        pending.delete(`${entry.id} ${kind}`)
      }
    }
  }
}
