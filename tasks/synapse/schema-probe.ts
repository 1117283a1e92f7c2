import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { controller$ } from '../../src/artifacts/controller-shell.js'
import { pythonScript } from '../../src/core/python-script.js'
import type { ShellCommand } from '../../src/core/shell.js'
import type { CodeSchema, DatabaseSchema } from './schema-compat.js'

/**
 * Reads SCHEMA_VERSION, SCHEMA_COMPAT_VERSION and the delta file names of a Synapse release without
 * importing it (importing runs Synapse's start-up checks): from an installed package (no argument) or
 * from a wheel (argument: its path, read as a zip on the controller).
 */
const CODE_SCHEMA_PY = `
import ast, json, os, re, sys, zipfile
if len(sys.argv) > 1:
    z = zipfile.ZipFile(sys.argv[1]); names = z.namelist(); read = lambda p: z.read(p).decode()
    version = re.search(r'matrix_synapse-([^-]+)-', os.path.basename(sys.argv[1])).group(1)
else:
    import importlib.util, importlib.metadata
    root = os.path.dirname(list(importlib.util.find_spec('synapse').submodule_search_locations)[0])
    base = os.path.join(root, 'synapse', 'storage', 'schema')
    names = [os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(base) for f in fs]
    read = lambda p: open(os.path.join(root, p)).read()
    version = importlib.metadata.version('matrix-synapse')
vals = {}
for node in ast.parse(read('synapse/storage/schema/__init__.py')).body:
    if isinstance(node, ast.Assign):
        for t in node.targets:
            if isinstance(t, ast.Name) and t.id in ('SCHEMA_VERSION', 'SCHEMA_COMPAT_VERSION'):
                vals[t.id] = ast.literal_eval(node.value)
deltas = set()
for n in names:
    m = re.match(r'synapse/storage/schema/(?:common|main|state)/delta/(\\d+)/([^/]+)$', n.replace(os.sep, '/'))
    if m: deltas.add(m.group(1) + '/' + m.group(2))
print(json.dumps({'version': version, 'schemaVersion': vals['SCHEMA_VERSION'], 'compatVersion': vals['SCHEMA_COMPAT_VERSION'], 'deltas': sorted(deltas)}))
`

/**
 * The database's schema state, read with the credentials of Synapse's live configuration (merged as
 * Synapse merges it: homeserver.yaml, then conf.d/*.yaml in order), so the password never leaves the host.
 */
const DATABASE_SCHEMA_PY = `
import glob, json, sys, yaml, psycopg2
cfg = {}
for p in sys.argv[1:2] + sorted(glob.glob(sys.argv[2] + '/*.yaml')):
    with open(p) as f:
        cfg.update(yaml.safe_load(f) or {})
a = dict(cfg['database']['args'])
if 'database' in a: a['dbname'] = a.pop('database')
conn = psycopg2.connect(**{k: v for k, v in a.items() if k in ('user', 'password', 'dbname', 'host', 'port', 'sslmode')})
cur = conn.cursor()
cur.execute("SELECT to_regclass('schema_version') IS NOT NULL")
if not cur.fetchone()[0]:
    print('null'); sys.exit(0)
cur.execute('SELECT version, upgraded FROM schema_version'); version, upgraded = cur.fetchone()
cur.execute('SELECT compat_version FROM schema_compat_version'); row = cur.fetchone()
cur.execute('SELECT version, file FROM applied_schema_deltas WHERE version >= %s', (version,))
applied = sorted(f for _, f in cur.fetchall())
cur.execute('SELECT update_name FROM background_updates ORDER BY ordering, update_name')
updates = [r[0] for r in cur.fetchall()]
cur.execute('SELECT pg_database_size(current_database())')
print(json.dumps({'version': version, 'upgraded': bool(upgraded), 'compatVersion': row[0] if row else None, 'appliedDeltas': applied, 'sizeBytes': cur.fetchone()[0], 'backgroundUpdates': updates}))
`

/**
 * The background update names a Synapse release registers, read from its source without importing it
 * (the handlers are registered by the data stores' constructors, which need a homeserver and a
 * database). Every register_background_*(name, ...) call in synapse/storage is found in the syntax
 * tree; the name is a literal, a module constant, or a class constant (Class.NAME, self.NAME) defined
 * anywhere in synapse/. A grep would miss the constants (1.158.0: 140 calls, a third through them). A
 * name this cannot resolve counts as unknown: the rollback then restores or refuses rather than
 * switching plainly, the safe side. 'unresolved' says how many calls that was.
 */
const KNOWN_UPDATES_PY = `
import ast, json, os, re, sys, importlib.util
# argv[1]: a directory holding synapse/ (a package file's unpacked source), else the running Python's Synapse
root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(list(importlib.util.find_spec('synapse').submodule_search_locations)[0])
base = os.path.join(root, 'synapse')
class_consts, module_consts, calls = {}, {}, []
def strings(body):
    for b in body:
        if isinstance(b, ast.Assign) and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str):
            for t in b.targets:
                if isinstance(t, ast.Name): yield t.id, b.value.value
class V(ast.NodeVisitor):
    def __init__(self, module, storage): self.module, self.storage, self.cls = module, storage, []
    def visit_ClassDef(self, node):
        for k, v in strings(node.body): class_consts.setdefault((node.name, k), v)
        self.cls.append(node.name); self.generic_visit(node); self.cls.pop()
    def visit_Call(self, node):
        f = node.func
        if self.storage and isinstance(f, ast.Attribute) and re.match(r'register_(noop_)?background_', f.attr):
            arg = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == 'update_name'), None)
            calls.append((arg, self.cls[-1] if self.cls else None, self.module))
        self.generic_visit(node)
for d, _, fs in os.walk(base):
    for f in fs:
        if f.endswith('.py'):
            p = os.path.join(d, f)
            tree = ast.parse(open(p, encoding='utf-8').read())
            module_consts[p] = dict(strings(tree.body))
            V(p, os.path.join(base, 'storage') in p).visit(tree)
names, unresolved = set(), 0
for arg, cls, module in calls:
    v = None
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str): v = arg.value
    elif isinstance(arg, ast.Name): v = module_consts[module].get(arg.id)
    elif isinstance(arg, ast.Attribute) and isinstance(arg.value, ast.Name):
        v = class_consts.get((cls if arg.value.id == 'self' else arg.value.id, arg.attr))
    if v is None: unresolved += 1
    else: names.add(v)
print(json.dumps({'names': sorted(names), 'calls': len(calls), 'unresolved': unresolved}))
`

export interface KnownUpdates {
  names: string[]
  calls: number
  unresolved: number
}

/** The update names of the Synapse `python` imports, or (root) of the synapse/ source under that directory. */
export function knownUpdatesCommand(python: string, root?: string): ShellCommand {
  return pythonScript(python, KNOWN_UPDATES_PY, root === undefined ? [] : [root])
}

export function parseKnownUpdates(stdout: string): KnownUpdates {
  const v = JSON.parse(stdout.trim().split('\n').pop()!) as KnownUpdates
  if (!Array.isArray(v.names) || typeof v.calls !== 'number')
    throw new Error(`unexpected background update probe output: ${stdout.slice(0, 200)}`)
  return v
}

export function codeSchemaCommand(python: string): ShellCommand {
  return pythonScript(python, CODE_SCHEMA_PY)
}

export function databaseSchemaCommand(python: string, homeserverYaml: string, confD: string): ShellCommand {
  return pythonScript(python, DATABASE_SCHEMA_PY, [homeserverYaml, confD])
}

export function parseCodeSchema(stdout: string): CodeSchema {
  const v = JSON.parse(stdout.trim().split('\n').pop()!) as CodeSchema
  if (typeof v.schemaVersion !== 'number' || typeof v.compatVersion !== 'number' || !Array.isArray(v.deltas))
    throw new Error(`unexpected schema probe output: ${stdout.slice(0, 200)}`)
  return v
}

export function parseDatabaseSchema(stdout: string): DatabaseSchema | null {
  return JSON.parse(stdout.trim().split('\n').pop()!) as DatabaseSchema | null
}

/**
 * The schema rules of the matrix_synapse wheel in a controller wheelhouse (the dry run knows them before
 * the venv exists). Asked only by a plan that changes version (zx and python3 load then, not on every run).
 */
export async function codeSchemaOfWheelhouse(dir: string): Promise<CodeSchema | undefined> {
  const wheel = readdirSync(dir).find((f) => /^matrix_synapse-\d.*\.whl$/.test(f))
  if (!wheel) return undefined
  const $ = await controller$()
  const r = await $`python3 -c ${CODE_SCHEMA_PY} ${join(dir, wheel)}`.nothrow()
  // No python3 here or not a readable wheel: the plan then says the backup is decided after the install.
  if (r.exitCode !== 0) return undefined
  return parseCodeSchema(r.stdout)
}
