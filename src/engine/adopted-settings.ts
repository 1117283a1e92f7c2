/**
 * What an adopted server keeps of its own (the host record's `adopted`), applied to the host's vars on
 * every run, not only by `provision adopt`: later runs must render the same signing key, media store
 * and kept settings.
 */
import type { HostSpec } from '../inventory/types.js'
import { Secret } from '../core/secret.js'
import type { AdoptedSettings } from './host-state.js'

const isMap = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v)

/**
 * Values under secret-looking keys of the kept settings (an SMTP password, an OIDC client secret) are
 * made Secrets, so every report, diff and log masks them, as it does the taken-over secrets.
 */
export function maskAdoptedSecrets(value: unknown, key = ''): void {
  if (typeof value === 'string' && /pass|secret|token|key/i.test(key)) new Secret(value, `adopted setting ${key}`)
  else if (Array.isArray(value)) value.forEach((v) => maskAdoptedSecrets(v, key))
  else if (isMap(value)) for (const [k, v] of Object.entries(value)) maskAdoptedSecrets(v, k)
}

/** The host's vars with what an adopted server keeps, where the inventory does not say otherwise. */
export function withAdoptedSettings(host: HostSpec, adopted: AdoptedSettings | undefined): HostSpec {
  if (!adopted) return host
  maskAdoptedSecrets(adopted.extraConfig)
  const s = host.vars.synapse
  return {
    ...host,
    vars: {
      ...host.vars,
      synapse: {
        ...s,
        signingKeyPath: s.signingKeyPath ?? adopted.signingKeyPath,
        mediaStorePath: s.mediaStorePath ?? adopted.mediaStorePath,
        extraConfig: { ...adopted.extraConfig, ...s.extraConfig },
      },
    },
  }
}
