/**
 * Secret references of the inventory -> SecretValue.
 *
 *   { env: NAME }      read from the controller's environment (unset or empty is an error)
 *   { file: path }     read from a controller file, relative to the inventory file; one trailing newline stripped
 *   { generate: true } made on the host the first time and kept there: { kind: 'generate', name }
 *
 * Inline values are rejected by the schema (secretRefSchema) before anything gets here.
 */
import { readFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import { isAbsolute, resolve } from 'node:path'
import { Secret } from '../core/secret.js'
import type { SecretRef, SecretValue } from '../core/secret.js'

export type SecretResolution = { ok: true; value: SecretValue } | { ok: false; message: string; hint?: string }

export interface SecretContext {
  /** Directory of the inventory file: `{ file }` paths are relative to it. */
  baseDir: string
  env: NodeJS.ProcessEnv
  /** Files already read in this load (one read per path). */
  fileCache?: Map<string, Promise<SecretResolution>>
}

export function isSecretRef(value: unknown): value is SecretRef {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false
  const keys = Object.keys(value)
  if (keys.length !== 1) return false
  const record = value as Record<string, unknown>
  return (
    (keys[0] === 'env' && typeof record.env === 'string') ||
    (keys[0] === 'file' && typeof record.file === 'string') ||
    (keys[0] === 'generate' && record.generate === true)
  )
}

/** `~` and `~/x` -> the controller user's home directory; relative paths -> against baseDir. */
export function resolveControllerPath(path: string, baseDir: string, env: NodeJS.ProcessEnv = process.env): string {
  const home = env.HOME && env.HOME !== '' ? env.HOME : homedir()
  let expanded = path
  if (path === '~') expanded = home
  else if (path.startsWith('~/')) expanded = `${home}${path.slice(1)}`
  return isAbsolute(expanded) ? resolve(expanded) : resolve(baseDir, expanded)
}

/** "no such file or directory (ENOENT)" from a Node fs error. */
export function osReason(error: unknown): string {
  const err = error as NodeJS.ErrnoException
  const code = typeof err?.code === 'string' ? err.code : undefined
  const known: Record<string, string> = {
    ENOENT: 'no such file or directory',
    EACCES: 'permission denied',
    EPERM: 'operation not permitted',
    EISDIR: 'it is a directory',
    ENOTDIR: 'a part of the path is not a directory',
    ELOOP: 'too many symbolic links',
    EMFILE: 'too many open files',
  }
  if (code && known[code]) return `${known[code]} (${code})`
  const message = typeof err?.message === 'string' ? err.message.replace(/^[A-Z]+: /, '').replace(/, \w+ '.*'$/, '') : String(error)
  return code ? `${message} (${code})` : message
}

function stripTrailingNewline(text: string): string {
  if (text.endsWith('\r\n')) return text.slice(0, -2)
  if (text.endsWith('\n')) return text.slice(0, -1)
  return text
}

async function readSecretFile(path: string): Promise<SecretResolution> {
  let content: string
  try {
    content = await readFile(path, 'utf8')
  } catch (error) {
    return {
      ok: false,
      message: `cannot read secret file ${path}: ${osReason(error)}`,
      hint: "create the file (chmod 600), fix the path (relative paths start at the inventory file's directory), or use { env: NAME }",
    }
  }
  const value = stripTrailingNewline(content)
  if (value === '')
    return { ok: false, message: `secret file ${path} is empty`, hint: 'write the secret into the file, or use { generate: true }' }
  return { ok: true, value: { kind: 'value', secret: new Secret(value, `file ${path}`) } }
}

/**
 * Resolve one reference. `generatedName` is the stable name of a generated value
 * (`postgres-password`, `macaroon-secret`, ...); without it `{ generate: true }` is refused
 * (the ssh sudo password cannot be invented).
 */
export async function resolveSecretRef(
  ref: SecretRef,
  generatedName: string | undefined,
  context: SecretContext,
): Promise<SecretResolution> {
  if ('generate' in ref) {
    if (generatedName === undefined) {
      return {
        ok: false,
        message: 'this secret cannot be generated: it must match a value that already exists',
        hint: 'use { env: NAME } or { file: path }',
      }
    }
    return { ok: true, value: { kind: 'generate', name: generatedName } }
  }
  if ('env' in ref) {
    const value = context.env[ref.env]
    if (value === undefined || value === '') {
      return {
        ok: false,
        message: `environment variable ${ref.env} is not set${value === '' ? ' (it is empty)' : ''}`,
        hint: `export ${ref.env}=... before running provision, or use { file: path }`,
      }
    }
    return { ok: true, value: { kind: 'value', secret: new Secret(value, `env ${ref.env}`) } }
  }
  const path = resolveControllerPath(ref.file, context.baseDir, context.env)
  const cache = context.fileCache
  if (!cache) return readSecretFile(path)
  let pending = cache.get(path)
  if (!pending) {
    pending = readSecretFile(path)
    cache.set(path, pending)
  }
  return pending
}
