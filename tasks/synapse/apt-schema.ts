/**
 * The schema rules of a matrix-synapse-py3 package before it is installed: the .deb is a file, so the
 * plan reads Synapse's SCHEMA_VERSION, SCHEMA_COMPAT_VERSION and delta files from it (apt's cache, or
 * `apt-get download` into a temporary directory) and decides with schema-compat.ts, as the pip method
 * does with the wheel: a downgrade the database does not accept is refused before anything stops.
 */
import { sh, type ShellCommand } from '../../src/core/shell.js'
import type { Connection } from '../../src/ssh/connection.js'
import { SYNAPSE_PACKAGE, upstreamOf } from './apt-package.js'
import type { CodeSchema } from './schema-compat.js'
import { knownUpdatesCommand, parseCodeSchema, parseKnownUpdates, type KnownUpdates } from './schema-probe.js'

/**
 * Reads the package's data tar (dpkg-deb --fsys-tarfile) from stdin in one pass; argv[1] is the
 * upstream version. Prints the JSON of schema-probe.ts's CODE_SCHEMA_PY. SCHEMA_COMPAT_VERSION spans
 * lines with comments in the source: read as a syntax tree, not by grep.
 */
export const DEB_SCHEMA_PY = `
import ast, json, re, sys, tarfile
prefix = re.compile(r'^\\./opt/venvs/matrix-synapse/lib/python3\\.\\d+/site-packages/')
vals, deltas = {}, set()
with tarfile.open(fileobj=sys.stdin.buffer, mode='r|*') as tar:
    for m in tar:
        if not prefix.match(m.name):
            continue
        rel = prefix.sub('', m.name)
        d = re.match(r'synapse/storage/schema/(?:common|main|state)/delta/(\\d+)/([^/]+)$', rel)
        if d and m.isfile():
            deltas.add(d.group(1) + '/' + d.group(2))
        elif rel == 'synapse/storage/schema/__init__.py':
            for node in ast.parse(tar.extractfile(m).read().decode()).body:
                if isinstance(node, ast.Assign):
                    for t in node.targets:
                        if isinstance(t, ast.Name) and t.id in ('SCHEMA_VERSION', 'SCHEMA_COMPAT_VERSION'):
                            vals[t.id] = ast.literal_eval(node.value)
print(json.dumps({'version': sys.argv[1], 'schemaVersion': vals['SCHEMA_VERSION'], 'compatVersion': vals['SCHEMA_COMPAT_VERSION'], 'deltas': sorted(deltas)}))
`

/** The package file of `debVersion` into $f: apt keeps every installed one in its cache; else downloaded into $d, owned by _apt (apt fetches sandboxed). */
function debFile(debVersion: string): ShellCommand {
  const cached = `/var/cache/apt/archives/${SYNAPSE_PACKAGE}_${debVersion.replace(/:/g, '%3a')}_`
  return sh`f=; for c in ${cached}*.deb; do [ -f "$c" ] && f=$c; done; if [ -z "$f" ]; then chown _apt "$d" 2>/dev/null; (cd "$d" && apt-get download -q ${`${SYNAPSE_PACKAGE}=${debVersion}`} >/dev/null) || exit 1; for c in "$d"/*.deb; do f=$c; done; fi`
}

/**
 * The package file of `debVersion` piped through DEB_SCHEMA_PY. Reads, writes nothing that stays: the
 * temporary directory goes on exit.
 */
export function debSchemaCommand(debVersion: string): ShellCommand {
  return sh`d=$(mktemp -d) && trap 'rm -rf "$d"' EXIT && ${debFile(debVersion)}; dpkg-deb --fsys-tarfile "$f" | python3 -c ${DEB_SCHEMA_PY} ${upstreamOf(debVersion)}`
}

export async function readDebSchema(conn: Connection, debVersion: string): Promise<CodeSchema> {
  const r = await conn.run(debSchemaCommand(debVersion), {
    timeoutMs: 600_000,
    what: `reading the schema versions of ${SYNAPSE_PACKAGE} ${debVersion} from its package file`,
  })
  return parseCodeSchema(r.stdout)
}

/**
 * What a rollback to the package `debVersion` needs of its code, before it is installed: its schema
 * rules and the background update names it registers (its synapse/ source unpacked into a temporary
 * directory that goes on exit; read by schema-probe.ts's parser with the host's python3).
 */
export async function readDebCode(conn: Connection, debVersion: string): Promise<{ code: CodeSchema; known: KnownUpdates }> {
  const unpack = sh`mkdir "$d/x" && dpkg-deb --fsys-tarfile "$f" | tar -x -C "$d/x" --wildcards ${'./opt/venvs/matrix-synapse/lib/python3*/site-packages/synapse/*.py'} && cd "$d"/x/opt/venvs/matrix-synapse/lib/python3*/site-packages`
  const r = await conn.run(
    sh`d=$(mktemp -d) && trap 'rm -rf "$d"' EXIT && ${debFile(debVersion)}; dpkg-deb --fsys-tarfile "$f" | python3 -c ${DEB_SCHEMA_PY} ${upstreamOf(debVersion)} && ${unpack} && ${knownUpdatesCommand('python3', '.')}`,
    {
      timeoutMs: 600_000,
      what: `reading the schema rules and background updates of ${SYNAPSE_PACKAGE} ${debVersion} from its package file`,
    },
  )
  const [schemaLine, knownLine] = r.stdout.trim().split('\n').slice(-2)
  return { code: parseCodeSchema(schemaLine!), known: parseKnownUpdates(knownLine!) }
}
