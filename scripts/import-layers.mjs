// The layer rule of docs/architecture.md, checked: node scripts/import-layers.mjs [ROOT] prints JSON and
// exits 1 on a file cycle, a folder cycle, an upward or sideways import, an unranked file or a file over
// its line ceiling. test/unit/import-layers.test.ts runs check() in the unit project (so `npm test` does).
// Every relative import of src/ and tasks/ counts: `import type`, `export … from` and `import()` too
// (a type is a dependency as well, and a lazily loaded module is still loaded).
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'

// Bottom to top. A file may import its own group or a group of a lower rank; groups of one rank do not
// import each other (facts / artifacts; one verb folder / another), except the shared files named below.
export const LAYERS = [
  ['core', 'src/core/'],
  ['ssh', 'src/ssh/'],
  ['synapse', 'src/synapse/'],
  ['inventory', 'src/inventory/'],
  ['topology', 'src/topology/'],
  ['facts', 'src/facts/', 'artifacts', 'src/artifacts/'],
  ['resources', 'src/resources/'],
  ['engine', 'src/engine/'],
  ['report', 'src/report/'],
  ['tasks', 'tasks/'],
  ['commands', 'src/commands/'],
  ['cli', 'src/cli.ts'],
]

/** Lines a file may have; more is a god file. */
export const BIG = 400
/**
 * Files over BIG today, with their line count as a ceiling: they may shrink, not grow. The package that
 * splits one deletes its entry (an entry a file no longer needs is reported too).
 */
export const BIG_CEILINGS = {}

const rankOf = (f) => {
  for (let i = 0; i < LAYERS.length; i++) for (let j = 1; j < LAYERS[i].length; j += 2) if (f.startsWith(LAYERS[i][j])) return i
  return -1
}

/** The group a file belongs to: a verb folder under src/commands, a role folder under tasks, else its layer folder. */
export function groupOf(f) {
  const p = f.split('/')
  if (f.startsWith('src/commands/') && p.length > 3) return p.slice(0, 3).join('/')
  return p.length > 2 ? p.slice(0, 2).join('/') : f
}

/** Files of a layer that its other groups may import: tasks/common and tasks/<role> (acyclic: folderCycles), src/commands/*.ts. */
const sharedWithinLayer = (from, to) =>
  (from.startsWith('tasks/') && to.startsWith('tasks/')) || (to.startsWith('src/commands/') && to.split('/').length === 3)

const lineCount = (text) => text.split('\n').length - (text.endsWith('\n') ? 1 : 0)

/** Relative specifiers of every import, re-export and import() of a TypeScript file. */
export function importsOf(text) {
  // Template literals hold shell and YAML, never an import: blank them so their quotes do not confuse the scan.
  const code = text.replace(/`(?:\\.|[^`\\])*`/g, '``')
  const found = []
  for (const m of code.matchAll(
    /^\s*(?:import|export)\s[^'"`;]*?from\s*['"](\.[^'"]+)['"]|^\s*import\s+['"](\.[^'"]+)['"]|\bimport\(\s*['"](\.[^'"]+)['"]\s*\)/gm,
  ))
    found.push(m[1] ?? m[2] ?? m[3])
  return found
}

/** Sorted strongly connected sets of more than one node. */
function cycles(nodes, next) {
  let i = 0
  const idx = new Map(),
    low = new Map(),
    stack = [],
    on = new Set(),
    out = []
  const visit = (v) => {
    ;(idx.set(v, i), low.set(v, i), i++, stack.push(v), on.add(v))
    for (const w of next(v)) {
      if (!idx.has(w)) (visit(w), low.set(v, Math.min(low.get(v), low.get(w))))
      else if (on.has(w)) low.set(v, Math.min(low.get(v), idx.get(w)))
    }
    if (low.get(v) !== idx.get(v)) return
    const c = []
    let w
    do ((w = stack.pop()), on.delete(w), c.push(w))
    while (w !== v)
    if (c.length > 1) out.push(c.sort())
  }
  for (const v of [...nodes].sort()) if (!idx.has(v)) visit(v)
  return out.sort((a, b) => a[0].localeCompare(b[0]))
}

export function check(root, { ceilings = BIG_CEILINGS } = {}) {
  const files = []
  const walk = (d) => {
    for (const n of readdirSync(d)) {
      const p = join(d, n)
      if (statSync(p).isDirectory()) walk(p)
      else if (p.endsWith('.ts') && !p.endsWith('.d.ts')) files.push(p)
    }
  }
  for (const top of ['src', 'tasks']) walk(join(root, top))
  const rel = (p) => relative(root, p).split(sep).join('/')
  const known = new Set(files.map(rel))
  const edges = new Map()
  const lines = new Map()
  for (const f of files) {
    const text = readFileSync(f, 'utf8')
    lines.set(rel(f), lineCount(text))
    const out = new Set()
    for (const s of importsOf(text)) {
      const t = rel(resolve(dirname(f), s).replace(/\.js$/, '.ts'))
      if (known.has(t)) out.add(t)
    }
    edges.set(rel(f), out)
  }
  const upward = [],
    sideways = [],
    unranked = []
  for (const [a, out] of edges) {
    if (rankOf(a) < 0) unranked.push(a)
    for (const b of out) {
      const ra = rankOf(a),
        rb = rankOf(b)
      if (ra < 0 || rb < 0) continue
      if (rb > ra) upward.push(`${a} -> ${b}`)
      else if (rb === ra && groupOf(a) !== groupOf(b) && !sharedWithinLayer(a, b)) sideways.push(`${a} -> ${b}`)
    }
  }
  const fileCycles = cycles(edges.keys(), (f) => edges.get(f))
  const groups = new Map()
  for (const [a, out] of edges) {
    const g = groupOf(a)
    if (!groups.has(g)) groups.set(g, new Set())
    for (const b of out) if (groupOf(b) !== g) groups.get(g).add(groupOf(b))
  }
  const folderCycles = cycles(groups.keys(), (g) => groups.get(g) ?? [])
  const big = []
  for (const [f, n] of [...lines].sort()) if (n > (ceilings[f] ?? BIG)) big.push(`${f}: ${n} lines (at most ${ceilings[f] ?? BIG})`)
  for (const [f, ceiling] of Object.entries(ceilings))
    if (!lines.has(f) || lines.get(f) <= BIG)
      big.push(
        `${f}: listed with a ceiling of ${ceiling} lines but ${lines.has(f) ? `has ${lines.get(f)}` : 'is gone'}: delete its entry in BIG_CEILINGS`,
      )
  return { files: files.length, fileCycles, folderCycles, upward: upward.sort(), sideways: sideways.sort(), unranked: unranked.sort(), big }
}

export const violations = (r) =>
  r.fileCycles.length + r.folderCycles.length + r.upward.length + r.sideways.length + r.unranked.length + r.big.length

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const r = check(resolve(process.argv[2] ?? '.'))
  console.log(JSON.stringify(r, null, 1))
  process.exitCode = violations(r) > 0 ? 1 : 0
}
