import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import type { SshHost, SshSettings } from '../../src/ssh/settings.js'
import { parseJumpSpec, resolveRoute } from '../../src/ssh/endpoint.js'
import { loadSshConfig, parseSshConfig, resolveSshConfig } from '../../src/ssh/ssh-config.js'

const ctx = { home: '/home/me', localUser: 'me' }

const CONFIG = `
# global settings come first and apply to every host
IdentityFile ~/.ssh/global_key

Host matrix-prod synapse-*
    HostName %h.internal.example.org
    User deploy
    Port 2222
    IdentityFile ~/.ssh/prod_ed25519
    ProxyJump admin@bastion.example.org:2200
    UserKnownHostsFile ~/.ssh/known_hosts.prod /etc/ssh/other

Host synapse-? !synapse-x
    User ignored-because-first-value-wins
    HostName ignored.example.org

Host bastion.example.org
    IdentityFile="/keys/bastion key"

Host quoted
    HostName = "10.1.2.3"
    ProxyJump none

Match host matrix-prod
    User from-match-block

Host *
    User fallback
    Port 22
`

describe('ssh_config reader', () => {
  const blocks = parseSshConfig(CONFIG)

  it('resolves an alias: HostName with %h, User, Port, IdentityFile (all, in order), ProxyJump, the first UserKnownHostsFile', () => {
    expect(resolveSshConfig(blocks, 'matrix-prod', ctx)).toEqual({
      isAlias: true,
      hostName: 'matrix-prod.internal.example.org',
      user: 'deploy',
      port: 2222,
      identityFiles: ['/home/me/.ssh/global_key', '/home/me/.ssh/prod_ed25519'],
      proxyJump: 'admin@bastion.example.org:2200',
      userKnownHostsFile: '/home/me/.ssh/known_hosts.prod',
    })
  })

  it('first obtained value wins across blocks; * and ? patterns; negation; Match blocks are skipped', () => {
    const one = resolveSshConfig(blocks, 'synapse-1', ctx)
    expect(one.user).toBe('deploy')
    expect(one.hostName).toBe('synapse-1.internal.example.org')
    const x = resolveSshConfig(blocks, 'synapse-x', ctx)
    expect(x.user).toBe('deploy') // still matched by synapse-*; the negated block does not apply
    const other = resolveSshConfig(blocks, 'somewhere', ctx)
    expect(other).toEqual({ isAlias: false, user: 'fallback', port: 22, identityFiles: ['/home/me/.ssh/global_key'] })
  })

  it('reads Keyword=value, quoted values, and ProxyJump none', () => {
    expect(resolveSshConfig(blocks, 'quoted', ctx)).toMatchObject({ isAlias: true, hostName: '10.1.2.3', user: 'fallback' })
    expect(resolveSshConfig(blocks, 'quoted', ctx).proxyJump).toBeUndefined()
    expect(resolveSshConfig(blocks, 'bastion.example.org', ctx).identityFiles).toEqual(['/home/me/.ssh/global_key', '/keys/bastion key'])
  })

  it('keywords are case-insensitive', () => {
    const b = parseSshConfig('host box\n  HOSTNAME 1.2.3.4\n  user bob\n  port 2022\n')
    expect(resolveSshConfig(b, 'box', ctx)).toMatchObject({ hostName: '1.2.3.4', user: 'bob', port: 2022 })
  })

  it('a missing config file is an empty config', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mp-sshcfg-'))
    expect(await loadSshConfig(join(dir, 'none'))).toEqual([])
    await writeFile(join(dir, 'config'), 'Host a\n  Port 1\n')
    expect(resolveSshConfig(await loadSshConfig(join(dir, 'config')), 'a', ctx).port).toBe(1)
  })
})

describe('jump specs and routes', () => {
  it('parses [user@]host[:port] and bracketed IPv6', () => {
    expect(parseJumpSpec('bastion')).toEqual({ host: 'bastion' })
    expect(parseJumpSpec('admin@bastion:2200')).toEqual({ user: 'admin', host: 'bastion', port: 2200 })
    expect(parseJumpSpec('admin@[2001:db8::1]:2200')).toEqual({ user: 'admin', host: '2001:db8::1', port: 2200 })
    expect(parseJumpSpec('2001:db8::1')).toEqual({ host: '2001:db8::1' })
    expect(() => parseJumpSpec('@host')).toThrow(/expected \[user@\]host\[:port\]/)
  })

  const ssh = (over: Partial<SshSettings> = {}): SshSettings => ({
    user: 'root',
    port: 22,
    knownHostsFile: '/home/me/.ssh/known_hosts',
    hostKeyPolicy: 'strict',
    connectTimeoutMs: 10_000,
    commandTimeoutMs: 60_000,
    keepaliveIntervalMs: 15_000,
    ...over,
  })
  const host = (name: string, address: string, over: Partial<SshSettings> = {}) => ({ name, address, ssh: ssh(over) })
  const defaults = { user: 'root', port: 22, knownHostsFile: '/home/me/.ssh/known_hosts' }
  const sshConfig = parseSshConfig(CONFIG.replace(/~/g, '/home/me'))

  it('an alias takes the config values where the inventory kept its defaults; explicit inventory values win', () => {
    const route = resolveRoute(host('prod', 'matrix-prod'), { sshConfig, defaults })
    expect(route.target).toMatchObject({
      address: 'matrix-prod.internal.example.org',
      user: 'deploy',
      port: 2222,
      identityFile: '/home/me/.ssh/global_key',
      knownHostsFile: '/home/me/.ssh/known_hosts.prod',
    })
    expect(route.hops).toHaveLength(1)
    expect(route.hops[0]).toMatchObject({
      address: 'bastion.example.org',
      user: 'admin',
      port: 2200,
      identityFile: '/home/me/.ssh/global_key',
    })

    const explicit = resolveRoute(host('prod', 'matrix-prod', { user: 'ops', port: 22022, identityFile: '/k', jump: 'none-of-it@j:1' }), {
      sshConfig,
      defaults,
    })
    expect(explicit.target).toMatchObject({ user: 'ops', port: 22022, identityFile: '/k' })
    expect(explicit.hops.map((h) => [h.user, h.address, h.port])).toEqual([['none-of-it', 'j', 1]])
  })

  it('a jump naming an inventory host uses that host (and its own jump), in order; loops are refused', () => {
    const hosts = new Map<string, SshHost>([
      ['edge', host('edge', '203.0.113.5', { user: 'edgeuser', port: 2200, identityFile: '/edge-key' })],
      ['inner', host('inner', '10.0.0.2', { jump: 'edge' })],
      ['loop-a', host('loop-a', 'a', { jump: 'loop-b' })],
      ['loop-b', host('loop-b', 'b', { jump: 'loop-a' })],
    ])
    const route = resolveRoute(host('db', '10.0.0.9', { jump: 'inner' }), { sshConfig: [], defaults, resolveHost: (n) => hosts.get(n) })
    expect(route.hops.map((h) => `${h.user}@${h.address}:${h.port}`)).toEqual(['edgeuser@203.0.113.5:2200', 'root@10.0.0.2:22'])
    expect(route.hops[0]!.identityFile).toBe('/edge-key')
    expect(() => resolveRoute(hosts.get('loop-a')!, { sshConfig: [], defaults, resolveHost: (n) => hosts.get(n) })).toThrow(/loop/)
  })
})
