import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { RunReport } from '../../src/engine/report-types.js'

/** The launcher users run (package.json "bin"): the esbuild bundle in dist/cli/, not the TypeScript sources. */
export const BIN = fileURLToPath(new URL('../../bin/provision.js', import.meta.url))

export interface CliResult {
  code: number | null
  /** The signal that ended the process, when it did not exit by itself. */
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  durationMs: number
}

export interface CliOptions {
  /** The whole environment of the child (default: this process's). Add to it with `{ ...process.env, X: '1' }`. */
  env?: NodeJS.ProcessEnv
  cwd?: string
  /** Kill the child after this long (default 10 minutes): a hung CLI fails its test instead of the file's timeout. */
  timeoutMs?: number
  /** Run another launcher, e.g. an installed package's node_modules/.bin/provision. */
  bin?: string
}

/**
 * Run the built CLI as a user does: `node bin/provision.js ARGS` in a child process, stdin closed (no
 * terminal, so no prompts and plain progress), stdout and stderr captured separately. The bundle must
 * be current: test/support/build-cli.ts (every project's global setup) rebuilds a stale one.
 */
export function runCli(args: string[], opts: CliOptions = {}): Promise<CliResult> {
  const started = performance.now()
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [opts.bin ?? BIN, ...args], {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: opts.timeoutMs ?? 600_000,
      killSignal: 'SIGKILL',
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (t: string) => void (stdout += t))
    child.stderr.setEncoding('utf8').on('data', (t: string) => void (stderr += t))
    child.once('error', reject)
    child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr, durationMs: Math.round(performance.now() - started) }))
  })
}

/** For expect(...) messages: everything the CLI said, so a failing assertion shows why. */
export function cliOutput(r: CliResult): string {
  return `exit ${r.code}${r.signal ? ` (${r.signal})` : ''} after ${r.durationMs} ms\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`
}

/** The report a `--json` run printed (the engine's RunReport, as data). */
export const jsonReport = (stdout: string): RunReport => JSON.parse(stdout) as RunReport
