/** Merging `defaults` under each host (pass 3 starts from the merged values). */
import type { Path } from './positions.js'
import { VAR_SECRETS } from './schema-walk.js'
import { valueAt } from './zod-issues.js'

const SECRET_PATH_KEYS = new Set(VAR_SECRETS.map((secret) => secret.path.join('.')))

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

/** Deep merge, `over` wins; lists and secret references are replaced whole. */
export function mergeVars(base: unknown, over: unknown, path: string[] = []): unknown {
  if (over === undefined) return base
  if (base === undefined) return over
  if (isPlainObject(base) && isPlainObject(over) && !SECRET_PATH_KEYS.has(path.join('.'))) {
    const result: Record<string, unknown> = { ...base }
    for (const [key, value] of Object.entries(over)) result[key] = mergeVars(base[key], value, [...path, key])
    return result
  }
  return over
}

export function hasPath(data: unknown, path: Path): boolean {
  return valueAt(data, path).exists && valueAt(data, path).value !== undefined
}

export function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b)
}
