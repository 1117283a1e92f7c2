/**
 * The service resource carries what apply does on its change (payload), as every resource does: apply
 * reads the change it is handed, not state kept from its plan, so a copy of a planned change or one a
 * test builds is applied as it says.
 */
import { describe, expect, it } from 'vitest'
import { FactValues } from '../../src/facts/fact.js'
import { parseUnitState, unitState } from '../../src/facts/systemd.js'
import { Prediction, type Change } from '../../src/resources/resource.js'
import { service, servicePlan, type ServicePlan } from '../../src/resources/systemd-service.js'
import type { Connection } from '../../src/ssh/connection.js'
import type { ShellCommand } from '../../src/core/shell.js'

const show = (s: { loaded?: boolean; active?: boolean; file?: string }) =>
  `LoadState=${s.loaded === false ? 'not-found' : 'loaded'}\nActiveState=${s.active ? 'active' : 'inactive'}\nUnitFileState=${s.file ?? ''}\nActiveEnterTimestampMonotonic=0\n`

/** The change the resource plans for `unit` in the state `systemctl show` prints (a unit not loaded comes with a package). */
function planned(unit: string, state: Parameters<typeof show>[0]): Change | null {
  const facts = new FactValues()
  facts.set(unitState(unit).id, parseUnitState(show(state)))
  const predicted = new Prediction()
  predicted.units.set(unit, 'package x')
  return service({ unit }).plan({ conn: undefined as never, facts, predicted, dryRun: false }) as Change | null
}

/** The commands apply sends for `changes`, through a resource of another unit: only the changes say what to do. */
async function applied(...changes: Change[]): Promise<string[]> {
  const ran: string[] = []
  const conn = {
    host: 'web',
    run: (c: ShellCommand) => {
      ran.push(c.text)
      return Promise.resolve({ command: c.text, code: 0, signal: null, stdout: '', stderr: '', durationMs: 1, timedOut: false })
    },
  } as unknown as Connection
  const other = service({ unit: 'unrelated.service' })
  if (changes.length === 1) await other.apply(changes[0]!, { conn, state: { aptListsStale: false } })
  else expect((await other.together!.apply(changes, { conn, state: { aptListsStale: false } })).size).toBe(0)
  return ran
}

const bare: Change = {
  resource: 'service:x.service',
  kind: 'service',
  action: 'start',
  summary: '',
  touches: [],
  backupPaths: [],
  reach: 'anything',
}
const built = (plan: ServicePlan) => servicePlan.carry(bare, plan)

describe('the service resource carries its plan on the change', () => {
  it('plan -> payload: what the summary says, and whether the unit has a unit file of its own', () => {
    const payload = (state: Parameters<typeof show>[0]) => servicePlan.of(planned('cron.service', state)!)
    expect(payload({ file: 'disabled' })).toEqual({ unit: 'cron.service', enable: true, start: true, native: true })
    expect(payload({ file: 'enabled' })).toEqual({ unit: 'cron.service', enable: false, start: true, native: false })
    expect(payload({ file: 'generated', active: true })).toEqual({ unit: 'cron.service', enable: true, start: false, native: false })
    expect(payload({ loaded: false })).toEqual({ unit: 'cron.service', enable: true, start: true, native: false })
    expect(planned('cron.service', { file: 'enabled', active: true })).toBeNull()
    // --json shows the change, not its payload (as for every resource: PlanPayload serialises to nothing).
    expect(JSON.parse(JSON.stringify(planned('cron.service', { file: 'enabled' })))).not.toHaveProperty('payload')
  })

  it('payload -> apply: a copy of a planned change does exactly what its plan said, an enabled unit is only started', async () => {
    const copy = (state: Parameters<typeof show>[0]) => ({ ...planned('cron.service', state)! })
    expect(await applied(copy({ file: 'disabled' }))).toEqual([
      'SYSTEMCTL_SKIP_SYSV=1 systemctl enable cron.service || exit 97; systemctl start cron.service',
    ])
    expect(await applied(copy({ file: 'enabled' }))).toEqual(['systemctl start cron.service'])
    expect(await applied(copy({ file: 'generated', active: true }))).toEqual(['systemctl enable cron.service || exit 97'])
    expect(await applied(copy({ loaded: false }))).toEqual(['systemctl enable cron.service || exit 97; systemctl start cron.service'])
  })

  it('the SysV sync is skipped for a unit with its own unit file (state disabled), kept for a SysV script and a unit not known yet', async () => {
    const changes = [
      planned('cron.service', { file: 'disabled' })!,
      planned('legacy.service', { file: 'generated' })!,
      planned('later.service', { loaded: false })!,
    ]
    expect(await applied(...changes)).toEqual([
      'SYSTEMCTL_SKIP_SYSV=1 systemctl enable cron.service && systemctl enable legacy.service later.service || exit 97; systemctl start cron.service legacy.service later.service',
    ])
  })

  it('a change whose payload says X makes apply do X, alone and together; a change without one is refused', async () => {
    expect(await applied(built({ unit: 'a.service', enable: false, start: true, native: false }))).toEqual(['systemctl start a.service'])
    expect(await applied(built({ unit: 'a.service', enable: true, start: false, native: true }))).toEqual([
      'SYSTEMCTL_SKIP_SYSV=1 systemctl enable a.service || exit 97',
    ])
    expect(
      await applied(
        built({ unit: 'a.service', enable: true, start: true, native: true }),
        built({ unit: 'b.service', enable: true, start: false, native: false }),
        built({ unit: 'c.service', enable: false, start: true, native: false }),
      ),
    ).toEqual([
      'SYSTEMCTL_SKIP_SYSV=1 systemctl enable a.service && systemctl enable b.service || exit 97; systemctl start a.service c.service',
    ])
    await expect(applied(bare)).rejects.toThrow('service:x.service: the change carries no service plan')
    await expect(applied(built({ unit: 'a.service', enable: false, start: true, native: false }), bare)).rejects.toThrow(
      'the change carries no service plan',
    )
  })
})
