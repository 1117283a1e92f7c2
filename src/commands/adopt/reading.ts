/**
 * What the parts of an adoption share: the hand-built host's files, the inventory's host, the lists each
 * part fills (refusals, notes, secrets taken over, files to back up and to retire) and Synapse's merged
 * configuration with the keys a part has handled.
 */
import { parse } from 'yaml'
import type { AdoptedSettings } from '../../engine/host-state.js'
import type { AdoptionNote, NoteKind } from '../../engine/report-types.js'
import type { HostSpec } from '../../inventory/types.js'
import type { HandBuiltFiles } from './host-files.js'

export interface TakenSecret {
  /** Name in the host's secret store (the inventory's `{ generate: true }` name). */
  name: string
  value: string
  from: string
}

export interface Adoption {
  refusals: string[]
  secrets: TakenSecret[]
  adopted: AdoptedSettings
  notes: AdoptionNote[]
  /** Files the conversion takes out of service (moved into the backup): old vhost links, unit drop-ins. */
  retire: string[]
  /** Files copied into the backup before anything changes. */
  backup: string[]
}

export type Yaml = Record<string, unknown>

export const isMap = (v: unknown): v is Yaml => v !== null && typeof v === 'object' && !Array.isArray(v)
// A YAML value in a message: a string as it is, anything else as JSON (a map shows its keys, not '[object Object]').
export const text = (v: unknown): string => (typeof v === 'string' ? v : (JSON.stringify(v) ?? 'undefined'))

export function parseYaml(text: string, path: string, refusals: string[]): Yaml {
  try {
    const v = parse(text, { version: '1.1' }) as unknown
    if (v === null || v === undefined) return {}
    if (!isMap(v)) {
      refusals.push(`${path} is not a mapping of settings`)
      return {}
    }
    return v
  } catch (error) {
    refusals.push(`${path} does not parse as YAML: ${(error as Error).message.split('\n')[0]}`)
    return {}
  }
}

/** Names a listener by its port and resources: `listeners[8008: client, federation]`. */
export function listenerResources(l: Yaml): string[] {
  const res = Array.isArray(l.resources) ? l.resources : []
  return res.flatMap((r) => (isMap(r) && Array.isArray(r.names) ? r.names.map(String) : []))
}

export function bindOf(l: Yaml): string[] {
  const out = Array.isArray(l.bind_addresses) ? l.bind_addresses.map(String) : []
  if (typeof l.bind_address === 'string') out.push(l.bind_address)
  return out
}

export interface Reading {
  found: HandBuiltFiles
  host: HostSpec
  v: HostSpec['vars']
  inventoryFile: string
  refusals: string[]
  notes: AdoptionNote[]
  secrets: TakenSecret[]
  /** Keys without an inventory name, kept verbatim (synapse.extraConfig of the host record). */
  extraConfig: Record<string, unknown>
  backup: string[]
  retire: string[]
  note: (kind: NoteKind, found: string, becomes: string) => void
}

/** Synapse's configuration as Synapse reads it, and the keys a part has handled. */
export interface SynapseConfig {
  config: Yaml
  /** Where a key is set: `conf.d/x.yaml: key`. */
  at: (key: string) => string
  /** Marks a key handled and returns its value. */
  take: (key: string) => unknown
  handled: Set<string>
}
