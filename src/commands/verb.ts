/**
 * What every verb shares with the CLI: the options it parsed, the exit codes, bad usage. Light on
 * purpose: src/cli.ts imports it before it knows the verb (`--help` loads nothing else).
 */
import type { parseArgs, ParseArgsConfig } from 'node:util'
import type { CliIo } from './io.js'

export const EXIT = { ok: 0, hostFailed: 1, usage: 2, changesPending: 10 } as const

/** Bad usage: one line and exit 2, never a stack trace. */
export class UsageError extends Error {}

export function splitList(v: string | undefined): string[] {
  return v
    ? v
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
    : []
}

export const OPTIONS = {
  inventory: { type: 'string', short: 'i' },
  'dry-run': { type: 'boolean', short: 'n' },
  'exit-code': { type: 'boolean' },
  diff: { type: 'boolean' },
  limit: { type: 'string', short: 'l' },
  tasks: { type: 'string', short: 't' },
  json: { type: 'boolean' },
  verbose: { type: 'boolean', short: 'v' },
  'log-file': { type: 'string' },
  holder: { type: 'string' },
  parallel: { type: 'string', short: 'p' },
  window: { type: 'string' },
  wait: { type: 'string' },
  down: { type: 'boolean' },
  element: { type: 'string' },
  'restore-dump': { type: 'boolean' },
  'synapse-version': { type: 'string' },
  wheelhouse: { type: 'string' },
  python: { type: 'string' },
  to: { type: 'string' },
  from: { type: 'string' },
  force: { type: 'boolean' },
  abort: { type: 'boolean' },
  'encrypt-to': { type: 'string', multiple: true },
  identity: { type: 'string' },
  user: { type: 'string' },
  admin: { type: 'boolean' },
  'password-file': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
} as const satisfies ParseArgsConfig['options']

export type CliValues = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: false }>>['values']

export const VERB_NAMES = [
  'apply',
  'check',
  'adopt',
  'schema',
  'unlock',
  'rollback',
  'sandbox',
  'status',
  'lock',
  'backup',
  'restore',
  'mas-migrate',
  'move',
  'mas-user',
] as const
export type VerbName = (typeof VERB_NAMES)[number]

export interface VerbInput {
  command: VerbName
  values: CliValues
  io: CliIo
  /** io is the process's own streams (not a test's buffers). */
  processStreams: boolean
  /** --parallel, checked. */
  parallel: number
  /** --wait, checked. */
  waitS: number | undefined
  /** The CLI's entry point, for a verb that provisions through it (sandbox). */
  provision: (argv: string[], io: CliIo) => Promise<number>
}

/** A verb's module (src/commands/<verb>/index.ts) exports `run`. */
export type Verb = (input: VerbInput) => Promise<number>

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
