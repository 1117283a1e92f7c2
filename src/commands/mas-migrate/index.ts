/**
 * `provision mas-migrate`: move an existing homeserver's users onto the Matrix Authentication Service
 * with MAS's own syn2mas, in the order MAS's docs give (backup, check, dry run, Synapse stopped, migrate,
 * switch). --dry-run prints the procedure and the install plan and changes nothing. A run that finds the
 * users already in MAS resumes at the switch; one that finds Synapse on MAS does nothing.
 */
import { acquireLock } from '../../engine/lock.js'
import type { HostSpec } from '../../inventory/types.js'
import { raw, sh } from '../../core/shell.js'
import type { Connection } from '../../ssh/connection.js'
import { HOMESERVER_YAML, SYNAPSE_CONF_D } from '../../synapse/paths.js'
import { masPublicBase, MAS_UNIT } from '../../../tasks/mas/templates.js'
import { syn2masCommand, syn2masOutcome, unsupportedAuth, type Syn2masStep } from '../../../tasks/mas/syn2mas.js'
import { masSwitchState } from '../../../tasks/synapse/mas-lockout.js'
import { openRun, type RunContext } from '../run-context.js'
import { runTasks } from '../run-tasks.js'
import { EXIT, UsageError, type Verb, type VerbInput } from '../verb.js'
import { migrationSteps, renderSteps } from './procedure.js'

export const run: Verb = async (input) => {
  if (input.values.json) throw new UsageError('mas-migrate prints its procedure as text; --json is not supported')
  const ctx = await openRun(input)
  try {
    return await migrate(input, ctx)
  } finally {
    ctx.log.close()
  }
}

const SYNAPSE_UNITS = raw`systemctl list-units --state=active --plain --no-legend 'matrix-synapse.service' 'matrix-synapse-worker@*.service' | awk '{print $1}'`

async function readConfigFiles(conn: Connection): Promise<{ path: string; text: string }[]> {
  const r = await conn.run(
    sh`for f in ${HOMESERVER_YAML} ${SYNAPSE_CONF_D}/*.yaml; do [ -e "$f" ] && printf '\n@@MP-FILE %s\n' "$f" && cat "$f"; done; true`,
    {
      what: "read Synapse's config files",
    },
  )
  return r.stdout
    .split('\n@@MP-FILE ')
    .slice(1)
    .map((chunk) => ({ path: chunk.slice(0, chunk.indexOf('\n')), text: chunk.slice(chunk.indexOf('\n') + 1) }))
}

async function migrate(input: VerbInput, ctx: RunContext): Promise<number> {
  const { values, io } = input
  const masHosts = ctx.inventory.hosts.filter((h) => h.roles.includes('mas'))
  if (masHosts.length !== 1)
    throw new UsageError(
      `mas-migrate: give exactly one host of ${ctx.inventory.file} the mas role, beside synapse (found ${masHosts.map((h) => h.name).join(', ') || 'none'})`,
    )
  const host: HostSpec = masHosts[0]!
  const v = host.vars
  const to = values.to ?? 'backups'
  const dry = values['dry-run'] === true
  const steps = migrationSteps({ host: host.name, to, serverName: v.serverName, issuer: masPublicBase(v) })
  const say = (text: string) => io.out(text + '\n')

  // 1. Preflight: read-only.
  const refusals: string[] = []
  if (!host.roles.includes('synapse')) refusals.push(`${host.name} has the mas role but not synapse: MAS runs beside Synapse`)
  if (v.postgres.host !== host.name)
    refusals.push(`Synapse's database is on ${v.postgres.host}: mas-migrate needs PostgreSQL on ${host.name} (as the mas role does)`)
  const remoteWorkers = ctx.loaded.hosts.filter(
    (h) => h.name !== host.name && h.roles.includes('workers') && h.vars.serverName === v.serverName,
  )
  if (remoteWorkers.length)
    refusals.push(
      `workers of ${v.serverName} run on ${remoteWorkers.map((h) => h.name).join(', ')}: mas-migrate stops the Synapse processes of one host only`,
    )
  const conn = await ctx.connect(host, { echo: false })
  let state: string
  try {
    const fact = masSwitchState(v.postgres.database)
    const r = await conn.run(fact.command, { what: 'read whether Synapse is on MAS and how many users it has' })
    state = fact.parse(r.stdout, r.code ?? -1)
    if (state !== 'on') refusals.push(...unsupportedAuth(await readConfigFiles(conn)))
  } finally {
    await conn.close()
  }
  if (state === 'on') {
    say(`${host.name}: Synapse already hands logins to MAS: nothing to move, no changes.`)
    return EXIT.ok
  }
  if (state === 'fresh' || state === '0') {
    say(
      `${host.name}: ${state === 'fresh' ? 'no Synapse installed yet' : 'Synapse has no users'}: nothing to move; provision apply installs MAS with the rest. No changes.`,
    )
    return EXIT.ok
  }
  if (state === 'unknown') refusals.push(`could not count Synapse's users in database ${v.postgres.database} on ${host.name}`)
  const resume = state === 'migrated'
  say(
    `provision mas-migrate${dry ? ' --dry-run' : ''}: ${v.serverName} on ${host.name} onto the Matrix Authentication Service (${masPublicBase(v)})`,
  )
  say(
    resume
      ? "  Synapse's users are already in MAS's database (an earlier run moved them): only the switch is left."
      : `  ${state} local users to move.`,
  )
  say('Procedure:\n' + renderSteps(resume ? steps.filter((s) => s.id === 'switch') : steps))
  if (refusals.length) {
    io.err(`provision mas-migrate: refused, nothing changed:\n${refusals.map((r) => `  - ${r}`).join('\n')}\n`)
    return EXIT.hostFailed
  }
  const installRoles = ctx.roles.filter((r) => r === 'postgres' || r === 'mas')
  if (dry) {
    if (!resume) {
      say('\nStep 3 (install MAS), planned:')
      const rc = await runTasks(input, { ...ctx, roles: installRoles }, { mode: 'dry-run' })
      if (rc !== EXIT.ok) return rc
    }
    say('\nDry run: nothing was changed (syn2mas check and its dry run need MAS installed: they run in steps 4 and 5).')
    return EXIT.ok
  }

  if (!resume) {
    say(`\nStep 2: backup into ${to}`)
    const backup = await input.provision(
      [
        'backup',
        '--inventory',
        values.inventory!,
        '--limit',
        host.name,
        '--to',
        to,
        ...(values['encrypt-to'] ?? []).flatMap((k) => ['--encrypt-to', k]),
      ],
      io,
    )
    if (backup !== EXIT.ok) {
      io.err('provision mas-migrate: the backup failed: stopped before anything changed.\n')
      return EXIT.hostFailed
    }
    say('\nStep 3: install MAS beside Synapse')
    const installed = await runTasks(input, { ...ctx, roles: installRoles }, { mode: 'apply' })
    if (installed !== EXIT.ok) {
      io.err('provision mas-migrate: installing MAS failed: Synapse was not touched and still serves logins.\n')
      return installed
    }
    const moved = await syn2masSteps(host, ctx, say, io.err)
    if (!moved) return EXIT.hostFailed
  }
  say('\nStep 8 [one-way]: switch Synapse and Apache to MAS (provision apply)')
  const switched = await runTasks(input, ctx, { mode: 'apply' })
  if (switched !== EXIT.ok) {
    io.err(
      "provision mas-migrate: the switch failed (see above). The users are in MAS's database: fix what the run names and run provision mas-migrate (or apply) again; it resumes here.\n",
    )
    return switched
  }
  say(`\n${host.name}: ${v.serverName} now logs in through MAS (${masPublicBase(v)}).`)
  return EXIT.ok
}

/** Steps 4-7 under the host's lock: check, dry run, stop, migrate. False when refused or failed (said why). */
async function syn2masSteps(host: HostSpec, ctx: RunContext, say: (t: string) => void, err: (t: string) => void): Promise<boolean> {
  const conn = await ctx.connect(host, { echo: false })
  const lock = await acquireLock(conn)
  try {
    const step = async (n: number, s: Syn2masStep) => {
      say(`\nStep ${n}: mas-cli syn2mas ${s === 'check' ? 'check' : s === 'dry-run' ? 'migrate --dry-run' : 'migrate'}`)
      const t0 = Date.now()
      const r = await conn.run(syn2masCommand(s), { allowFailure: true, timeoutMs: 3_600_000 })
      const output = r.stdout + r.stderr
      const outcome = syn2masOutcome(r.code ?? -1, output)
      for (const w of outcome.warnings) say(`  warning: ${w}`)
      for (const line of output.split('\n').filter((l) => /\bmigrated\b|completed successfully/i.test(l)))
        say(`  ${line.replace(/^.*?INFO\s+\S+\s*/, '').trim()}`)
      say(`  exit ${r.code}, ${((Date.now() - t0) / 1000).toFixed(1)} s`)
      if (outcome.verdict !== 'go')
        err(
          `provision mas-migrate: syn2mas ${s} ${outcome.verdict === 'refused' ? 'refused' : 'failed'}:\n${outcome.errors.map((e) => `  - ${e}`).join('\n')}\n`,
        )
      return outcome.verdict === 'go'
    }
    if (!(await step(4, 'check')) || !(await step(5, 'dry-run'))) {
      err('Synapse was not touched and still serves logins; MAS is installed with an empty database.\n')
      return false
    }
    say('\nStep 6: stop every Synapse process and MAS (downtime starts)')
    const running = (await conn.run(SYNAPSE_UNITS, { what: 'list the running Synapse units' })).stdout.trim().split('\n').filter(Boolean)
    await conn.run(sh`systemctl stop ${MAS_UNIT} ${[...running].reverse()}`, { what: 'stop Synapse and MAS', timeoutMs: 300_000 })
    say(`  stopped ${[MAS_UNIT, ...running].join(', ')}`)
    if (await step(7, 'migrate')) return true
    // Nothing switched: Synapse comes back on its old config; MAS's database may hold part of the move.
    const restarted = await conn.run(sh`systemctl start ${running} ${MAS_UNIT}`, { allowFailure: true, timeoutMs: 300_000 })
    err(
      `${restarted.code === 0 ? `Started again on the old config: ${running.join(', ')}` : `COULD NOT START ${running.join(', ')} again (systemctl exit ${restarted.code}): start them by hand`}. MAS's database may hold part of the move: empty it (runuser -u postgres -- dropdb mas; provision apply --tasks postgres,mas recreates it) before running mas-migrate again.\n`,
    )
    return false
  } finally {
    await lock.release().catch(() => undefined)
    await conn.close()
  }
}
