// The README's table of settings and defaults, made from the inventory's JSON Schema (what `provision schema`
// prints, made by zod from src/inventory/schema.ts and settings/): the schema is the one place a default is written.
//   node scripts/settings-docs.mjs          print the table
//   node scripts/settings-docs.mjs --write  put it into README.md between the markers
// test/unit/settings-docs.test.ts fails when README.md differs from what the schema says.
import { readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const BEGIN = '<!-- settings table: made by scripts/settings-docs.mjs from the schema, do not edit -->'
export const END = '<!-- end of settings table -->'

/** A default as the YAML would say it. */
function yamlValue(value) {
  if (typeof value === 'string') return value
  if (Array.isArray(value)) return `[${value.map(yamlValue).join(', ')}]`
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value)
    return entries.length === 0 ? '{}' : `{ ${entries.map(([k, v]) => `${k}: ${yamlValue(v)}`).join(', ')} }`
  }
  return String(value)
}

const cell = (text) => text.replace(/\|/g, '\\|').replace(/\s*\n\s*/g, ' ')

/** One row per setting (a leaf: anything but a mapping of known keys), depth first in the schema's order. */
function rows(node, path) {
  const nested = node.type === 'object' && node.properties && node.additionalProperties === false && !node.anyOf
  if (nested) return Object.entries(node.properties).flatMap(([key, child]) => rows(child, [...path, key]))
  const setting = `\`${path.join('.')}\``
  const given = 'default' in node ? `\`${yamlValue(node.default)}\`` : ''
  // A list of kinds or presets follows the first line of some descriptions: the schema's enum says it.
  const what = cell((node.description ?? '').split('\n')[0])
  return [`| ${setting} | ${given} | ${what} |`]
}

/** The table of every setting under `ssh` and `vars`, from the inventory's JSON Schema. */
export function renderSettingsTable(schema) {
  const defaults = schema.properties.defaults.properties
  return ['| Setting | Default | What it is |', '|---|---|---|', ...rows(defaults.ssh, ['ssh']), ...rows(defaults.vars, [])].join('\n')
}

/** README text with the table between the markers replaced. */
export function withSettingsTable(readme, table) {
  const begin = readme.indexOf(BEGIN)
  const end = readme.indexOf(END)
  if (begin < 0 || end < begin) throw new Error(`README.md has no ${BEGIN} ... ${END} markers`)
  return `${readme.slice(0, begin + BEGIN.length)}\n${table}\n${readme.slice(end)}`
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..')
  // The schema from the sources as they are (dist/cli may be older): bundled alone, zod left to node_modules.
  const { build } = await import('esbuild')
  const outfile = join(root, 'dist/settings-docs/json-schema.mjs')
  await build({
    entryPoints: [join(root, 'src/inventory/json-schema.ts')],
    bundle: true,
    platform: 'node',
    format: 'esm',
    packages: 'external',
    outfile,
    logLevel: 'warning',
  })
  const { inventoryJsonSchema } = await import(outfile)
  const schema = inventoryJsonSchema()
  const table = renderSettingsTable(schema)
  if (process.argv.includes('--write')) {
    const file = join(root, 'README.md')
    writeFileSync(file, withSettingsTable(readFileSync(file, 'utf8'), table))
  } else {
    console.log(table)
  }
}
