/**
 * Positions in the inventory file: the YAML node behind a path of the data (for every issue's
 * file:line:col), and the issues of pass 1 (YAML syntax) placed where the user must look.
 */
import { isAlias, isMap, isScalar, isSeq, type LineCounter, visit, type Document } from 'yaml'
import { formatPath, type InventoryIssue } from './errors.js'

export type Path = readonly PropertyKey[]

export class Locator {
  constructor(
    readonly doc: Document,
    readonly lineCounter: LineCounter,
    readonly file: string,
  ) {}

  private deref(node: unknown): unknown {
    return isAlias(node) ? node.resolve(this.doc) : node
  }

  /** The value node at `path` and the key node that names it. */
  find(path: Path): { node: unknown; key: unknown } | undefined {
    let node: unknown = this.doc.contents
    let key: unknown
    for (const segment of path) {
      node = this.deref(node)
      if (isMap(node)) {
        const pair = node.items.find((item) => keyText(item.key) === String(segment))
        if (!pair) return undefined
        key = pair.key
        node = pair.value
      } else if (isSeq(node) && typeof segment === 'number' && segment < node.items.length) {
        key = undefined
        node = node.items[segment]
      } else {
        return undefined
      }
    }
    return { node: this.deref(node), key }
  }

  private offsetOf(found: { node: unknown; key: unknown }): number {
    const node = found.node as { range?: [number, number, number] } | null
    const empty =
      node === null || node === undefined || !node.range || (isScalar(node) && node.value === null && node.range[0] === node.range[1])
    if (empty) {
      const key = found.key as { range?: [number, number, number] } | undefined
      if (key?.range) return key.range[0]
      return node?.range?.[0] ?? 0
    }
    return node.range![0]
  }

  /** Offset of the value at `path`, else of its nearest existing ancestor (the parent mapping of a missing key). */
  offset(path: Path): number {
    for (let length = path.length; length >= 0; length--) {
      const found = this.find(path.slice(0, length))
      if (found) return this.offsetOf(found)
    }
    return 0
  }

  /** Offset of the key that names the value at `path` (for unknown keys, bad host names). */
  keyOffset(path: Path): number {
    const found = this.find(path)
    const key = found?.key as { range?: [number, number, number] } | undefined
    return key?.range ? key.range[0] : this.offset(path)
  }

  issueAtOffset(offset: number, path: string, message: string, hint?: string): InventoryIssue {
    const { line, col } = this.lineCounter.linePos(offset)
    return { file: this.file, line, col, path, message, ...(hint ? { hint } : {}) }
  }

  issue(path: Path, message: string, hint?: string): InventoryIssue {
    return this.issueAtOffset(this.offset(path), formatPath(path), message, hint)
  }

  keyIssue(path: Path, message: string, hint?: string): InventoryIssue {
    return this.issueAtOffset(this.keyOffset(path), formatPath(path), message, hint)
  }
}

function keyText(key: unknown): string {
  if (isScalar(key)) return String(key.value)
  return String(key)
}

// ---------------------------------------------------------------------------------------------
// Pass 1: YAML syntax

interface YamlErrorLike {
  code: string
  message: string
  pos: [number, number]
}

/**
 * The quote or bracket still open at `offset`, if any: YAML reports an unclosed one where it gives
 * up (often lines later), the user needs the place where it was opened. A light scanner: quotes
 * and brackets count only where a value starts, comments are skipped.
 */
export function findUnclosedOpener(source: string, offset: number): { offset: number; char: string } | undefined {
  const stack: { offset: number; char: string }[] = []
  let quote: { offset: number; char: string } | undefined
  let comment = false
  const atValueStart = (index: number): boolean => {
    let j = index - 1
    while (j >= 0 && (source[j] === ' ' || source[j] === '\t')) j--
    if (j < 0 || source[j] === '\n') return true
    return ':-[{,?'.includes(source[j]!) && (j === index - 1 ? source[j] !== ':' && source[j] !== '-' : true)
  }
  const end = Math.min(offset, source.length)
  for (let i = 0; i < end; i++) {
    const ch = source[i]!
    if (comment) {
      if (ch === '\n') comment = false
      continue
    }
    if (quote) {
      if (quote.char === '"' && ch === '\\') i++
      else if (ch === quote.char) {
        if (ch === "'" && source[i + 1] === "'") i++
        else quote = undefined
      }
      continue
    }
    if (ch === '#' && (i === 0 || /\s/.test(source[i - 1]!))) comment = true
    else if ((ch === '"' || ch === "'") && atValueStart(i)) quote = { offset: i, char: ch }
    else if ((ch === '[' || ch === '{') && (stack.length > 0 || atValueStart(i))) stack.push({ offset: i, char: ch })
    else if ((ch === ']' || ch === '}') && stack.length > 0) stack.pop()
  }
  return quote ?? stack[stack.length - 1]
}

/** Offset of the first non-space character from `offset` on the same line (where a badly indented key starts). */
function skipSpaces(source: string, offset: number): number {
  let i = offset
  while (source[i] === ' ') i++
  return source[i] === undefined || source[i] === '\n' ? offset : i
}

export function yamlIssue(error: YamlErrorLike, locator: Locator, source: string): InventoryIssue {
  const offset = error.pos[0]
  const text = error.message.replace(/\s+/g, ' ').trim()
  const lower = text.charAt(0).toLowerCase() + text.slice(1)
  if (error.code === 'MISSING_CHAR' || /quote|flow (?:sequence|map|collection)/i.test(text)) {
    const opener = findUnclosedOpener(source, Math.max(error.pos[1], offset))
    if (opener) {
      const noticed = locator.lineCounter.linePos(offset)
      const closer = opener.char === '[' ? ']' : opener.char === '{' ? '}' : opener.char
      const what = opener.char === '[' ? 'list' : opener.char === '{' ? 'mapping' : 'quote'
      return locator.issueAtOffset(
        opener.offset,
        '',
        `YAML syntax error: this ${opener.char} (${what}) is never closed with ${closer} (noticed at line ${noticed.line}, column ${noticed.col}: ${lower})`,
        `add the closing ${closer} on the same line, or write the value in block style`,
      )
    }
  }
  switch (error.code) {
    case 'DUPLICATE_KEY':
      return duplicateKeyIssue(offset, locator)
    case 'TAB_AS_INDENT':
      return locator.issueAtOffset(
        offset,
        '',
        'YAML syntax error: a tab character is used for indentation; only spaces may indent YAML',
        'replace the tab with spaces (2 per level)',
      )
    case 'MULTIPLE_DOCS':
      return locator.issueAtOffset(
        offset,
        '',
        'YAML syntax error: a "---" line starts a second document; an inventory is exactly one YAML document',
        'remove the "---" line and merge what follows into the first document, or split it into two inventory files',
      )
    case 'BAD_INDENT':
    case 'BLOCK_AS_IMPLICIT_KEY':
    case 'MULTILINE_IMPLICIT_KEY':
      return locator.issueAtOffset(
        skipSpaces(source, offset),
        '',
        `YAML syntax error (bad indentation): ${lower}`,
        'keys of one mapping start in the same column and nested values are indented further than their key, with spaces; also check for a missing ":" or an unclosed quote or bracket above',
      )
    case 'MISSING_CHAR':
    case 'UNEXPECTED_TOKEN':
      return locator.issueAtOffset(
        offset,
        '',
        `YAML syntax error: ${lower}`,
        'close every quote ("..." or \'...\'), [list] and {mapping} on the line where it opens, or use block style instead',
      )
    default:
      return locator.issueAtOffset(offset, '', `YAML syntax error: ${lower}`, 'see inventories/example.yaml for the expected layout')
  }
}

function duplicateKeyIssue(offset: number, locator: Locator): InventoryIssue {
  let name: string | undefined
  let firstOffset: number | undefined
  let underHosts = false
  const hostsNode = locator.find(['hosts'])?.node
  visit(locator.doc, {
    Pair(_, pair, path) {
      const key = pair.key as { range?: [number, number, number] } | null
      if (!key?.range || key.range[0] !== offset) return undefined
      name = keyText(pair.key)
      const parent = path[path.length - 1]
      underHosts = parent === hostsNode && parent !== undefined
      if (isMap(parent)) {
        const first = parent.items.find((item) => keyText(item.key) === name)
        const firstKey = first?.key as { range?: [number, number, number] } | undefined
        if (firstKey?.range && firstKey.range[0] !== offset) firstOffset = firstKey.range[0]
      }
      return visit.BREAK
    },
  })
  const firstLine = firstOffset === undefined ? undefined : locator.lineCounter.linePos(firstOffset).line
  const seen = firstLine === undefined ? '' : ` (first defined on line ${firstLine})`
  if (underHosts && name !== undefined) {
    return locator.issueAtOffset(
      offset,
      `hosts.${name}`,
      `duplicate host name "${name}"${seen}: host names must be unique within hosts`,
      'rename one of the hosts, or merge their settings into one entry',
    )
  }
  const label = name === undefined ? 'duplicate key' : `duplicate key "${name}"`
  return locator.issueAtOffset(offset, '', `${label}${seen}: a key may appear only once in a mapping`, 'remove or rename one of them')
}
