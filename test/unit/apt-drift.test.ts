import { describe, expect, it } from 'vitest'
import { parseAptRunState, versionDrift, type ProcessTarget } from '../../tasks/synapse/apt-drift.js'
import { advise } from '../../src/synapse/metrics/advice.js'
import type { ProcessStatus } from '../../src/synapse/metrics/process-status.js'

const TARGETS: ProcessTarget[] = [
  { process: 'main', unit: 'matrix-synapse.service', metricsPort: 32982 },
  { process: 'federation_reader', unit: 'matrix-synapse-worker@federation_reader.service', metricsPort: 32981 },
  { process: 'federation_sender', unit: 'matrix-synapse-worker@federation_sender.service', metricsPort: 32980 },
]
// What the fact printed on a bookworm host after a hand `apt-get install --only-upgrade` past an unhold:
// the postinst restarted main on 1.157.0, the workers kept 1.156.0.
const HAND_UPGRADE = `pkg 1.157.0+bookworm1 ii 
listed 1765112000
proc matrix-synapse.service active 1765112010 1.157.0
proc matrix-synapse-worker@federation_reader.service active 1765111000 1.156.0
proc matrix-synapse-worker@federation_sender.service active 1765111000 1.156.0
`

describe('apt drift: the package, its hold and the version each process runs', () => {
  it('reads the package, its hold and every process', () => {
    const s = parseAptRunState(HAND_UPGRADE, TARGETS)
    expect(s.pkg).toEqual({ version: '1.157.0+bookworm1', held: false, installedAt: 1765112000 })
    expect(s.processes.map((p) => [p.process, p.active, p.startedAt, p.version])).toEqual([
      ['main', true, 1765112010, '1.157.0'],
      ['federation_reader', true, 1765111000, '1.156.0'],
      ['federation_sender', true, 1765111000, '1.156.0'],
    ])
    expect(parseAptRunState('pkg \nlisted \n', TARGETS)).toEqual({ processes: [] })
  })

  it('the package at the inventory version, held, everything on it: no drift', () => {
    const s = parseAptRunState(HAND_UPGRADE.replace(' ii ', ' hi ').replace(/1\.156\.0/g, '1.157.0'), TARGETS)
    expect(versionDrift('1.157.0', s)).toBeUndefined()
    expect(versionDrift('1.157.0', { processes: [] })).toBeUndefined() // not installed yet
  })

  it('a hand upgrade pinned at the new version: the package is right, the hold is gone, the workers run the old code', () => {
    const d = versionDrift('1.157.0', parseAptRunState(HAND_UPGRADE, TARGETS))!
    expect(d).toMatchObject({ package: '1.157.0', packageDiffers: false, notHeld: true, drifted: true })
    expect(d.stale.map((p) => [p.process, p.runs])).toEqual([
      ['federation_reader', '1.156.0'],
      ['federation_sender', '1.156.0'],
    ])
    expect(d.text).toBe(
      'the inventory says 1.157.0; package matrix-synapse-py3 1.157.0+bookworm1 (not held: changed outside matrix-provision?), main runs 1.157.0, federation_reader runs 1.156.0, federation_sender runs 1.156.0',
    )
  })

  it('the same pinned at the old version: the package differs (the release converges it), main is stale', () => {
    const d = versionDrift('1.156.0', parseAptRunState(HAND_UPGRADE, TARGETS))!
    expect(d).toMatchObject({ packageDiffers: true, notHeld: true, drifted: true })
    expect(d.stale.map((p) => p.process)).toEqual(['main'])
  })

  it('a new version in the inventory, not applied yet: not drift (everything on the held package), but not the inventory version either', () => {
    const s = parseAptRunState(HAND_UPGRADE.replace(' ii ', ' hi ').replace(/1\.157\.0/g, '1.156.0'), TARGETS)
    expect(versionDrift('1.157.0', s)).toMatchObject({ packageDiffers: true, notHeld: false, drifted: false })
    expect(versionDrift('1.157.0', s)!.stale).toHaveLength(3)
  })

  it('held and right, but a lost hold alone is drift too', () => {
    const s = parseAptRunState(HAND_UPGRADE.replace(/1\.156\.0/g, '1.157.0'), TARGETS)
    expect(versionDrift('1.157.0', s)).toMatchObject({ notHeld: true, stale: [] })
  })

  it('without metrics: a process started before the package was last written runs the older code; one started after runs the package', () => {
    const noMetrics = HAND_UPGRADE.replace(/ 1\.15\d\.0$/gm, ' ').replace(' ii ', ' hi ')
    const d = versionDrift('1.157.0', parseAptRunState(noMetrics, TARGETS))!
    expect(d.stale.map((p) => p.process)).toEqual(['federation_reader', 'federation_sender'])
    expect(d.stale[0]!.runs).toMatch(/^the code from before the package's last install \(started 2025-12-07T12:36:40\.000Z/)
    expect(d.notHeld).toBe(false)
  })

  it('an inactive process is not drift (other checks fail on it; the next start runs the package)', () => {
    const s = parseAptRunState(HAND_UPGRADE.replace(' ii ', ' hi ').replace(/active 1765111000 1\.156\.0/g, 'inactive - '), TARGETS)
    expect(versionDrift('1.157.0', s)).toBeUndefined()
  })
})

describe('status advice on versions', () => {
  const proc = (process: string, version: string): ProcessStatus => ({
    process,
    unit: `${process}.service`,
    port: 1,
    up: true,
    version,
    eventSend: {},
    topBlocks: [],
    topEvictingCaches: [],
  })
  it('mixed versions come first, naming each process and the pinned version', () => {
    const out = advise({ cacheFactor: 2, version: '1.157.0' }, [proc('main', '1.157.0'), proc('federation_reader', '1.156.0')])
    expect(out[0]).toEqual({
      level: 'warning',
      text: 'Synapse processes run mixed versions: main 1.157.0, federation_reader 1.156.0 (the inventory says 1.157.0): run provision to converge them',
    })
  })
  it('all on one version other than pinned', () => {
    expect(advise({ cacheFactor: 2, version: '1.157.0' }, [proc('main', '1.156.0')])[0]!.text).toContain(
      'another version than the inventory: main 1.156.0 (the inventory says 1.157.0)',
    )
  })
  it('all on the pinned version (or nothing pinned and all alike): no advice', () => {
    expect(advise({ cacheFactor: 2, version: '1.157.0' }, [proc('main', '1.157.0'), proc('w', '1.157.0')])).toEqual([])
    expect(advise({ cacheFactor: 2 }, [proc('main', '1.157.0'), proc('w', '1.157.0')])).toEqual([])
  })
})
