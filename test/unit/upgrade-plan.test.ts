import { describe, expect, it } from 'vitest'
import { Prediction } from '../../src/resources/resource.js'
import { renderReport } from '../../src/report/text.js'
import { checked, type Connection, type RunOptions } from '../../src/ssh/connection.js'
import { sh } from '../../src/core/shell.js'
import {
  aptCandidate,
  aptSourceFact,
  packageInstallCommand,
  parseAptSource,
  parseMadison,
  upstreamOf,
  type Candidate,
} from '../../tasks/synapse/apt-package.js'
import { synapseRelease } from '../../tasks/synapse/release.js'
import { carryPlan, releasePlanOf } from '../../tasks/synapse/release/steps.js'
import { codeSchemaFact, dumpPath } from '../../tasks/synapse/release/facts.js'
import { isVenvOf, rebuiltVenv, venvsToPrune } from '../../tasks/synapse/venv-rebuild.js'
import { compareReleases } from '../../src/synapse/compat.js'
import {
  canRun,
  pendingDeltas,
  rollbackWindow,
  schemaChange,
  type CodeSchema,
  type DatabaseSchema,
} from '../../tasks/synapse/schema-compat.js'
import {
  dbAt158,
  debHost,
  facts,
  installs,
  lock163,
  noConn,
  planOf,
  spec,
  UPGRADE_STATE,
  v158,
  v163,
  venvListing,
} from './fixtures/release.js'

describe('schema compatibility (Synapse prepare_database rules)', () => {
  it('counts delta files, not only the version: 1.158.0 -> 1.163.2 changes the schema at the same SCHEMA_VERSION', () => {
    expect(pendingDeltas(dbAt158, v163)).toEqual([
      '94/01_state_groups_persisting_inserted_ts.sql.postgres',
      '94/07_profile_updates.sql',
      '94/07_profile_updates_seq.sql.postgres',
      '94/11_destination_room_sticky_events.sql',
    ])
    expect(schemaChange(dbAt158, v163)).toMatchObject({ changes: true, versionBump: false })
    expect(schemaChange(dbAt158, v158)).toEqual({ changes: false, pending: [], versionBump: false })
  })

  it('a version bump changes the schema even without files; deltas of the current version run only when it was not fully upgraded', () => {
    const at93 = { ...dbAt158, version: 93, appliedDeltas: [] }
    expect(schemaChange(at93, { ...v158, deltas: [] })).toMatchObject({ changes: true, versionBump: true })
    expect(pendingDeltas({ ...at93, upgraded: false }, v158)).toEqual([
      '94/01_redactions_recheck.sql',
      '94/07_sliding_sync_lazy_members_position_index.sql',
    ])
    expect(pendingDeltas(at93, v158)).toEqual([
      '93/01_x.sql',
      '94/01_redactions_recheck.sql',
      '94/07_sliding_sync_lazy_members_position_index.sql',
    ])
  })

  it('a fresh database has nothing to back up', () => {
    expect(schemaChange(null, v163).changes).toBe(false)
    expect(canRun(null, v158).ok).toBe(true)
  })

  it('older code runs while schema_compat_version <= its SCHEMA_VERSION; refused when the database is too new', () => {
    expect(canRun(dbAt158, v158).ok).toBe(true)
    const bumped = { ...dbAt158, compatVersion: 95 }
    expect(canRun(bumped, v158)).toEqual({
      ok: false,
      reason: "the database's schema_compat_version is 95, newer than Synapse 1.158.0 understands (its SCHEMA_VERSION is 94)",
    })
  })

  it('the rollback window: closed when the new code raises schema_compat_version past the old SCHEMA_VERSION', () => {
    expect(rollbackWindow(dbAt158, v158, v163).ok).toBe(true)
    const v200: CodeSchema = { version: '1.200.0', schemaVersion: 97, compatVersion: 95, deltas: [] }
    expect(rollbackWindow(dbAt158, v158, v200)).toEqual({
      ok: false,
      reason: 'after 1.200.0 starts, schema_compat_version is 95 > 94 (SCHEMA_VERSION of 1.158.0): going back needs the backup',
    })
    // compat never goes down: a database already at 95 stays closed for 1.158.0 whatever starts next.
    expect(rollbackWindow({ ...dbAt158, compatVersion: 95 }, v158, v163).ok).toBe(false)
  })

  it('versions compare numerically, rc before the release', () => {
    expect(compareReleases('1.9.0', '1.10.0')).toBe(-1)
    expect(compareReleases('1.163.2', '1.158.0')).toBe(1)
    expect(compareReleases('1.160.0rc1', '1.160.0')).toBe(-1)
    expect(compareReleases('1.160.0', '1.160.0')).toBe(0)
  })

  it('dump names are never reused; pruning keeps the active and the rollback venv first', () => {
    expect(dumpPath('/b', '1.158.0', '1.163.2', [])).toBe('/b/synapse-1.158.0-before-1.163.2.dump')
    expect(dumpPath('/b', '1.158.0', '1.163.2', ['/b/synapse-1.158.0-before-1.163.2.dump'])).toBe(
      '/b/synapse-1.158.0-before-1.163.2.2.dump',
    )
    const venvs = ['/o/c', '/o/b', '/o/a'].map((path) => ({ path }))
    expect(venvsToPrune(venvs, '/o/c', '/o/a', 2)).toEqual(['/o/b'])
    expect(venvsToPrune(venvs, '/o/c', '/o/a', 3)).toEqual([])
  })
})

describe('the plan of an upgrade', () => {
  it('is one change whose steps are the order: install, config check, backup, workers stopped, switch, main, /health, workers, after-checks, prune', async () => {
    const change = (await planOf(spec(), facts(UPGRADE_STATE, dbAt158)))!
    const report = {
      mode: 'dry-run' as const,
      inventory: 'i.yaml',
      durationMs: 10,
      totals: { add: 0, change: 1, restart: 0, failedHosts: 0, uncertain: 0 },
      hosts: [
        {
          host: 'matrix1',
          status: 'changed' as const,
          warnings: [],
          durationMs: 5,
          tasks: [{ task: 'synapse', status: 'changed' as const, changes: [change], restarts: [], checks: [], durationMs: 1 }],
        },
      ],
    }
    expect(renderReport(report, { color: false, diffs: false })).toBe(`matrix1
  synapse
    ~ upgrade Synapse 1.158.0 -> 1.163.2 side by side in /opt/venvs/matrix-synapse-1.163.2; rollback window: after 1.163.2 starts, schema_compat_version is 84 <= 94 (SCHEMA_VERSION of 1.158.0): 1.158.0 can still run
         1. install matrix-synapse[postgres,redis]==1.163.2 into /opt/venvs/matrix-synapse-1.163.2 (from the uploaded wheelhouse, offline)
         2. parse the live configuration with 1.163.2's code (/opt/venvs/matrix-synapse-1.163.2/bin/python -m synapse.config), main and every worker
         3. pg_dump -Fc (without e2e_one_time_keys_json data) to /var/backups/matrix-synapse/synapse-1.158.0-before-1.163.2.dump, and the signing key to /var/backups/matrix-synapse/synapse-1.158.0-before-1.163.2.signing.key (4 schema delta(s) pending: 94/01_state_groups_persisting_inserted_ts.sql.postgres, 94/07_profile_updates.sql, 94/07_profile_updates_seq.sql.postgres, 94/11_destination_room_sticky_events.sql)
         4. stop matrix-synapse-worker@federation_reader.service
         5. stop matrix-synapse-worker@federation_sender.service
         6. switch /opt/venvs/matrix-synapse -> /opt/venvs/matrix-synapse-1.163.2 (one atomic rename; /opt/venvs/matrix-synapse-1.158.0 stays for rollback)
         7. start matrix-synapse.service on 1.163.2 (was 1.158.0): main alone applies the schema deltas
         8. wait until main answers http://127.0.0.1:8008/health (migrations done)
         9. start matrix-synapse-worker@federation_reader.service on 1.163.2
        10. start matrix-synapse-worker@federation_sender.service on 1.163.2
        11. after-checks: /health answers
        12. remove /opt/venvs/matrix-synapse-1.150.0 (keep 2 venvs: synapse.keepVenvs)

Plan: 0 to add, 1 to change, 0 to restart.
Finished in 0.0 s.
`)
  })

  it('no pending delta: no backup step; no workers on the host: no worker steps', async () => {
    const upToDate = { ...dbAt158, appliedDeltas: v163.deltas }
    const change = (await planOf(spec({ workerUnits: [] }), facts(UPGRADE_STATE, upToDate)))!
    expect(change.steps!.map((s) => s.kind)).toEqual(['install', 'check-config', 'switch', 'start', 'wait-health', 'after-checks', 'prune'])
  })

  it('without the new code on the controller or host the backup is planned as uncertain (decided after the install)', async () => {
    const change = (await planOf(spec({ controllerCode: undefined }), facts(UPGRADE_STATE, dbAt158)))!
    expect(change.steps!.find((s) => s.kind === 'backup')).toMatchObject({
      uncertain: "the new code's schema is known only once its venv is installed: skipped if no delta is pending",
    })
    expect(change.uncertain).toBeDefined()
  })

  it('refuses a downgrade the schema does not allow, naming the backup; allows one it does', async () => {
    const state =
      'link matrix-synapse-1.163.2\nvenv 2 /opt/venvs/matrix-synapse-1.163.2\nactive 1.163.2\nfree 900000\nrecord {"active":"/opt/venvs/matrix-synapse-1.163.2","previous":"/opt/venvs/matrix-synapse-1.158.0","backup":"/var/backups/matrix-synapse/synapse-1.158.0-before-1.163.2.dump"}\n'
    const down = spec({ version: '1.158.0', controllerCode: () => Promise.resolve(v158), installAt: undefined })
    const downFacts = (db: DatabaseSchema) => {
      const f = facts(state, db, null, v163)
      f.set(codeSchemaFact('/opt/venvs/matrix-synapse-1.158.0').id, v158) // the kept venv tells its own rules
      return f
    }
    await expect(planOf(down, downFacts({ ...dbAt158, compatVersion: 95 }))).rejects.toThrow(
      "refusing the downgrade 1.163.2 -> 1.158.0: the database's schema_compat_version is 95, newer than Synapse 1.158.0 understands (its SCHEMA_VERSION is 94). Pin a version the database accepts, or restore the backup /var/backups/matrix-synapse/synapse-1.158.0-before-1.163.2.dump.",
    )
    const allowed = (await planOf(down, downFacts(dbAt158)))!
    expect(allowed.summary).toMatch(/^downgrade Synapse 1\.163\.2 -> 1\.158\.0/)
  })

  it('refuses when the backup does not fit, before anything changes', async () => {
    await expect(planOf(spec(), facts(UPGRADE_STATE.replace('free 900000', 'free 1000'), dbAt158))).rejects.toThrow(
      /not enough space for the database dump .* 1000 KiB free, the database is 11719 KiB/,
    )
  })

  it('a host on the old layout (plain directory) is moved to the versioned name first; same version: only that', async () => {
    const state = 'dir\nactive 1.158.0\nfree 900000\n'
    const same = (await planOf(spec({ version: '1.158.0', controllerCode: () => Promise.resolve(v158) }), facts(state, dbAt158)))!
    expect(same.steps!.map((s) => `${s.kind} ${s.target}`)).toEqual(['adopt /opt/venvs/matrix-synapse-1.158.0'])
    const up = (await planOf(spec(), facts(state, dbAt158)))!
    expect(up.steps!.map((s) => s.kind)).toEqual([
      'adopt',
      'install',
      'check-config',
      'backup',
      'stop',
      'stop',
      'switch',
      'start',
      'wait-health',
      'start',
      'start',
      'after-checks',
    ])
  })

  it('converged: no change; the apt method orders the package upgrade the same way, reading the schema of the candidate .deb: dump when deltas are pending, a downgrade the database refuses is refused', async () => {
    // Converged: the running venv holds its lock, so the release has nothing to do (a rebuilt -rN venv too).
    const at = (link: string) => `link ${link}\nvenv 2 /opt/venvs/matrix-synapse-1.163.2\nactive 1.163.2\nfree 9\n`
    expect(await planOf(spec({ lock: lock163 }), facts(at('matrix-synapse-1.163.2'), dbAt158, null, v163, venvListing()))).toBeNull()
    expect(await planOf(spec({ lock: lock163 }), facts(at('matrix-synapse-1.163.2-r2'), dbAt158, null, v163, venvListing()))).toBeNull()
    const aptFacts = facts('dir\nactive 1.158.0\nfree 900000\n', dbAt158)
    aptFacts.set(
      aptSourceFact.id,
      parseAptSource(
        `source\nupdate: Get:1 http://127.0.0.1:8089 bookworm InRelease [1380 B]\nmadison:  matrix-synapse-py3 | 1.163.2+bookworm1 | http://127.0.0.1:8089 bookworm/main amd64 Packages\nmadison:  matrix-synapse-py3 | 1.158.0+bookworm1 | http://127.0.0.1:8089 bookworm/main amd64 Packages\ninstalled 1.158.0+bookworm1 hi \n`,
      ),
    )
    const aptSpec = spec({
      method: 'apt',
      installAt: undefined,
      controllerCode: undefined,
      apt: { source: aptSourceFact, install: (deb) => sh`apt-get install ${`matrix-synapse-py3=${deb}`}` },
    })
    const host = debHost(v163)
    const apt = (await planOf(aptSpec, aptFacts, host))!
    // The candidate's schema is read from its package file before anything changes: known, not "uncertain".
    expect(host.read).toHaveLength(1)
    expect(host.read[0]).toContain('matrix-synapse-py3=1.163.2+bookworm1')
    expect(apt.uncertain).toBeUndefined()
    expect(apt.steps!.map((s) => `${s.kind} ${s.target}`)).toEqual([
      'backup /var/backups/matrix-synapse/synapse-1.158.0-before-1.163.2.dump',
      'stop matrix-synapse-worker@federation_reader.service',
      'stop matrix-synapse-worker@federation_sender.service',
      'apt-install matrix-synapse-py3 1.163.2+bookworm1',
      'start matrix-synapse.service',
      'wait-health http://127.0.0.1:8008/health',
      'start matrix-synapse-worker@federation_reader.service',
      'start matrix-synapse-worker@federation_sender.service',
      'after-checks homeserver',
    ])
    expect(apt.steps!.find((x) => x.kind === 'apt-install')!.summary).toContain('policy-rc.d guard')
    expect(apt.steps!.find((x) => x.kind === 'start' && x.target === 'matrix-synapse.service')!.summary).toContain(
      'restart matrix-synapse.service on 1.163.2 (was 1.158.0)',
    )
    expect(apt.steps![0]!.summary).toContain('schema delta(s) pending')

    // A downgrade: the older package's code cannot run a database a newer release marked compat 95: refused
    // in the plan, naming the dump taken before the upgrade to the running version (apt keeps no switch record).
    const down = facts(
      'dir\nactive 1.163.2\nfree 900000\ndump /var/backups/matrix-synapse/synapse-1.158.0-before-1.163.2.dump\ndump /var/backups/matrix-synapse/synapse-1.158.0-before-1.163.2.2.dump\n',
      {
        ...dbAt158,
        compatVersion: 95,
      },
    )
    down.set(aptSourceFact.id, aptFacts.get(aptSourceFact))
    down.set(codeSchemaFact('/opt/venvs/matrix-synapse-1.158.0').id, null) // apt: no versioned venv
    await expect(planOf({ ...aptSpec, version: '1.158.0' }, down, debHost(v158))).rejects.toThrow(
      "refusing the downgrade 1.163.2 -> 1.158.0: the database's schema_compat_version is 95, newer than Synapse 1.158.0 understands (its SCHEMA_VERSION is 94)",
    )
    await expect(planOf({ ...aptSpec, version: '1.158.0' }, down, debHost(v158))).rejects.toThrow(
      'or restore the backup /var/backups/matrix-synapse/synapse-1.158.0-before-1.163.2.2.dump.',
    )
    // At compat 84 the same downgrade is planned (no delta pending for the older code: no dump).
    const ok = facts('dir\nactive 1.163.2\nfree 900000\n', { ...dbAt158, appliedDeltas: v163.deltas.filter((d) => d.startsWith('94/')) })
    ok.set(aptSourceFact.id, aptFacts.get(aptSourceFact))
    ok.set(codeSchemaFact('/opt/venvs/matrix-synapse-1.158.0').id, null)
    const planned = (await planOf({ ...aptSpec, version: '1.158.0' }, ok, debHost(v158)))!
    expect(planned.summary).toContain('downgrade Synapse 1.163.2 -> 1.158.0 (apt)')
    expect(planned.steps!.map((x) => x.kind)).not.toContain('backup')
  })

  it('apt: a version the source does not offer is refused in the plan, naming what it offers; an unreadable source too', async () => {
    const aptSpec = spec({
      method: 'apt',
      version: '1.170.0',
      installAt: undefined,
      controllerCode: undefined,
      apt: { source: aptSourceFact, install: () => sh`false` },
    })
    const f = facts('dir\nactive 1.158.0\nfree 900000\n', dbAt158)
    f.set(
      aptSourceFact.id,
      parseAptSource(
        'source\nmadison: matrix-synapse-py3 | 1.163.2+bookworm1 | http://x bookworm/main amd64 Packages\nmadison: matrix-synapse-py3 | 1.158.0+bookworm1 | http://x bookworm/main amd64 Packages\ninstalled 1.158.0+bookworm1 ii \n',
      ),
    )
    await expect(planOf(aptSpec, f)).rejects.toThrow(
      'refusing to install Synapse 1.170.0 with apt: matrix-synapse-py3 1.170.0 is not in the repository (it offers 1.163.2+bookworm1, 1.158.0+bookworm1): pin one of those in synapse.version, or wait until the repository has it. Nothing was changed: Synapse 1.158.0 keeps serving.',
    )
    f.set(
      aptSourceFact.id,
      parseAptSource(
        'source\nupdate: Err:1 http://127.0.0.1:8089 bookworm InRelease\nupdate:   Could not connect to 127.0.0.1:8089 (127.0.0.1). - connect (111: Connection refused)\nupdate-failed\ninstalled 1.158.0+bookworm1 ii \n',
      ),
    )
    await expect(planOf(aptSpec, f)).rejects.toThrow(
      /apt-get update of the matrix.org source \(\/etc\/apt\/sources.list.d\/matrix-org.list\) failed: Err:1 http:\/\/127.0.0.1:8089 bookworm InRelease/,
    )
  })
})

describe('the apt source and candidate (outputs captured on a bookworm host with the real packages)', () => {
  const madison =
    ' matrix-synapse-py3 | 1.157.0+bookworm1 | http://127.0.0.1:8089 bookworm/main amd64 Packages\n matrix-synapse-py3 | 1.156.0+bookworm1 | http://127.0.0.1:8089 bookworm/main amd64 Packages\n'
  const state = (m: string, extra = '') =>
    parseAptSource(
      `source\n${m
        .split('\n')
        .filter(Boolean)
        .map((l) => `madison: ${l}`)
        .join('\n')}\n${extra}installed 1.156.0+bookworm1 hi \n`,
    )

  it('parses madison (an unknown package prints nothing, exit 0) and the installed version with its hold', () => {
    expect(parseMadison(madison)).toEqual(['1.157.0+bookworm1', '1.156.0+bookworm1'])
    expect(parseMadison('')).toEqual([])
    expect(state(madison).installed).toEqual({ version: '1.156.0+bookworm1', held: true })
    expect(parseAptSource('installed \n')).toEqual({ source: false, available: [] })
  })

  it('decides the Debian version from the repository row, refuses an absent version and an empty source, and waits for a source not written yet', () => {
    expect(aptCandidate('1.157.0', state(madison))).toEqual({ ok: true, debVersion: '1.157.0+bookworm1' })
    expect(
      aptCandidate('1.157.0', state(' matrix-synapse-py3 | 1.157.0+bookworm2 | u\n matrix-synapse-py3 | 1.157.0+bookworm1 | u\n')),
    ).toEqual({ ok: true, debVersion: '1.157.0+bookworm2' })
    const reason = (c: Candidate) => (c.ok === false ? c.reason : `not refused: ${JSON.stringify(c)}`)
    expect(reason(aptCandidate('1.158.0', state(madison)))).toContain(
      '1.158.0 is not in the repository (it offers 1.157.0+bookworm1, 1.156.0+bookworm1)',
    )
    expect(reason(aptCandidate('1.157.0', state('')))).toContain('offers no matrix-synapse-py3 at all')
    expect(aptCandidate('1.157.0', parseAptSource('installed \n'))).toMatchObject({ ok: 'unknown' })
    expect(upstreamOf('1:1.157.0+bookworm1')).toBe('1.157.0')
  })

  it('the guarded install keeps a foreign policy-rc.d, removes its own on exit and re-holds the package', () => {
    const text = packageInstallCommand('1.157.0+bookworm1', 180).text
    expect(text).toContain('--allow-downgrades --allow-change-held-packages')
    expect(text).toContain('matrix-synapse-py3=1.157.0+bookworm1 && apt-mark hold matrix-synapse-py3')
    expect(text).toContain('mv -f /usr/sbin/policy-rc.d /usr/sbin/policy-rc.d.matrix-provision-saved')
    expect(text).toMatch(/trap '.*rm -f \/usr\/sbin\/policy-rc.d/)
    expect(text).toContain('matrix-synapse|matrix-synapse.service) exit 101')
  })
})

describe('the upgrade of a homeserver spread over hosts', () => {
  const remoteWorkers = [{ host: 'w1', units: ['matrix-synapse-worker@generic.service', 'matrix-synapse-worker@media_repository.service'] }]

  it('stops the workers on the worker hosts before main switches, and leaves their start to their own host', async () => {
    const change = (await planOf(spec({ remoteWorkers }), facts(UPGRADE_STATE, dbAt158)))!
    const steps = change.steps!.map((s) => `${s.kind} ${s.target}${s.host ? ` on ${s.host}` : ''}`)
    const at = (x: string) => steps.indexOf(x)
    expect(at('stop matrix-synapse-worker@generic.service on w1')).toBeGreaterThan(
      at('stop matrix-synapse-worker@federation_sender.service'),
    )
    expect(at('stop matrix-synapse-worker@media_repository.service on w1')).toBeLessThan(at('switch /opt/venvs/matrix-synapse-1.163.2'))
    expect(steps.filter((s) => s.startsWith('start ') && s.endsWith('on w1'))).toEqual([])
    expect(change.steps!.find((s) => s.host === 'w1')!.summary).toBe(
      "stop matrix-synapse-worker@generic.service on w1 (that host's run switches it to 1.163.2 and starts it once main is up)",
    )
  })

  it("apply stops them through the run's connection to that host; a failure before the switch starts them again there", async () => {
    const calls: string[] = []
    const fakeConn = (name: string, fail?: RegExp): Connection =>
      ({
        host: name,
        run: (cmd: { text: string }, options?: RunOptions) => {
          calls.push(`${name}: ${cmd.text}`)
          const bad = fail?.test(cmd.text)
          // A failed command rejects, as the real run() does.
          return new Promise((resolve) =>
            resolve(
              checked(
                name,
                {
                  code: bad ? 1 : 0,
                  stdout: cmd.text.includes('is-active') ? 'active\n' : '',
                  stderr: bad ? 'refused' : '',
                  signal: null,
                  durationMs: 1,
                  command: cmd.text,
                  timedOut: false,
                },
                options,
              ),
            ),
          )
        },
      }) as unknown as Connection
    const main = fakeConn('hs', /synapse\.config/)
    const w1 = fakeConn('w1')
    const s = spec({ remoteWorkers, configChecks: (py) => [sh`${py} -m synapse.config`], workerUnits: [] })
    const resource = synapseRelease(s)
    const change = (await resource.plan({
      conn: noConn,
      facts: facts(UPGRADE_STATE, dbAt158, v163),
      predicted: new Prediction(),
      dryRun: true,
    }))!
    // The config check (before the switch) fails: the remote workers were not stopped yet, nothing to start.
    await expect(
      resource.apply(change, {
        conn: main,
        state: { aptListsStale: false },
        peer: async (h) => (h === 'w1' ? w1 : Promise.reject(new Error('no'))),
      }),
    ).rejects.toThrow(/rejects the live configuration/)
    expect(calls.filter((c) => c.startsWith('w1:'))).toEqual([])
    // Steps past the stops: stopping on w1 goes through w1's connection; without a peer the step fails with why.
    const plan = releasePlanOf(change)
    const stopOnly = carryPlan({ ...change }, { ...plan, steps: plan.steps.filter((x) => x.kind === 'stop') })
    await resource.apply(stopOnly, { conn: main, state: { aptListsStale: false }, peer: () => Promise.resolve(w1) })
    expect(calls.filter((c) => c.startsWith('w1:') && c.includes(' stop '))).toEqual([
      'w1: systemctl stop matrix-synapse-worker@generic.service',
      'w1: systemctl stop matrix-synapse-worker@media_repository.service',
    ])
    await expect(resource.apply({ ...stopOnly, performed: [] }, { conn: main, state: { aptListsStale: false } })).rejects.toThrow(
      /must be stopped before main switches, but this command has no connection to w1/,
    )
  })
})

describe('a running venv that drifted from its lock', () => {
  const WORKERS = ['matrix-synapse-worker@federation_reader.service', 'matrix-synapse-worker@federation_sender.service']
  const DRIFTED =
    'link matrix-synapse-1.163.2\nvenv 300 /opt/venvs/matrix-synapse-1.163.2\nvenv 200 /opt/venvs/matrix-synapse-1.158.0\nactive 1.163.2\nfree 9\n'
  const drifted = (state = DRIFTED) =>
    facts(state, dbAt158, null, v163, venvListing({ twisted: '25.5.0', txredisapi: null, requests: '2.31.0' }))

  it('rebuilds a new venv beside it and switches in the upgrade order; the plan names both venvs and the drift; the live venv is never installed into', async () => {
    const change = (await planOf(spec({ lock: lock163 }), drifted()))!
    expect(change.summary).toBe(
      'rebuild Synapse 1.163.2 side by side in /opt/venvs/matrix-synapse-1.163.2-r2 and switch to it: the running /opt/venvs/matrix-synapse-1.163.2 differs from the lock synapse-lock/1.163.2.txt (3: twisted 25.5.0 -> 26.4.0, +txredisapi 1.5.0, -requests 2.31.0) and is not changed',
    )
    expect(change.steps!.map((s) => `${s.kind} ${s.target}`)).toEqual([
      'install /opt/venvs/matrix-synapse-1.163.2-r2',
      'check-config /opt/venvs/matrix-synapse-1.163.2-r2',
      ...WORKERS.map((u) => `stop ${u}`),
      'switch /opt/venvs/matrix-synapse-1.163.2-r2',
      'start matrix-synapse.service',
      'wait-health http://127.0.0.1:8008/health',
      ...WORKERS.map((u) => `start ${u}`),
      'after-checks homeserver',
      // keepVenvs 2: the rebuilt one and the drifted one to roll back to; 1.158.0 goes.
      'prune /opt/venvs/matrix-synapse-1.158.0',
    ])
    expect(change.steps![0]!.summary).toBe(
      'install matrix-synapse[postgres,redis]==1.163.2 into /opt/venvs/matrix-synapse-1.163.2-r2 (from the uploaded wheelhouse, offline)',
    )
    expect(change.steps!.find((s) => s.kind === 'switch')!.summary).toContain(
      '/opt/venvs/matrix-synapse-1.163.2 stays, unchanged, for rollback',
    )
    expect(change.diff).toBe(
      '--- /opt/venvs/matrix-synapse-1.163.2 (installed)\n+++ synapse-lock/1.163.2.txt\n-twisted==25.5.0\n+twisted==26.4.0\n+txredisapi==1.5.0\n-requests==2.31.0\n',
    )
    // The switch restarts in order itself: nothing the services watch is touched (no second restart by the engine).
    expect(change.touches).toEqual(['/opt/venvs/matrix-synapse'])
    expect(change.steps!.some((s) => s.target === '/opt/venvs/matrix-synapse-1.163.2' && s.kind !== 'prune')).toBe(false)
  })

  it("a rebuilt venv that drifts is rebuilt again under the next free name; the names are recognised as the version's", async () => {
    const state =
      'link matrix-synapse-1.163.2-r2\nvenv 300 /opt/venvs/matrix-synapse-1.163.2-r2\nvenv 200 /opt/venvs/matrix-synapse-1.163.2\nactive 1.163.2\nfree 9\n'
    const change = (await planOf(spec({ lock: lock163 }), drifted(state)))!
    expect(change.steps!.map((s) => `${s.kind} ${s.target}`)).toContain('switch /opt/venvs/matrix-synapse-1.163.2-r3')
    expect(change.steps!.at(-1)).toMatchObject({ kind: 'prune', target: '/opt/venvs/matrix-synapse-1.163.2' })
    expect(rebuiltVenv('1.163.2', [{ path: '/opt/venvs/matrix-synapse-1.163.2-r2' }])).toBe('/opt/venvs/matrix-synapse-1.163.2-r3')
    expect(isVenvOf('/opt/venvs/matrix-synapse-1.163.2-r12', '1.163.2')).toBe(true)
    expect(isVenvOf('/opt/venvs/matrix-synapse-1.163.2rc1', '1.163.2')).toBe(false)
    expect(isVenvOf('/opt/venvs/matrix-synapse-1.163.2-rx', '1.163.2')).toBe(false)
  })

  it('a plain-directory venv (an adopted server) is moved to its versioned name, then rebuilt beside it', async () => {
    const change = (await planOf(spec({ lock: lock163 }), drifted('dir\nactive 1.163.2\nfree 9\n')))!
    expect(change.steps!.map((s) => `${s.kind} ${s.target}`).slice(0, 3)).toEqual([
      'adopt /opt/venvs/matrix-synapse-1.163.2',
      'install /opt/venvs/matrix-synapse-1.163.2-r2',
      'check-config /opt/venvs/matrix-synapse-1.163.2-r2',
    ])
    expect(change.steps!.some((s) => s.kind === 'prune')).toBe(false)
  })

  it('apply: a failed install stops nothing and switches nothing, removes the half-built venv and says the live one keeps serving and still differs', async () => {
    const calls: string[] = []
    const conn = {
      host: 'hs',
      run: (cmd: { text: string }) => (
        calls.push(cmd.text),
        Promise.resolve({ code: 0, stdout: '', stderr: '', signal: null, durationMs: 1, command: cmd.text })
      ),
    } as unknown as Connection
    const resource = synapseRelease(spec({ lock: lock163 }))
    const change = (await resource.plan({ conn: noConn, facts: drifted(), predicted: new Prediction(), dryRun: true }))!
    installs.fail =
      'pip install of the lock synapse-lock/1.163.2.txt failed: ERROR: Could not find a version that satisfies the requirement twisted==26.4.0'
    try {
      await expect(resource.apply(change, { conn, state: { aptListsStale: false } })).rejects.toThrow(
        'pip install of the lock synapse-lock/1.163.2.txt failed: ERROR: Could not find a version that satisfies the requirement twisted==26.4.0; nothing running was changed: Synapse 1.163.2 keeps serving from /opt/venvs/matrix-synapse-1.163.2, which still differs from the lock (a later run or check reports it); /opt/venvs/matrix-synapse-1.163.2-r2 removed',
      )
    } finally {
      installs.fail = undefined
    }
    expect(calls).toEqual(['rm -rf /opt/venvs/matrix-synapse-1.163.2-r2'])
    expect(change.performed!.map((s) => `${s.status} ${s.kind}`)).toEqual(['failed install'])
  })
})
