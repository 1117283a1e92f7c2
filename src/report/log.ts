import type { Logger } from 'pino'
import { maskSecrets } from '../secret.js'

export interface RunLog {
  /** One structured event: commands carry host, command (masked), exit code and duration. */
  event(fields: Record<string, unknown> & { msg: string }): void
  close(): void
}

/** JSON lines (pino) in --log-file; nothing when no file is given. Secrets are masked before writing. */
export async function createRunLog(file: string | undefined): Promise<RunLog> {
  if (!file) return { event: () => undefined, close: () => undefined }
  const { pino } = await import('pino') // only runs that keep a log load it
  const dest = pino.destination({ dest: file, mkdir: true, sync: true })
  const logger: Logger = pino({ level: 'debug', base: { pid: process.pid } }, dest)
  return {
    event(fields) {
      const masked = JSON.parse(maskSecrets(JSON.stringify(fields))) as Record<string, unknown>
      logger.info(masked)
    },
    close() {
      dest.flushSync()
    },
  }
}
