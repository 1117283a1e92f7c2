/** Where a verb writes; tests pass buffers, the bin passes the process streams. */
export interface CliIo {
  out: (text: string) => void
  err: (text: string) => void
  env: NodeJS.ProcessEnv
}

/**
 * What a user reads of an error no verb handled: its message without stack frames. zx's ProcessOutput
 * (a failed controller command) puts a frame into its message; MP_DEBUG prints the stack instead.
 */
export function userMessage(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error)
  return text
    .split('\n')
    .filter((line) => !/^\s+at \S/.test(line))
    .join('\n')
    .replace(/\n{3,}/g, '\n\n')
}
