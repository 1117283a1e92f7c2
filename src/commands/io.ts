/** Where a verb writes; tests pass buffers, the bin passes the process streams. */
export interface CliIo {
  out: (text: string) => void
  err: (text: string) => void
  env: NodeJS.ProcessEnv
}
