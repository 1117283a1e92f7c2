import { defineFact, type FactBatch } from './fact.js'
import { raw, sh } from '../core/shell.js'

export interface UnitState {
  loaded: boolean
  active: boolean
  activeState: string
  enabled: boolean
  unitFileState: string
  /** Monotonic start time: unchanged means not restarted. */
  activeEnterMonotonic: string
}

export function parseUnitState(out: string): UnitState {
  const kv = new Map<string, string>()
  for (const line of out.split('\n')) {
    const i = line.indexOf('=')
    if (i > 0) kv.set(line.slice(0, i), line.slice(i + 1))
  }
  const unitFileState = kv.get('UnitFileState') ?? ''
  return {
    loaded: kv.get('LoadState') === 'loaded',
    active: kv.get('ActiveState') === 'active',
    activeState: kv.get('ActiveState') ?? 'unknown',
    enabled: unitFileState === 'enabled' || unitFileState === 'static' || unitFileState === 'enabled-runtime' || unitFileState === 'alias',
    unitFileState,
    activeEnterMonotonic: kv.get('ActiveEnterTimestampMonotonic') ?? '0',
  }
}

const SHOW = raw`systemctl show -p LoadState,ActiveState,UnitFileState,ActiveEnterTimestampMonotonic`

/** `systemctl show` of many units prints their blocks in the order asked, separated by blank lines. */
export const unitStateBatch: FactBatch = {
  id: 'unit-state',
  command: (units) => sh`${SHOW} ${units}`,
  split(stdout, code, units) {
    const blocks = stdout.split(/\n\n(?=\S)/)
    if (blocks.length !== units.length)
      throw new Error(`systemctl show printed ${blocks.length} blocks for ${units.length} units (exit ${code})`)
    return blocks.map((block) => ({ stdout: block, code }))
  },
}

/**
 * Where the unit files, drop-ins and SysV scripts (the generator's units) live: only a write there can
 * change what `systemctl show` says of a unit, so apply need not read it again after other files' writes.
 */
const UNIT_PATHS = ['/etc/systemd/', '/run/systemd/', '/lib/systemd/', '/usr/lib/systemd/', '/usr/local/lib/systemd/', '/etc/init.d/']

export const unitState = (unit: string) =>
  defineFact(`unit:${unit}`, sh`${SHOW} ${unit}`, parseUnitState, {
    paths: UNIT_PATHS,
    quick: true,
    batch: { with: unitStateBatch, item: unit },
  })
