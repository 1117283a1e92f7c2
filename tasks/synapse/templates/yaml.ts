/** YAML that PyYAML (Synapse's `yaml.safe_load`, YAML 1.1) reads back exactly, and the header of every file we manage. */
import { Document, isScalar, visit } from 'yaml'

export const FILE_HEADER = '# Managed by matrix-provision: changes here are overwritten on the next run.\n'

/** Characters PyYAML treats as line breaks or refuses outright, which JSON.stringify leaves raw. */
const PYYAML_UNSAFE_RAW = /[\u007f-\u009f\u2028\u2029\ufeff\ufffe\uffff]/g
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/
/** A key written plain: an identifier PyYAML (YAML 1.1) cannot read as a boolean or null. */
const PLAIN_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/
export const YAML11_WORDS = /^(?:y|n|yes|no|on|off|true|false|null)$/i

function checkYamlValue(value: unknown, path: string): void {
  if (typeof value === 'string') {
    if (LONE_SURROGATE.test(value)) throw new Error(`${path}: the text holds an unpaired UTF-16 surrogate, which is not valid Unicode`)
  } else if (typeof value === 'number') {
    // PyYAML (YAML 1.1) reads 1e+21 as a string and has no NaN/Infinity from JSON-ish output.
    if (!Number.isFinite(value) || /e/i.test(JSON.stringify(value))) {
      throw new Error(`${path}: the number ${String(value)} cannot be written so that PyYAML reads it back as a number`)
    }
  } else if (Array.isArray(value)) {
    value.forEach((item, i) => checkYamlValue(item, `${path}[${i}]`))
  } else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      checkYamlValue(k, `${path}.${k}`)
      checkYamlValue(v, `${path}.${k}`)
    }
  } else if (value !== null && value !== undefined && typeof value !== 'boolean') {
    throw new Error(`${path}: a ${typeof value} cannot be written to YAML`)
  }
}

/**
 * YAML for Synapse (PyYAML) and other YAML 1.1 readers: strings are JSON double-quoted scalars,
 * simple keys plain, no line folding. Throws for values that cannot round-trip (NaN, 1e21, lone
 * surrogates, functions).
 */
export function renderYaml(value: unknown): string {
  checkYamlValue(value, '$')
  // No anchors/aliases for objects that appear twice (e.g. shared by an inventory merge).
  const doc = new Document(value, { aliasDuplicateObjects: false })
  visit(doc, {
    Pair(_, pair) {
      if (isScalar(pair.key) && typeof pair.key.value === 'string') {
        pair.key.type = PLAIN_KEY.test(pair.key.value) && !YAML11_WORDS.test(pair.key.value) ? 'PLAIN' : 'QUOTE_DOUBLE'
      }
    },
    Scalar(key, node) {
      if (key !== 'key' && typeof node.value === 'string') node.type = 'QUOTE_DOUBLE'
    },
  })
  const text = doc.toString({ doubleQuotedAsJSON: true, lineWidth: 0, indentSeq: true })
  // Only double-quoted scalars can hold these characters (keys holding them are quoted too), so
  // a \uXXXX escape is read back as the same character.
  return text.replace(PYYAML_UNSAFE_RAW, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`)
}
