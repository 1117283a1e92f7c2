import { defineFact } from './fact.js'
import { shellQuote } from '../ssh/quote.js'

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

export const unitState = (unit: string) =>
  defineFact(`unit:${unit}`, `systemctl show -p LoadState,ActiveState,UnitFileState,ActiveEnterTimestampMonotonic ${shellQuote(unit)}`, parseUnitState)
