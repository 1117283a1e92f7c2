/** Settings of the worker processes: which set (a preset or explicit instances), where they run, their ports. */
import { z } from 'zod'
import { KINDS, WORKER_KINDS } from '../../synapse/worker-kinds.js'
import { PRESETS, WORKER_PRESETS } from '../../synapse/worker-presets.js'
import { GENERATE, hostReference, integer, pattern, port, secretRef } from '../values.js'

/** worker_name: a systemd instance name, file name, instance_map key and Prometheus job. */
export const WORKER_NAME = /^[a-z][a-z0-9_]{0,39}$/
const WORKER_NAME_MESSAGE =
  'expected a worker name: lowercase letters, digits and "_", starting with a letter (at most 40 characters), e.g. generic_1'

const workerKindSchema = z
  .enum(WORKER_KINDS, { error: `expected a worker kind: ${WORKER_KINDS.join(', ')}` })
  .describe('What the worker does:\n' + WORKER_KINDS.map((k) => `${k}: ${KINDS[k].summary}`).join('\n'))

export const workerInstanceSchema = z
  .strictObject({
    name: pattern(WORKER_NAME, WORKER_NAME_MESSAGE).describe('worker_name (unit matrix-synapse-worker@<name>.service)'),
    kind: workerKindSchema,
    port: port().optional().describe('http listener for the requests Apache routes to it (default portBase + position)'),
    replicationPort: port().optional().describe('replication listener of a stream writer (default portBase + 100 + position)'),
    metricsPort: port().optional().describe('metrics listener (default portBase + 200 + position)'),
    host: hostReference().optional().describe('Inventory host that runs it (default: the synapse host); that host needs the workers role'),
  })
  .describe('One worker process')

export const workersSchema = z.strictObject({
  preset: z
    .enum(WORKER_PRESETS, { error: `expected a worker preset: ${WORKER_PRESETS.join(', ')}` })
    .default('guide')
    .describe('Worker set (or give instances):\n' + WORKER_PRESETS.map((p) => `${p}: ${PRESETS[p].summary}`).join('\n')),
  instances: z
    .array(workerInstanceSchema, { error: 'expected a list of workers, e.g. [{ name: generic_1, kind: generic }]' })
    .min(1, { error: 'expected at least one worker; drop the workers role for none' })
    .optional()
    .describe('An explicit worker set instead of a preset; append new workers at the end so the others keep their ports'),
  placement: z
    .record(z.string(), hostReference(), {
      error: 'expected a mapping of worker names or kinds to inventory hosts, e.g. { generic: worker1, media_repository: worker1 }',
    })
    .optional()
    .describe(
      "Which host runs which workers, by worker name or kind (a name wins over a kind; an instance's own host wins over both); the rest run on the synapse host. " +
        'Each named host needs the workers role; it gets Synapse, the shared configuration and the signing key, and once any worker runs elsewhere ' +
        'the listeners other hosts reach bind to the private addresses, behind our nftables table',
    ),
  portBase: integer(1024, 65235, 'expected an integer between 1024 and 65235 (three blocks of 100 ports from there)')
    .default(18100)
    .describe('First automatic worker port: http portBase + i, replication + 100 + i, metrics + 200 + i'),
  replicationPort: port().default(32993),
  replicationSecret: secretRef('replication-secret').default(GENERATE),
  federationReader: z
    .strictObject({ port: port().default(32902), metricsPort: port().default(32981) })
    .prefault({})
    .describe("The guide preset's federation_reader"),
  federationSender: z
    .strictObject({ metricsPort: port().default(32980) })
    .prefault({})
    .describe("The guide preset's federation_sender"),
})

export type WorkerEntry = z.output<typeof workerInstanceSchema>
