/**
 * Pass 2: zod's issues on the raw file as inventory issues, in our words: what is expected, what
 * was written (never a secret), "did you mean" for unknown keys and values, at the value's position.
 */
import type { z } from 'zod'
import { describeValue, type InventoryIssue, splitHint, suggestion } from './errors.js'
import type { Locator, Path } from './positions.js'
import { allowedKeysAt } from './schema-walk.js'

type ZodIssue = z.core.$ZodIssue
type ZodRawIssue = z.core.$ZodRawIssue

const TYPE_NAMES: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  int: 'an integer',
  boolean: 'true or false',
  object: 'a mapping',
  record: 'a mapping',
  map: 'a mapping',
  array: 'a list',
  null: 'null',
  undefined: 'nothing',
}

/** Messages for issues whose schema gives none: what is expected, never zod's wording. */
export function genericMessage(issue: ZodRawIssue): string | undefined {
  switch (issue.code) {
    case 'invalid_type':
      return `expected ${TYPE_NAMES[issue.expected] ?? issue.expected}`
    case 'invalid_value':
      return `expected ${issue.values.map((value) => JSON.stringify(value)).join(' or ')}`
    case 'too_small':
      return issue.origin === 'array'
        ? `expected at least ${issue.minimum} item(s)`
        : issue.origin === 'string'
          ? 'expected a non-empty string'
          : `expected a value >= ${issue.minimum}`
    case 'too_big':
      return issue.origin === 'array'
        ? `expected at most ${issue.maximum} item(s)`
        : issue.origin === 'string'
          ? `expected at most ${issue.maximum} characters`
          : `expected a value <= ${issue.maximum}`
    case 'invalid_format':
      return `expected a ${issue.format}`
    default:
      return undefined
  }
}

export function valueAt(data: unknown, path: Path): { exists: boolean; value: unknown } {
  let current: unknown = data
  for (const segment of path) {
    if (current === null || typeof current !== 'object') return { exists: false, value: undefined }
    const record = current as Record<PropertyKey, unknown>
    if (!Object.prototype.hasOwnProperty.call(record, segment)) return { exists: false, value: undefined }
    current = record[segment]
  }
  return { exists: true, value: current }
}

export function schemaIssue(issue: ZodIssue, data: unknown, locator: Locator): InventoryIssue[] {
  const path = issue.path
  if (issue.code === 'unrecognized_keys') {
    const allowed = allowedKeysAt(path)
    return issue.keys.map((key) => {
      const keyPath = [...path, key]
      return locator.keyIssue(keyPath, `unknown key "${key}"; ${suggestion(key, allowed, 'allowed keys')}`)
    })
  }
  if (issue.code === 'invalid_key') {
    const name = String(path[path.length - 1])
    const inner = splitHint(issue.issues[0]?.message ?? 'invalid name')
    const what = path.length === 2 && path[0] === 'hosts' ? 'invalid host name' : 'invalid key'
    return [locator.keyIssue(path, `${what} ${describeValue(name)}: ${inner.message}`, inner.hint)]
  }

  const { message: template, hint } = splitHint(issue.message)
  const found = valueAt(data, path)
  let message: string
  if (!found.exists) {
    const last = path[path.length - 1]
    const name = last === undefined ? 'the inventory' : `"${String(last)}"`
    message = `missing required key ${name}: ${template.replace(/,? got \{got\}/, '').replace('{got}', 'nothing')}`
  } else if (template.includes('{got}')) {
    message = template.replace('{got}', describeValue(found.value))
  } else if (issue.code === 'invalid_union') {
    // Secret references: never echo what was written (it may be the secret itself).
    message = template
  } else {
    message = `${template}, got ${describeValue(found.value)}`
  }
  if (issue.code === 'invalid_value' && typeof found.value === 'string') {
    const values = issue.values.map(String)
    message += `; ${suggestion(found.value, values, 'allowed')}`
  }
  return [locator.issue(path, message, hint)]
}
