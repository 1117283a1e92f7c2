/**
 * Progress of the files of a backup or restore: on a terminal, one redrawn bar per host; in CI, in a
 * pipe or with --verbose, plain lines (a file starts, each quarter, a file ends) that logs keep readable.
 */
export interface TransferProgress {
  start(host: string, name: string, expectedBytes: number | undefined): void
  update(host: string, bytes: number): void
  end(host: string, name: string, bytes: number, ms: number): void
  line(host: string, text: string): void
  done(): void
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = n
  let i = 0
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024
    i++
  }
  return `${i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`
}

const rate = (bytes: number, ms: number) => `${formatBytes((bytes * 1000) / Math.max(ms, 1))}/s`

export function createTransferProgress(options: { write: (text: string) => void; terminal: boolean; quiet?: boolean }): TransferProgress {
  if (options.quiet)
    return { start: () => undefined, update: () => undefined, end: () => undefined, line: () => undefined, done: () => undefined }
  const current = new Map<string, { name: string; expected?: number; started: number; lastQuarter: number; drawn: number }>()
  const { write } = options
  if (!options.terminal) {
    return {
      start(host, name, expected) {
        current.set(host, { name, expected, started: Date.now(), lastQuarter: 0, drawn: 0 })
        write(`[${host}] ${name}: started${expected ? ` (about ${formatBytes(expected)})` : ''}\n`)
      },
      update(host, bytes) {
        const c = current.get(host)
        if (!c?.expected) return
        const quarter = Math.min(3, Math.floor((bytes / c.expected) * 4))
        if (quarter > c.lastQuarter) {
          c.lastQuarter = quarter
          write(`[${host}] ${c.name}: ${quarter * 25}% (${formatBytes(bytes)})\n`)
        }
      },
      end(host, name, bytes, ms) {
        current.delete(host)
        write(`[${host}] ${name}: ${formatBytes(bytes)} in ${(ms / 1000).toFixed(1)} s (${rate(bytes, ms)})\n`)
      },
      line: (host, text) => write(`[${host}] ${text}\n`),
      done: () => undefined,
    }
  }
  // Terminal: one bar line, redrawn at most 10 times a second; finished files stay as plain lines.
  const draw = (host: string, bytes: number) => {
    const c = current.get(host)
    if (!c) return
    const now = Date.now()
    if (now - c.drawn < 100) return
    c.drawn = now
    const width = 30
    const fraction = c.expected ? Math.min(1, bytes / c.expected) : undefined
    const bar =
      fraction === undefined
        ? ''
        : `[${'#'.repeat(Math.round(fraction * width)).padEnd(width, '.')}] ${String(Math.round(fraction * 100)).padStart(3)}% `
    write(
      `\r\x1b[2K[${host}] ${c.name} ${bar}${formatBytes(bytes)}${c.expected ? ` of ${formatBytes(c.expected)}` : ''}  ${rate(bytes, now - c.started)}`,
    )
  }
  return {
    start(host, name, expected) {
      current.set(host, { name, expected, started: Date.now(), lastQuarter: 0, drawn: 0 })
      draw(host, 0)
    },
    update: draw,
    end(host, name, bytes, ms) {
      current.delete(host)
      write(`\r\x1b[2K[${host}] ${name}: ${formatBytes(bytes)} in ${(ms / 1000).toFixed(1)} s (${rate(bytes, ms)})\n`)
    },
    line: (host, text) => write(`\r\x1b[2K[${host}] ${text}\n`),
    done: () => undefined,
  }
}
