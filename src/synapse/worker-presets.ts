/**
 * Worker presets: named worker sets, as the reference deployments offer them
 * (matrix-docker-ansible-deploy's little-federation-helper / one-of-each / specialized-workers,
 * rebuilt from Synapse's docs, not copied). A preset is a list of { name, kind }; ports come from
 * the position in the list (instances.ts), so the set is data like an explicit list.
 */
import { KINDS, type WorkerKindName } from './worker-kinds.js'

export const WORKER_PRESETS = ['guide', 'one-of-each', 'specialized'] as const
export type WorkerPreset = (typeof WORKER_PRESETS)[number]

export interface PresetEntry {
  name: string
  kind: WorkerKindName
}

/** The single-purpose kinds one-of-each runs once each, named after their kind. */
const ONE_OF_EACH_KINDS: readonly WorkerKindName[] = [
  'generic',
  'federation_sender',
  'pusher',
  'media_repository',
  'appservice',
  'user_dir',
  'background',
  'events',
  'typing',
  'to_device',
  'account_data',
  'receipts',
  'presence',
  'push_rules',
  'device_lists',
]

const pool = (kind: WorkerKindName, count: number): PresetEntry[] =>
  Array.from({ length: count }, (_v, i) => ({ name: `${kind}_${i + 1}`, kind }))

export const PRESETS: Readonly<Record<WorkerPreset, { summary: string; entries: readonly PresetEntry[] }>> = {
  guide: {
    summary: "the guide's two workers: federation_reader (inbound federation) and federation_sender (outbound); 3 processes with main",
    entries: [
      { name: 'federation_reader', kind: 'federation_reader' },
      { name: 'federation_sender', kind: 'federation_sender' },
    ],
  },
  'one-of-each': {
    summary: `one worker of each single-purpose kind (${ONE_OF_EACH_KINDS.join(', ')}); 16 processes with main`,
    entries: ONE_OF_EACH_KINDS.map((kind) => ({ name: kind, kind })),
  },
  specialized: {
    summary:
      'one-of-each with the generic worker split into pools: 2 synchrotron (sync), 2 event_creator (room events), 1 client_reader, 1 federation_reader; 21 processes with main',
    entries: [
      ...pool('synchrotron', 2),
      ...pool('event_creator', 2),
      ...pool('client_reader', 1),
      ...pool('federation_reader', 1),
      ...ONE_OF_EACH_KINDS.filter((k) => k !== 'generic').map((kind) => ({ name: kind, kind })),
    ],
  },
}

/** Memory of a preset's processes, main included (MiB), from the kinds' measured figures. */
export function presetMemoryMiB(preset: WorkerPreset, mainMiB: number): number {
  return PRESETS[preset].entries.reduce((sum, e) => sum + KINDS[e.kind].memoryMiB, mainMiB)
}
