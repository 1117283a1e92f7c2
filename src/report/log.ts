import type { Logger } from 'pino'
import { maskDeep } from '../core/secret.js'

export interface RunLog {
  /** One structured event: commands carry host, command (masked), exit code and duration. */
  event(fields: Record<string, unknown> & { msg: string }): void
  close(): void
}

/** JSON lines (pino) in --log-file; nothing when no file is given. Secrets are masked before serialising. */
export async function createRunLog(file: string | undefined): Promise<RunLog> {
  if (!file) return { event: () => undefined, close: () => undefined }
  // Only runs that keep a log load pino. It is CommonJS: take module.exports as the default export, the one
  // form Node's ESM loader and the esbuild bundle agree on (the bundle's lazy chunk has no named `pino`).
  const { default: pino } = await import('pino')
  const dest = pino.destination({ dest: file, mkdir: true, sync: true })
  const logger: Logger = pino({ level: 'debug', base: { pid: process.pid } }, dest)
  return {
    event(fields) {
      // Masked before pino serialises: JSON escaping would hide a secret with a quote or backslash.
      logger.info(maskDeep(fields) as Record<string, unknown>)
    },
    close() {
      dest.flushSync()
    },
  }
}
