import { debPackages } from '../../src/facts/packages.js'
import type { Task, TaskContext } from '../../src/engine/task.js'
import { minimumPostgresFor } from '../../src/synapse/compat.js'
import { MAS_DATABASE, MAS_DB_USER } from '../../src/synapse/paths.js'
import { aptPackages } from '../../src/resources/apt-packages.js'
import { file } from '../../src/resources/file.js'
import { postgresDatabase, postgresRole } from '../../src/resources/postgres.js'
import { service } from '../../src/resources/systemd-service.js'
import { sh } from '../../src/core/shell.js'
import { minimumDisk, portAvailable, supportedTarget, targetOf } from '../common/checks.js'
import { firewallResources } from '../common/firewall.js'
import { hostCidr, remoteClients } from '../common/topology.js'
import { renderPgHba, renderPostgresListen } from './templates.js'

/** The Postgres major this host runs: the installed server, else postgres.version, else the distribution's default. */
export function postgresMajor(ctx: TaskContext): number {
  const installed = [...ctx.facts.get(debPackages).keys()]
    .map((p) => /^postgresql-(\d+)$/.exec(p)?.[1])
    .filter(Boolean)
    .map(Number)
  if (installed.length) return Math.max(...installed)
  if (ctx.host.vars.postgres.version) return ctx.host.vars.postgres.version
  return distributionPostgres(ctx)
}

function distributionPostgres(ctx: TaskContext): number {
  const target = targetOf(ctx.os)
  if (!target) throw new Error(`no known Postgres version for ${ctx.os.prettyName}`)
  return target.defaultPostgres
}

export const postgresTask: Task = {
  name: 'postgres',
  title: 'PostgreSQL server, Synapse role and database',
  before: (ctx) => [
    supportedTarget,
    minimumDisk('/var/lib', 1024),
    portAvailable(ctx.host.vars.postgres.port, ['postgres'], 'PostgreSQL'),
    {
      name: 'Postgres version available',
      evaluate: () => {
        const want = ctx.host.vars.postgres.version
        const have = postgresMajor(ctx)
        if (!want || want === have) return { ok: true, detail: `PostgreSQL ${have}` }
        if (want === distributionPostgres(ctx)) return { ok: true, detail: `PostgreSQL ${want}` }
        return {
          ok: false,
          detail: `postgres.version is ${want}, but this host ${have === distributionPostgres(ctx) ? `would get ${have} from ${ctx.os.prettyName}` : `runs PostgreSQL ${have}`}: add the PostgreSQL (PGDG) apt repository first, or drop postgres.version`,
        }
      },
    },
    {
      name: 'Postgres new enough for Synapse',
      evaluate: () => {
        const need = minimumPostgresFor(ctx.host.vars.synapse.version)
        const have = postgresMajor(ctx)
        return have >= need
          ? { ok: true, detail: `PostgreSQL ${have}` }
          : {
              ok: false,
              detail: `this host would run PostgreSQL ${have}, but Synapse ${ctx.host.vars.synapse.version ?? '(latest)'} needs ${need} or newer: pin an older synapse.version, or use a newer OS (e.g. Debian 12 ships 15)`,
            }
      },
    },
  ],
  resources(ctx) {
    const pg = ctx.host.vars.postgres
    const major = postgresMajor(ctx)
    const etc = `/etc/postgresql/${major}/main`
    const clients = remoteClients(ctx, 'postgres')
    const listen = clients.length ? ['localhost', ctx.host.privateAddress] : ['localhost']
    const masHere = ctx.inventory.hosts.some((h) => h.roles.includes('mas') && h.vars.postgres.host === ctx.host.name)
    const clientRules = [
      { database: pg.database, user: pg.user, address: '127.0.0.1', method: 'scram-sha-256' as const },
      { database: pg.database, user: pg.user, address: '::1', method: 'scram-sha-256' as const },
      // MAS (role mas, on this host: tasks/mas) has its own role and database.
      ...(masHere ? [{ database: MAS_DATABASE, user: MAS_DB_USER, address: '127.0.0.1', method: 'scram-sha-256' as const }] : []),
      ...clients.map((h) => ({ database: pg.database, user: pg.user, address: h.privateAddress, method: 'scram-sha-256' as const })),
    ]
    return [
      // The distribution's server (the `postgresql` metapackage), or the version pinned in the inventory.
      aptPackages({
        packages: [major === distributionPostgres(ctx) ? 'postgresql' : `postgresql-${major}`],
        provides: { units: ['postgresql.service'], paths: [etc] },
      }),
      file({
        path: `${etc}/conf.d/matrix-provision.conf`,
        content: renderPostgresListen(listen, pg.port),
        owner: 'postgres',
        group: 'postgres',
        mode: 0o644,
      }),
      file({ path: `${etc}/pg_hba.conf`, content: renderPgHba(clientRules), owner: 'postgres', group: 'postgres', mode: 0o640 }),
      service({ unit: 'postgresql.service', watch: [`${etc}/conf.d/`, `${etc}/pg_hba.conf`, `${etc}/postgresql.conf`] }),
      postgresRole({ name: pg.user, password: ctx.secret(pg.password) }),
      postgresDatabase({ name: pg.database, owner: pg.user }),
      ...(masHere
        ? [
            postgresRole({ name: MAS_DB_USER, password: ctx.secret(ctx.host.vars.mas.databasePassword) }),
            postgresDatabase({ name: MAS_DATABASE, owner: MAS_DB_USER }),
          ]
        : []),
      ...(clients.length
        ? firewallResources(
            'postgres',
            pg.port,
            clients.map((h) => h.privateAddress),
          )
        : []),
    ]
  },
  after(ctx) {
    const pg = ctx.host.vars.postgres
    const password = ctx.secret(pg.password)
    return [
      {
        name: `login as ${pg.user} over TCP; database ${pg.database} is UTF8 with C collation`,
        async run(conn) {
          // The password goes into a 0600 passfile through stdin: never on a command line.
          const r = await conn.run(
            sh`f=$(mktemp); trap 'rm -f "$f"' EXIT; cat > "$f"; PGPASSFILE="$f" psql -X -A -t -h 127.0.0.1 -p ${pg.port} -U ${pg.user} -d ${pg.database} -c "SELECT pg_encoding_to_char(encoding)||'/'||datcollate||'/'||datctype FROM pg_database WHERE datname = current_database()"`,
            {
              stdin: `127.0.0.1:${pg.port}:${pg.database}:${pg.user}:${password.reveal().replace(/([:\\])/g, '\\$1')}\n`,
              allowFailure: true,
            },
          )
          if (r.code !== 0) return { ok: false, detail: `cannot log in as ${pg.user}: ${r.stderr.trim()}` }
          return r.stdout.trim() === 'UTF8/C/C'
            ? { ok: true, detail: 'UTF8/C/C' }
            : { ok: false, detail: `database ${pg.database} is ${r.stdout.trim()}, expected UTF8/C/C` }
        },
      },
    ]
  },
}

export { hostCidr }
