import { fingerprint, knownHostName, lookupHostKeys, wireKeyType, type KnownHostEntry } from './known-hosts.js'

export type HostKeyPolicy = 'strict' | 'accept-new'

export type HostKeyVerdict =
  | { accept: true; learn: false }
  /** accept-new and the host had no key: accept, and append this key to known_hosts. */
  | { accept: true; learn: true; keyType: string; keyBase64: string }
  | { accept: false; reason: 'unknown' | 'changed' | 'revoked'; fingerprint: string; message: string }

export interface HostKeyCheck {
  entries: readonly KnownHostEntry[]
  /** Address and port we connect to (what known_hosts names). */
  address: string
  port: number
  /** The key the server offered, in wire format (ssh2's hostVerifier argument). */
  key: Buffer
  policy: HostKeyPolicy
  /** known_hosts path, for messages. */
  file: string
}

/**
 * Decide on a host key as OpenSSH does: a revoked key is refused; a listed key is accepted; a key
 * that differs from the listed ones is refused whatever the policy (that is what a
 * man-in-the-middle looks like); an unlisted host is refused (strict) or learned (accept-new).
 */
export function checkHostKey(check: HostKeyCheck): HostKeyVerdict {
  const { entries, address, port, key, policy, file } = check
  const name = knownHostName(address, port)
  const offeredType = wireKeyType(key) ?? 'unknown'
  const fp = fingerprint(key)
  const { known, revoked } = lookupHostKeys(entries, address, port)

  const revokedEntry = revoked.find((e) => e.key.equals(key)) ?? entries.find((e) => e.marker === 'revoked' && e.key.equals(key))
  if (revokedEntry) {
    return {
      accept: false,
      reason: 'revoked',
      fingerprint: fp,
      message:
        `host key for ${name} is REVOKED in ${file} (line ${revokedEntry.line}): ${offeredType} ${fp}. ` +
        `Do not connect: the host's key was marked as compromised. Replace the host's keys, then update ${file}.`,
    }
  }
  if (known.some((e) => e.key.equals(key))) return { accept: true, learn: false }
  if (known.length > 0) {
    const listed = known.map((e) => `${e.keyType} ${fingerprint(e.key)} (line ${e.line}, pattern ${e.patterns.join(',')})`)
    return {
      accept: false,
      reason: 'changed',
      fingerprint: fp,
      message:
        `HOST KEY CHANGED for ${name}: the server offered ${offeredType} ${fp}, which is not the key ${file} lists ` +
        `(${listed.join('; ')}). Someone may be intercepting the connection, or the host was reinstalled. ` +
        `Verify the new fingerprint on the host (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then remove the old entry ` +
        `with: ssh-keygen -R '${name}' -f ${file}. The accept-new policy never replaces a changed key.`,
    }
  }
  if (policy === 'accept-new') {
    return { accept: true, learn: true, keyType: offeredType, keyBase64: key.toString('base64') }
  }
  return {
    accept: false,
    reason: 'unknown',
    fingerprint: fp,
    message:
      `host key for ${name} is not in ${file}; verify it and add it (ssh-keyscan -p ${port} ${address} >> ${file}), ` +
      `or set ssh.hostKeyPolicy: accept-new. The server offered ${offeredType} ${fp}.`,
  }
}
