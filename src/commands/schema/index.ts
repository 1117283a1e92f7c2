/** `provision schema`: the inventory's JSON Schema, for editors. */
import { inventoryJsonSchema } from '../../inventory/json-schema.js'
import { EXIT, type Verb } from '../verb.js'

export const run: Verb = ({ io }) => {
  io.out(JSON.stringify(inventoryJsonSchema(), null, 2) + '\n')
  return Promise.resolve(EXIT.ok)
}
