/**
 * Values that end up in Apache syntax, checked where they are written (host names as DNS names, ports,
 * file paths without quotes, backslashes, `$` or control characters), so a hostile value cannot add a
 * directive even if it got past the inventory validation.
 */

/** The first line of every file the apache task writes. */
export const HEADER = '# Managed by matrix-provision: changes here are overwritten on the next run.\n'

const DNS_NAME = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/

export function hostName(value: string, what: string): string {
  if (!DNS_NAME.test(value)) throw new Error(`${what} must be a lowercase DNS name, got ${JSON.stringify(value)}`)
  return value
}

/** serverName may carry a port (example.org:8448); the vhost's ServerName is the host part. */
export function serverNameHost(serverName: string): string {
  return hostName(serverName.replace(/:\d{1,5}$/, ''), 'serverName')
}

export function port(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 1 || value > 65535) throw new Error(`${what} must be a TCP port (1-65535), got ${String(value)}`)
  // Port 80 carries the plain-http redirect vhosts.
  if (what === 'apache.httpsPort' && value === 80)
    throw new Error('apache.httpsPort cannot be 80: port 80 serves the http -> https redirects')
  return value
}

/** An absolute path, double-quoted for Apache. Apache unescapes only \" and expands ${VAR}: refuse both. */
export function quotedPath(value: string, what: string): string {
  // eslint-disable-next-line no-control-regex -- control characters are what this refuses
  if (!value.startsWith('/') || /["\\$\u0000-\u001f\u007f]/.test(value)) {
    throw new Error(`${what} must be an absolute path without quotes, backslashes, "$" or control characters, got ${JSON.stringify(value)}`)
  }
  return `"${value}"`
}

export const httpsUrl = (host: string, httpsPort: number) => (httpsPort === 443 ? `https://${host}` : `https://${host}:${httpsPort}`)
