/**
 * /etc/redis/redis.conf, whole and small instead of patching Debian's 2,000-line file: Redis is
 * only Synapse's replication bus and shared cache here, so nothing is persisted.
 *
 * The Debian unit starts `redis-server /etc/redis/redis.conf --supervised systemd --daemonize no`
 * as user redis, so the file is owner redis, group redis, 0640 (it may hold requirepass).
 * Protected mode stays on: without a password Redis then accepts loopback clients only, so a
 * passwordless Redis on a network address is refused here rather than left open or unreachable.
 */
import { isIP } from 'node:net'
import type { MatrixSettings } from '../../src/inventory/types.js'
import type { RenderedFile } from '../common/rendered-file.js'

export const REDIS_CONF_PATH = '/etc/redis/redis.conf'

const isLoopback = (address: string) => address === '::1' || /^127\./.test(address)

/**
 * A redis.conf argument in double quotes: every byte outside printable ASCII, the quote and the
 * backslash as \xHH (Redis's sdssplitargs decodes \xHH, so the password's UTF-8 bytes come back
 * exactly).
 */
export function redisQuote(value: string): string {
  let out = '"'
  for (const byte of Buffer.from(value, 'utf8')) {
    out +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x22 && byte !== 0x5c
        ? String.fromCharCode(byte)
        : `\\x${byte.toString(16).padStart(2, '0')}`
  }
  return out + '"'
}

/**
 * The content of /etc/redis/redis.conf.
 * @param bind Addresses Redis listens on (IPs): 127.0.0.1 when Synapse runs beside it, plus the
 *   private address when workers on other hosts connect.
 * @param password requirepass, when set (already resolved).
 */
export function renderRedisConf(vars: MatrixSettings, bind: string[], password?: string): string {
  if (bind.length === 0) throw new Error('Redis needs at least one address to bind to')
  for (const address of bind) {
    if (isIP(address) === 0) throw new Error(`Redis bind addresses must be IP addresses, got ${JSON.stringify(address)}`)
  }
  const port = vars.redis.port
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`redis.port must be a TCP port (1-65535), got ${String(port)}`)
  const hasPassword = password !== undefined && password !== ''
  if (!hasPassword && !bind.every(isLoopback)) {
    throw new Error(
      `Redis would listen on ${bind.filter((a) => !isLoopback(a)).join(', ')} without a password: set redis.password ` +
        '(protected mode refuses remote clients of a passwordless Redis, and without it anyone on the network could use it)',
    )
  }
  const lines = [
    '# Managed by matrix-provision: changes here are overwritten on the next run.',
    '# Redis for Synapse: replication between the main process and the workers, and a shared cache.',
    `bind ${[...new Set(bind)].join(' ')}`,
    `port ${port}`,
    'protected-mode yes',
    ...(hasPassword ? [`requirepass ${redisQuote(password)}`] : []),
    '',
    '# Run under systemd (Type=notify), logging to the journal.',
    'supervised systemd',
    'daemonize no',
    'pidfile /run/redis/redis-server.pid',
    'logfile ""',
    'loglevel notice',
    '',
    '# Pub/sub and a cache: nothing worth persisting.',
    'dir /var/lib/redis',
    'save ""',
    'appendonly no',
    'databases 16',
    '',
  ]
  return lines.join('\n')
}

/** renderRedisConf as a file: owner redis, group redis, 0640; sensitive when it holds requirepass. */
export function renderRedisConfFile(vars: MatrixSettings, bind: string[], password?: string): RenderedFile {
  const sensitive = password !== undefined && password !== ''
  return { path: REDIS_CONF_PATH, content: renderRedisConf(vars, bind, password), mode: 0o640, owner: 'redis', group: 'redis', sensitive }
}
