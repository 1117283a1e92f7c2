/**
 * Reading the schema itself: the keys allowed at a path (for "did you mean"), and the leaves the
 * loader resolves after parsing (controller paths, secrets).
 */
import { inventorySchema, varsSchema } from './schema.js'
import { CONTROLLER_PATHS, SECRETS } from './values.js'

interface ZodDefLike {
  type?: string
  shape?: Record<string, unknown>
  innerType?: unknown
  valueType?: unknown
  element?: unknown
  in?: unknown
}

function defOf(schema: unknown): ZodDefLike | undefined {
  return (schema as { _zod?: { def?: ZodDefLike } } | undefined)?._zod?.def
}

function unwrap(schema: unknown): unknown {
  let current = schema
  for (let i = 0; i < 10; i++) {
    const def = defOf(current)
    if (!def) return current
    if (def.type === 'optional' || def.type === 'default' || def.type === 'nullable' || def.type === 'prefault' || def.type === 'readonly')
      current = def.innerType
    else if (def.type === 'pipe') current = def.in
    else return current
  }
  return current
}

/** The keys allowed in the mapping at `path` of the raw inventory (for "did you mean"). */
export function allowedKeysAt(path: readonly PropertyKey[], root: unknown = inventorySchema): string[] {
  let current = unwrap(root)
  for (const segment of path) {
    const def = defOf(current)
    if (!def) return []
    if (def.type === 'object' && def.shape) current = unwrap(def.shape[String(segment)])
    else if (def.type === 'record') current = unwrap(def.valueType)
    else if (def.type === 'array') current = unwrap(def.element)
    else return []
  }
  const def = defOf(current)
  return def?.type === 'object' && def.shape ? Object.keys(def.shape) : []
}

/** A leaf of the settings the loader resolves after parsing: a file on the controller, or a secret. */
export type SettingLeaf = { path: string[]; kind: 'controllerPath' } | { path: string[]; kind: 'secret'; generatedName?: string }

/** The controller paths and secrets under `schema`; `*` in a path stands for every item of a list. */
export function leavesOf(schema: unknown, path: string[] = []): SettingLeaf[] {
  const inner = unwrap(schema) as object
  if (CONTROLLER_PATHS.has(inner)) return [{ path, kind: 'controllerPath' }]
  if (SECRETS.has(inner)) {
    const generatedName = SECRETS.get(inner)
    return [generatedName === undefined ? { path, kind: 'secret' } : { path, kind: 'secret', generatedName }]
  }
  const def = defOf(inner)
  if (def?.type === 'object' && def.shape) return Object.entries(def.shape).flatMap(([key, value]) => leavesOf(value, [...path, key]))
  if (def?.type === 'array') return leavesOf(def.element, [...path, '*'])
  return []
}

/** Secret settings of `vars` and the name a generated value gets on the host. */
export const VAR_SECRETS = leavesOf(varsSchema).flatMap((leaf) =>
  leaf.kind === 'secret' && leaf.generatedName !== undefined ? [{ path: leaf.path, name: leaf.generatedName }] : [],
)
