/**
 * JSON Schema of the inventory file, for `provision schema` and editors
 * (yaml-language-server: `# yaml-language-server: $schema=./inventory.schema.json`).
 * Checks that JSON Schema cannot express (secrets, references between hosts, versions) are
 * still made by the loader.
 */
import { z } from 'zod'
import { inventorySchema } from './schema.js'

export function inventoryJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(inventorySchema, { io: 'input', unrepresentable: 'any', target: 'draft-2020-12' }) as Record<
    string,
    unknown
  >
  return { ...schema, title: 'matrix-provision inventory' }
}
