/** Why a connection could not be made; each kind has its own advice. */
export type ConnectErrorKind = 'unreachable' | 'timeout' | 'auth' | 'host-key'

/** Connecting to a host failed. The message says what happened and what to do about it. */
export class ConnectError extends Error {
  readonly kind: ConnectErrorKind
  /** Inventory name of the host. */
  readonly host: string

  constructor(host: string, kind: ConnectErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'ConnectError'
    this.kind = kind
    this.host = host
  }
}

/** The host's key is unknown (strict policy), changed, or revoked: nothing was sent to the host. */
export class HostKeyError extends ConnectError {
  readonly reason: 'unknown' | 'changed' | 'revoked'
  /** Fingerprint (SHA256:…) of the key the server offered. */
  readonly fingerprint: string

  constructor(host: string, reason: HostKeyError['reason'], fingerprint: string, message: string) {
    super(host, 'host-key', message)
    this.name = 'HostKeyError'
    this.reason = reason
    this.fingerprint = fingerprint
  }
}
