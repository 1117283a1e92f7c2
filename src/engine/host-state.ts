import { randomBytes } from 'node:crypto'
import { defineFact } from '../facts/fact.js'
import { readTextFile } from '../facts/files.js'
import type { SecretValue } from '../core/secret.js'
import { directory, file } from '../resources/file.js'
import type { Resource } from '../resources/resource.js'
import { Secret } from '../core/secret.js'
import { sh } from '../core/shell.js'
import { STATE_DIR, SECRETS_DIR, PENDING_RESTARTS, HOST_RECORD } from '../synapse/paths.js'

/** What an adopted server keeps of its own; later runs use these where the inventory says nothing. */
export interface AdoptedSettings {
  signingKeyPath: string
  mediaStorePath: string
  /** Settings the inventory has no name for, kept verbatim (merged under synapse.extraConfig). */
  extraConfig: Record<string, unknown>
}

export interface HostRecord {
  managedBy: 'matrix-provision'
  origin: 'provisioned' | 'adopted'
  /** Day of the first apply or of the adoption (YYYY-MM-DD). */
  since: string
  adopted?: AdoptedSettings
}

export interface HostOwnership {
  record?: HostRecord
  /** The raw record file, rewritten as it is so that later runs never change it. */
  recordText?: string
  /** Hosts provisioned before the record existed have the secret store: they are ours too. */
  secretStore: boolean
}

/** Is this host ours, and was it adopted? Sensitive: an adopted extraConfig may hold passwords. */
export const hostOwnership = defineFact(
  'host-ownership',
  sh`if [ -f ${HOST_RECORD} ]; then printf 'record\t'; base64 -w0 < ${HOST_RECORD}; echo; fi; if [ -d ${SECRETS_DIR} ]; then echo secret-store; fi; true`,
  (out): HostOwnership => {
    const ownership: HostOwnership = { secretStore: false }
    for (const line of out.split('\n')) {
      if (line === 'secret-store') ownership.secretStore = true
      const [kind, b64] = line.split('\t')
      if (kind === 'record' && b64 !== undefined) {
        ownership.recordText = Buffer.from(b64, 'base64').toString('utf8')
        try {
          const parsed = JSON.parse(ownership.recordText) as HostRecord
          if (parsed.managedBy === 'matrix-provision') ownership.record = parsed
        } catch {
          // An unreadable record still marks the host as ours (it is in our state directory).
          ownership.record = { managedBy: 'matrix-provision', origin: 'provisioned', since: '' }
        }
      }
    }
    return ownership
  },
  { sensitive: true, quick: true },
)

/** The record a first apply writes: the existing one unchanged, else a new one (the host lock made its directory). */
export function hostRecordResources(ownership: HostOwnership, fresh: HostRecord): Resource[] {
  const content = ownership.recordText ?? JSON.stringify(fresh) + '\n'
  return [file({ path: HOST_RECORD, content, mode: 0o600, sensitive: true })]
}

/** Restarts that were due when an earlier run stopped: done by this run. */
export const pendingRestarts = defineFact(
  'pending-restarts',
  readTextFile(PENDING_RESTARTS),
  (out, code) =>
    code === 0
      ? [
          ...new Set(
            out
              .split('\n')
              .map((l) => l.trim())
              .filter(Boolean),
          ),
        ]
      : [],
  { quick: true },
)

/** Secrets generated on earlier runs (name -> value). The probe's output is never logged nor echoed. */
export const storedSecrets = defineFact(
  'stored-secrets',
  sh`for f in ${SECRETS_DIR}/*; do [ -f "$f" ] || continue; printf '%s\\t' "\${f##*/}"; base64 -w0 < "$f"; echo; done`,
  (out) => {
    const m = new Map<string, string>()
    for (const line of out.split('\n')) {
      const [name, b64] = line.split('\t')
      if (name && b64 !== undefined) m.set(name, Buffer.from(b64, 'base64').toString('utf8'))
    }
    return m
  },
  { sensitive: true, quick: true },
)

/** Resolves secret references for one host; generated ones are read back or made once and stored. */
export class HostSecrets {
  readonly #stored: Map<string, string>
  /** Every generated secret resolved on this run: a name always gives the same value. */
  readonly #resolved = new Map<string, Secret>()
  /** Resolved since the last takeResources: their files still have to be declared. */
  readonly #undeclared = new Map<string, Secret>()
  #dirsDeclared = false

  constructor(stored: Map<string, string>) {
    this.#stored = stored
  }

  resolve(value: SecretValue): Secret {
    if (value.kind === 'value') return value.secret
    const known = this.#resolved.get(value.name)
    if (known) return known
    const stored = this.#stored.get(value.name)
    const secret = new Secret(
      stored ?? randomBytes(32).toString('base64url'),
      stored ? `generated on host (${SECRETS_DIR}/${value.name})` : 'generated now',
    )
    this.#resolved.set(value.name, secret)
    this.#undeclared.set(value.name, secret)
    return secret
  }

  /** File resources that keep the generated secrets used so far (a no-op when they are stored already). */
  takeResources(): Resource[] {
    const out: Resource[] = [...this.#undeclared].map(([name, secret]) =>
      file({ path: `${SECRETS_DIR}/${name}`, content: secret, mode: 0o600 }),
    )
    this.#undeclared.clear()
    if (out.length && !this.#dirsDeclared) {
      this.#dirsDeclared = true
      out.unshift(directory({ path: STATE_DIR, mode: 0o700 }), directory({ path: SECRETS_DIR, mode: 0o700 }))
    }
    return out
  }
}
