import { describe, expect, it } from 'vitest'
import { redisQuote, renderRedisConf, renderRedisConfFile } from '../../tasks/redis/templates.js'
import { matrixSettings } from './fixtures/matrix-settings.js'

/** The arguments of one redis.conf line, decoded as Redis's sdssplitargs does (double-quoted form). */
function splitArgs(line: string): Buffer[] {
  const args: Buffer[] = []
  let i = 0
  while (i < line.length) {
    while (line[i] === ' ') i++
    if (i >= line.length) break
    const bytes: number[] = []
    if (line[i] === '"') {
      i++
      while (line[i] !== '"') {
        if (i >= line.length) throw new Error('unterminated quotes')
        if (line[i] === '\\' && line[i + 1] === 'x' && /^[0-9a-f]{2}$/i.test(line.slice(i + 2, i + 4))) {
          bytes.push(parseInt(line.slice(i + 2, i + 4), 16))
          i += 4
        } else if (line[i] === '\\') {
          const c = line[i + 1]!
          bytes.push(...Buffer.from({ n: '\n', r: '\r', t: '\t', b: '\b', a: '\u0007' }[c] ?? c))
          i += 2
        } else {
          bytes.push(...Buffer.from(line[i]!))
          i++
        }
      }
      i++
      if (i < line.length && line[i] !== ' ') throw new Error('closing quote must be followed by a space')
    } else {
      while (i < line.length && line[i] !== ' ') bytes.push(...Buffer.from(line[i++]!))
    }
    args.push(Buffer.from(bytes))
  }
  return args
}

const directives = (content: string) =>
  content
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => splitArgs(l).map((b) => b.toString('utf8')))

describe('renderRedisConf', () => {
  it('is a small complete redis.conf for Synapse: bound, protected, supervised, nothing persisted', () => {
    const conf = renderRedisConf(matrixSettings(), ['127.0.0.1'], 's3cret')
    expect(directives(conf)).toEqual([
      ['bind', '127.0.0.1'],
      ['port', '32992'],
      ['protected-mode', 'yes'],
      ['requirepass', 's3cret'],
      ['supervised', 'systemd'],
      ['daemonize', 'no'],
      ['pidfile', '/run/redis/redis-server.pid'],
      ['logfile', ''],
      ['loglevel', 'notice'],
      ['dir', '/var/lib/redis'],
      ['save', ''],
      ['appendonly', 'no'],
      ['databases', '16'],
    ])
  })

  it('has no requirepass without a password (loopback only)', () => {
    const conf = renderRedisConf(matrixSettings(), ['127.0.0.1', '::1'])
    expect(conf).not.toContain('requirepass')
    expect(directives(conf)[0]).toEqual(['bind', '127.0.0.1', '::1'])
  })

  it('refuses a passwordless Redis on a network address', () => {
    expect(() => renderRedisConf(matrixSettings(), ['127.0.0.1', '10.0.0.2'])).toThrow(/password/)
    expect(() => renderRedisConf(matrixSettings(), ['10.0.0.2'], '')).toThrow(/password/)
  })

  it('refuses bind values that are not IP addresses', () => {
    expect(() => renderRedisConf(matrixSettings(), ['127.0.0.1 0.0.0.0'], 'x')).toThrow()
    expect(() => renderRedisConf(matrixSettings(), ['localhost\nprotected-mode no'], 'x')).toThrow()
    expect(() => renderRedisConf(matrixSettings(), [], 'x')).toThrow()
  })

  it('writes any password so that Redis reads back the same bytes, on one line', () => {
    for (const password of [
      'p"w',
      'back\\slash',
      'new\nline\nprotected-mode no',
      'sp ace',
      "it's",
      '#hash',
      'ü€😀',
      '\u0000\u007f',
      '\\x41',
    ]) {
      const conf = renderRedisConf(matrixSettings(), ['127.0.0.1', '10.0.0.2'], password)
      const line = conf.split('\n').filter((l) => l.startsWith('requirepass '))
      expect(line, JSON.stringify(password)).toHaveLength(1)
      expect(splitArgs(line[0]!)[1]!.equals(Buffer.from(password, 'utf8')), JSON.stringify(password)).toBe(true)
      expect(conf.split('\n').filter((l) => l.startsWith('protected-mode'))).toEqual(['protected-mode yes'])
    }
    expect(redisQuote('a"b')).toBe('"a\\x22b"')
  })
})

describe('renderRedisConfFile', () => {
  it('is owned by redis, 0640, sensitive when it holds a password', () => {
    const withPassword = renderRedisConfFile(matrixSettings(), ['127.0.0.1'], 's3cret')
    expect(withPassword).toMatchObject({ path: '/etc/redis/redis.conf', owner: 'redis', group: 'redis', mode: 0o640, sensitive: true })
    expect(renderRedisConfFile(matrixSettings(), ['127.0.0.1']).sensitive).toBe(false)
  })
})
