import { databaseDumpCommand, pgDumpArgs } from '../../src/synapse/backup/database-dump.js'
import { pythonScript } from '../../src/core/python-script.js'
import { sh, type ShellCommand } from '../../src/core/shell.js'
import { HOMESERVER_YAML, SYNAPSE_CONF_D, SYNAPSE_PYTHON } from '../../src/synapse/paths.js'

/**
 * The dump (src/backup/database-dump.ts, the one definition) into a 0600 file beside its final name,
 * then renamed: a cut run never leaves a truncated dump. A local Postgres is dumped as its superuser
 * (peer authentication); a remote one with Synapse's own credentials, read from the live configuration
 * by Synapse's Python and handed to pg_dump in its environment (needs pg_dump on this host).
 */
const REMOTE_DUMP_PY = `
import glob, os, sys, yaml
cfg = {}
for p in sys.argv[1:2] + sorted(glob.glob(sys.argv[2] + '/*.yaml')):
    with open(p) as f:
        cfg.update(yaml.safe_load(f) or {})
a = cfg['database']['args']
env = dict(os.environ, PGHOST=str(a.get('host', 'localhost')), PGPORT=str(a.get('port', 5432)), PGUSER=str(a['user']), PGPASSWORD=str(a.get('password', '')))
os.execvpe(sys.argv[3], sys.argv[3:], env)
`

export function dumpToFile(spec: { postgresLocal: boolean; database: string }, file: string): ShellCommand {
  const partial = `${file}.partial`
  const dump = spec.postgresLocal
    ? databaseDumpCommand(spec.database)
    : pythonScript(SYNAPSE_PYTHON, REMOTE_DUMP_PY, [HOMESERVER_YAML, SYNAPSE_CONF_D, ...pgDumpArgs(spec.database)])
  return sh`mkdir -p -m 0700 ${file.replace(/\/[^/]+$/, '') || '/'} && umask 077 && ${dump} > ${partial} && mv -f ${partial} ${file} && stat -c %s ${file}`
}
