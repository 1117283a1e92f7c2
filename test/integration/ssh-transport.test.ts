import { execFile } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, readFile, stat, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:net'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import type { HostSpec } from '../../src/inventory/types.js'
import type { SshSettings } from '../../src/ssh/settings.js'
import { Secret } from '../../src/core/secret.js'
import { RemoteCommandError } from '../../src/ssh/connection.js'
import { sh } from '../../src/core/shell.js'
import { ConnectError, HostKeyError } from '../../src/ssh/errors.js'
import { connect } from '../../src/ssh/connect.js'
import type { SshLogEvent } from '../../src/ssh/connect-options.js'
import type { SshConnection } from '../../src/ssh/ssh-connection.js'
import { startHosts, type TestHost, type TestHosts } from '../support/hosts.js'
import { until } from '../support/wait.js'

const run = promisify(execFile)
const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex')

describe.skipIf(!inject('docker'))('SSH transport on real hosts', () => {
  let env: TestHosts
  let a: TestHost
  let b: TestHost
  let work: string
  const open: SshConnection[] = []

  function spec(host: TestHost, over: Partial<SshSettings> = {}, address = host.sshHost): HostSpec {
    const ssh: SshSettings = {
      user: 'root',
      port: host.sshPort,
      identityFile: env.keyFile,
      knownHostsFile: env.knownHostsFile,
      hostKeyPolicy: 'strict',
      connectTimeoutMs: 20_000,
      commandTimeoutMs: 120_000,
      keepaliveIntervalMs: 10_000,
      ...over,
    }
    return { name: host.name, address, privateAddress: host.ip, ssh, roles: [], vars: {} as HostSpec['vars'] }
  }

  async function conn(host: HostSpec, options: Parameters<typeof connect>[1] = {}): Promise<SshConnection> {
    const c = await connect(host, { sshConfigFile: false, ...options })
    open.push(c)
    return c
  }

  /** sshd's count of successful logins on a host (journal), to prove a refused connection never authenticated. */
  async function acceptedLogins(host: TestHost): Promise<number> {
    const r = await host.exec('journalctl --no-pager -o cat _COMM=sshd | grep -c "Accepted publickey" || true')
    return Number(r.stdout.trim())
  }

  async function hostKey(host: TestHost, type: 'ed25519' | 'rsa' | 'ecdsa'): Promise<string> {
    return (await host.exec(`cat /etc/ssh/ssh_host_${type}_key.pub`)).stdout.trim().split(' ').slice(0, 2).join(' ')
  }

  beforeAll(async () => {
    env = await startHosts(['a', 'b'])
    a = env.get('a')
    b = env.get('b')
    work = await mkdtemp(join(env.dir, 'work-'))
  })
  afterAll(async () => {
    await Promise.all(open.map((c) => c.close()))
    await env?.stop()
  })

  it('connects as root and as the sudo user; every command runs as root', async () => {
    const root = await conn(spec(a))
    const deploy = await conn(spec(a, { user: 'deploy' }))
    expect(root.privilege).toBe('root')
    expect(deploy.privilege).toBe('sudo')
    for (const c of [root, deploy]) {
      const r = await c.run(sh`id -un`)
      expect(r).toMatchObject({ code: 0, stdout: 'root\n', stderr: '', timedOut: false, command: 'id -un' })
    }
    // Output is not trimmed, and multi-byte characters survive chunking.
    const text = '  spaced  \n' + 'ü'.repeat(100_000) + '\n'
    const echo = await deploy.run(sh`cat`, { stdin: text })
    expect(echo.stdout).toBe(text)
    const fail = await deploy.run(sh`echo out; echo err >&2; exit 7`, { allowFailure: true })
    expect(fail).toMatchObject({ code: 7, stdout: 'out\n', stderr: 'err\n' })
    // Without allowFailure the same command throws, carrying its result.
    const thrown = await deploy.run(sh`echo out; echo err >&2; exit 7`).catch((error: unknown) => error)
    expect(thrown).toBeInstanceOf(RemoteCommandError)
    expect((thrown as RemoteCommandError).result).toMatchObject({ code: 7, stdout: 'out\n', stderr: 'err\n' })
    expect((thrown as RemoteCommandError).message).toMatch(/failed with exit code 7: echo out; echo err >&2; exit 7\nerr$/)
  })

  it('refuses a host whose key differs from known_hosts, under both policies, before authenticating', async () => {
    const dir = await mkdtemp(join(work, 'wrong-'))
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'impostor')])
    const impostor = (await readFile(join(dir, 'impostor.pub'), 'utf8')).split(' ').slice(0, 2).join(' ')
    const knownHosts = join(dir, 'known_hosts')
    const content = `[127.0.0.1]:${a.sshPort} ${impostor}\n`
    await writeFile(knownHosts, content)
    const before = await acceptedLogins(a)
    const events: SshLogEvent[] = []
    for (const hostKeyPolicy of ['strict', 'accept-new'] as const) {
      const error = await connect(spec(a, { knownHostsFile: knownHosts, hostKeyPolicy }), {
        sshConfigFile: false,
        log: (e) => events.push(e),
      }).then(
        () => null,
        (e: unknown) => e,
      )
      expect(error).toBeInstanceOf(HostKeyError)
      const hk = error as HostKeyError
      expect(hk.kind).toBe('host-key')
      expect(hk.reason).toBe('changed')
      expect(hk.message).toContain(knownHosts)
      expect(hk.message).toContain(`[127.0.0.1]:${a.sshPort}`)
      expect(hk.message).toContain('ssh-keygen -R')
      // The fingerprint named is the host's real ed25519 key, as ssh-keygen prints it.
      const realFp = (await a.exec('ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub')).stdout.split(' ')[1]!
      expect(hk.fingerprint).toBe(realFp)
      expect(hk.message).toContain(realFp)
    }
    expect(await readFile(knownHosts, 'utf8')).toBe(content) // nothing appended
    expect(events.filter((e) => e.command !== undefined)).toEqual([]) // no command was attempted
    await new Promise((r) => setTimeout(r, 1_000)) // let the journal catch up
    expect(await acceptedLogins(a)).toBe(before) // sshd never saw a successful authentication
    // The counter does count: a good connection moves it by exactly one (the journal is in order,
    // so a late entry from the refused attempts would show up here as +2 or more).
    await conn(spec(a))
    const after = await until(
      'the good login in the journal',
      async () => {
        const n = await acceptedLogins(a)
        return n === before ? undefined : n
      },
      { timeoutMs: 60_000 },
    )
    expect(after).toBe(before + 1)
  })

  it('unknown host: strict refuses with advice; accept-new learns the key, after which strict accepts', async () => {
    const dir = await mkdtemp(join(work, 'unknown-'))
    const knownHosts = join(dir, 'ssh', 'known_hosts')
    const strict = await connect(spec(a, { knownHostsFile: knownHosts }), { sshConfigFile: false }).then(
      () => null,
      (e: unknown) => e,
    )
    expect(strict).toBeInstanceOf(HostKeyError)
    expect((strict as HostKeyError).reason).toBe('unknown')
    expect((strict as Error).message).toContain(
      `host key for [127.0.0.1]:${a.sshPort} is not in ${knownHosts}; verify it and add it (ssh-keyscan`,
    )
    expect((strict as Error).message).toContain('or set ssh.hostKeyPolicy: accept-new')
    await expect(stat(knownHosts)).rejects.toThrow()

    const learned = await conn(spec(a, { knownHostsFile: knownHosts, hostKeyPolicy: 'accept-new' }))
    expect((await learned.run(sh`hostname`)).stdout).toBe('a\n')
    expect(await readFile(knownHosts, 'utf8')).toBe(`[127.0.0.1]:${a.sshPort} ${await hostKey(a, 'ed25519')}\n`)
    expect((await stat(knownHosts)).mode & 0o777).toBe(0o600)
    expect((await stat(join(dir, 'ssh'))).mode & 0o777).toBe(0o700)
    const again = await conn(spec(a, { knownHostsFile: knownHosts }))
    expect((await again.run(sh`true`)).code).toBe(0)
  })

  it('a host known only by its RSA key is verified (the algorithm-order trap)', async () => {
    const knownHosts = join(await mkdtemp(join(work, 'rsa-')), 'known_hosts')
    await writeFile(knownHosts, `[127.0.0.1]:${a.sshPort} ${await hostKey(a, 'rsa')}\n`)
    const c = await conn(spec(a, { knownHostsFile: knownHosts }))
    expect((await c.run(sh`true`)).code).toBe(0)
  })

  it('classifies connect failures: unreachable, timeout, auth; with advice', async () => {
    // Nothing listens on this port.
    const closed = createServer()
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r))
    const closedPort = (closed.address() as { port: number }).port
    await new Promise((r) => closed.close(r))
    const refused = await connect(spec(a, { port: closedPort }), { sshConfigFile: false }).catch((e: unknown) => e)
    expect(refused).toBeInstanceOf(ConnectError)
    expect(refused).toMatchObject({ kind: 'unreachable' })
    expect((refused as Error).message).toMatch(/nothing accepts connections on port \d+/)

    // Accepts TCP, never speaks SSH.
    const silent: Server = createServer(() => undefined)
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r))
    const silentPort = (silent.address() as { port: number }).port
    const started = Date.now()
    const timeout = await connect(spec(a, { port: silentPort, connectTimeoutMs: 1_500 }), { sshConfigFile: false }).catch((e: unknown) => e)
    expect(Date.now() - started).toBeLessThan(10_000)
    expect(timeout).toMatchObject({ kind: 'timeout' })
    expect((timeout as Error).message).toContain('within 1500 ms')
    silent.close()

    // A key the host does not know.
    const dir = await mkdtemp(join(work, 'auth-'))
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'stranger')])
    const denied = await connect(spec(a, { identityFile: join(dir, 'stranger') }), { sshConfigFile: false }).catch((e: unknown) => e)
    expect(denied).toMatchObject({ kind: 'auth' })
    expect((denied as Error).message).toContain('authorized_keys')
  })

  it('writeFile installs atomically with owner and mode, as root and through sudo; no temp file remains', async () => {
    for (const user of ['root', 'deploy']) {
      const c = await conn(spec(a, { user }))
      await a.exec('mkdir -p /etc/mp-test')
      const content = `# written by ${user}\nkey: "value with 'quotes' and $(not run)"\n`
      await c.writeFile({ path: `/etc/mp-test/${user}.conf`, content, owner: 'deploy', group: 'deploy', mode: 0o640 })
      const st = await a.exec(`stat -c '%U:%G %a' /etc/mp-test/${user}.conf; cat /etc/mp-test/${user}.conf`)
      expect(st.stdout).toBe(`deploy:deploy 640\n${content}`)
      // Defaults: root:root 0644; a Buffer works too.
      await c.writeFile({ path: '/etc/mp-test/plain', content: Buffer.from([0, 1, 2, 255]) })
      expect((await a.exec("stat -c '%U:%G %a %s' /etc/mp-test/plain")).stdout).toBe('root:root 644 4\n')
      expect((await a.exec('ls -A /etc/mp-test | grep -c "\\.mp-" || true')).stdout.trim()).toBe('0')
    }
    const c = await conn(spec(a, { user: 'deploy' }))
    // The parent must exist: nothing is created silently.
    const missing = await c.writeFile({ path: '/etc/mp-missing/dir/file', content: 'x' }).catch((e: unknown) => e)
    expect(missing).toBeInstanceOf(RemoteCommandError)
    expect((missing as Error).message).toContain('directory /etc/mp-missing/dir does not exist')
    expect((await a.exec('test -e /etc/mp-missing; echo $?')).stdout.trim()).toBe('1')
    // A failed write (unknown owner) leaves the old file and no temp file.
    await c.writeFile({ path: '/etc/mp-test/keep', content: 'old' })
    await expect(c.writeFile({ path: '/etc/mp-test/keep', content: 'new', owner: 'nosuchuser' })).rejects.toThrow(RemoteCommandError)
    expect((await a.exec('cat /etc/mp-test/keep; ls -A /etc/mp-test | grep -c "\\.mp-" || true')).stdout).toBe('old0\n')
  })

  it('writeFiles: many files in one round trip, each exact and atomic, through sudo; the first failure stops the rest', async () => {
    const events: SshLogEvent[] = []
    const c = await conn(spec(a, { user: 'deploy' }), { log: (e) => events.push(e) })
    await a.exec('mkdir -p /etc/mp-batch && rm -f /etc/mp-batch/*')
    const secretValue = `batch-secret-${randomBytes(8).toString('hex')}`
    const files = [
      { path: '/etc/mp-batch/empty', content: '' },
      { path: '/etc/mp-batch/binary', content: Buffer.from([0, 10, 13, 255, 10]), mode: 0o600 },
      { path: '/etc/mp-batch/secret.yaml', content: new Secret(`password: ${secretValue}\n`, 'test'), owner: 'deploy', group: 'deploy' },
      { path: '/etc/mp-batch/big', content: 'x'.repeat(300_000) + '\n' },
      { path: '/etc/mp-batch/last', content: 'tail\n', mode: 0o640 },
    ]
    const before = events.length
    await c.writeFiles(files)
    expect(events.length - before).toBe(1) // one command: one round trip
    const st = await a.exec(
      "cd /etc/mp-batch && stat -c '%n %U:%G %a %s' empty binary secret.yaml big last && sha256sum binary last && ls -A | grep -c '\\.mp-' || true",
    )
    expect(st.stdout).toContain('empty root:root 644 0\nbinary root:root 600 5\nsecret.yaml deploy:deploy 600 ')
    expect(st.stdout).toContain('big root:root 644 300001\nlast root:root 640 5\n')
    expect(st.stdout).toContain(
      `${createHash('sha256')
        .update(Buffer.from([0, 10, 13, 255, 10]))
        .digest('hex')}  binary`,
    )
    expect(st.stdout).toContain(`${createHash('sha256').update('tail\n').digest('hex')}  last`)
    expect((await a.exec('cat /etc/mp-batch/secret.yaml')).stdout).toBe(`password: ${secretValue}\n`)
    expect(JSON.stringify(events)).not.toContain(secretValue)
    // The second of three cannot be written: the first is in place, the third is not (nor read from the second's bytes).
    const failed = await c
      .writeFiles([
        { path: '/etc/mp-batch/one', content: 'one\n' },
        { path: '/etc/mp-batch-missing/two', content: 'two\n' },
        { path: '/etc/mp-batch/three', content: 'three\n' },
      ])
      .catch((e: unknown) => e)
    expect(failed).toBeInstanceOf(RemoteCommandError)
    expect((failed as Error).message).toContain('directory /etc/mp-batch-missing does not exist')
    expect((await a.exec('cat /etc/mp-batch/one; test -e /etc/mp-batch/three; echo $?')).stdout).toBe('one\n1\n')
  })

  it('a Secret travels on stdin only: never on a process list or in a logged command; the file is 0600', async () => {
    const value = `s3cr3t-${randomBytes(12).toString('hex')}`
    const secret = new Secret(`password: ${value}\n${'padding line\n'.repeat(400_000)}`, 'test')
    const events: SshLogEvent[] = []
    const c = await conn(spec(a, { user: 'deploy' }), { log: (e) => events.push(e) })
    await a.exec('mkdir -p /etc/mp-secret')
    // Watch the process list on the host while writing (several times, ~5 MB each).
    const watcher = a.exec(`end=$(($(date +%s)+6)); while [ $(date +%s) -lt $end ]; do ps -eo args; done`)
    for (let i = 0; i < 4; i++)
      await c.writeFile({ path: '/etc/mp-secret/synapse.yaml', content: secret, owner: 'deploy', group: 'deploy' })
    const seen = await watcher
    expect(seen.stdout).toContain('ps -eo args') // the watcher did see processes
    expect(seen.stdout).not.toContain(value)
    expect((await a.exec("stat -c '%U:%G %a' /etc/mp-secret/synapse.yaml")).stdout).toBe('deploy:deploy 600\n')
    expect((await a.exec('head -c 100 /etc/mp-secret/synapse.yaml')).stdout).toContain(value)
    const logged = JSON.stringify(events)
    expect(logged).toContain('/etc/mp-secret/synapse.yaml')
    expect(logged).not.toContain(value)
  })

  it('sudo with a password: the password goes on stdin, commands run as root, stdin data still arrives', async () => {
    const password = `pw-${randomBytes(8).toString('hex')}`
    await a.exec(
      [
        'useradd -m -s /bin/bash pwuser',
        `echo 'pwuser:${password}' | chpasswd`,
        "echo 'pwuser ALL=(ALL) ALL' > /etc/sudoers.d/pwuser",
        'mkdir -p /home/pwuser/.ssh',
        'cp /root/.ssh/authorized_keys /home/pwuser/.ssh/',
        'chown -R pwuser:pwuser /home/pwuser/.ssh',
      ].join(' && '),
    )
    const noPassword = await connect(spec(a, { user: 'pwuser' }), { sshConfigFile: false }).catch((e: unknown) => e)
    expect(noPassword).toMatchObject({ kind: 'auth' })
    expect((noPassword as Error).message).toContain('set ssh.sudoPassword')
    const wrong = await connect(spec(a, { user: 'pwuser' }), { sshConfigFile: false, sudoPassword: 'not-it' }).catch((e: unknown) => e)
    expect(wrong).toMatchObject({ kind: 'auth' })
    expect((wrong as Error).message).toContain('sudo refused the password')

    const events: SshLogEvent[] = []
    const c = await conn(spec(a, { user: 'pwuser' }), { sudoPassword: new Secret(password, 'test'), log: (e) => events.push(e) })
    expect(c.privilege).toBe('sudo-password')
    const watcher = a.exec(`end=$(($(date +%s)+3)); while [ $(date +%s) -lt $end ]; do ps -eo args; done`)
    for (let i = 0; i < 5; i++) {
      expect((await c.run(sh`id -un`)).stdout).toBe('root\n')
      // Twice in a row: sudo's cached credentials must not make the password line leak into stdin.
      expect((await c.run(sh`cat`, { stdin: 'payload' })).stdout).toBe('payload')
    }
    await c.writeFile({ path: '/etc/mp-test/pw', content: 'via sudo -S\n' })
    expect((await a.exec("stat -c '%U %a' /etc/mp-test/pw; cat /etc/mp-test/pw")).stdout).toBe('root 644\nvia sudo -S\n')
    expect((await watcher).stdout).not.toContain(password)
    expect(JSON.stringify(events)).not.toContain(password)
  })

  it('20 concurrent commands on one connection all succeed, round after round (MaxSessions 10 respected)', async () => {
    const c = await conn(spec(a, { user: 'deploy' }))
    for (let round = 0; round < 6; round++) {
      // Short and longer commands: bursts of closes are what exhaust sshd's session slots.
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => c.run(sh`sleep 0.${round}; echo ${i}`)))
      expect(results.map((r) => [r.code, r.stdout, r.stderr])).toEqual(Array.from({ length: 20 }, (_, i) => [0, `${i}\n`, '']))
    }
  })

  it('a command past its deadline returns timedOut and its remote process dies', async () => {
    for (const user of ['root', 'deploy']) {
      const c = await conn(spec(a, { user }))
      const started = Date.now()
      const r = await c.run(sh`echo started; sleep 47.5; echo never`, { timeoutMs: 1_000, allowFailure: true })
      expect(r.timedOut).toBe(true)
      expect(r.code).toBeNull()
      expect(r.stdout).toBe('started\n')
      expect(r.durationMs).toBeLessThan(2_500)
      await until(
        'the timed-out command gone from the host',
        async () => (await a.exec("pgrep -f 'slee[p] 47.5' || true")).stdout.trim() === '',
        { timeoutMs: 30_000, intervalMs: 200 },
      )
      // Killed by our TERM, not by the host-side backstop (deadline + 5 s).
      expect(Date.now() - started).toBeLessThan(5_000)
      // The connection is still usable.
      expect((await c.run(sh`echo fine`)).stdout).toBe('fine\n')
    }
  })

  it('a connection killed on the host: running and later commands resolve with code null; other hosts carry on', async () => {
    const victim = await conn(spec(a, { user: 'deploy' }))
    const other = await conn(spec(b))
    const running = victim.run(sh`sleep 60`, { allowFailure: true })
    const lock = victim.spawn(sh`echo READY; exec cat >/dev/null`)
    await lock.waitForOutput(/READY/, 10_000)
    await new Promise((r) => setTimeout(r, 300))
    await a.exec("pkill -f 'sshd:.*@' || true")
    const result = await running
    expect(result.code).toBeNull()
    expect(result.timedOut).toBe(false)
    expect(result.stderr).toMatch(/connection to a lost|channel closed/)
    expect((await lock.exited).code).toBeNull()
    expect(victim.isAlive()).toBe(false)
    const later = await victim.run(sh`true`, { allowFailure: true })
    await expect(victim.run(sh`true`)).rejects.toThrow(/cut off/)
    expect(later.code).toBeNull()
    expect(later.stderr).toContain('connection to a lost')
    await expect(victim.writeFile({ path: '/tmp/x', content: 'x' })).rejects.toThrow(/cut off/)
    expect((await other.run(sh`hostname`)).stdout).toBe('b\n')
    expect(other.isAlive()).toBe(true)
    await victim.close()
    await victim.close() // idempotent
  })

  it('putDirectory sends 50 files (dotfiles, subdirectories) as one tar stream, intact, with owner and mode', async () => {
    const local = await mkdtemp(join(work, 'wheelhouse-'))
    const expected: Record<string, string> = {}
    for (let i = 0; i < 50; i++) {
      const name = i % 10 === 0 ? `.hidden-${i}` : i % 3 === 0 ? `sub/dir-${i % 2}/pkg-${i}.whl` : `pkg-${i}.whl`
      const data = randomBytes(1000 + i * 997)
      await mkdir(join(local, name, '..'), { recursive: true })
      await writeFile(join(local, name), data)
      expected[`./${name}`] = sha256(data)
    }
    const c = await conn(spec(a, { user: 'deploy' }))
    await a.exec('mkdir -p /opt/mp')
    await c.putDirectory(local, '/opt/mp/wheels', { owner: 'deploy', group: 'deploy' })
    const listed = await a.exec("cd /opt/mp/wheels && find . -type f -exec sha256sum {} + | awk '{print $2, $1}' | sort")
    const remote = Object.fromEntries(
      listed.stdout
        .trim()
        .split('\n')
        .map((l) => l.split(' ') as [string, string]),
    )
    expect(Object.keys(remote)).toHaveLength(50)
    expect(remote).toEqual(expected)
    expect((await a.exec("stat -c '%U:%G %a' /opt/mp/wheels /opt/mp/wheels/.hidden-0 /opt/mp/wheels/sub")).stdout).toBe(
      'deploy:deploy 755\ndeploy:deploy 644\ndeploy:deploy 755\n',
    )
    // Again, with a mode: existing files are replaced.
    await c.putDirectory(local, '/opt/mp/wheels', { owner: 'root', group: 'root', mode: 0o640 })
    expect((await a.exec("stat -c '%U:%G %a' /opt/mp/wheels/pkg-1.whl /opt/mp/wheels/sub")).stdout).toBe('root:root 640\nroot:root 750\n')
  })

  it('putFile streams a 30 MB file through sudo, atomically', async () => {
    const local = join(work, 'big.tar.gz')
    const data = randomBytes(30 * 1024 * 1024)
    await writeFile(local, data)
    const c = await conn(spec(a, { user: 'deploy' }))
    const started = Date.now()
    await c.putFile(local, '/opt/mp/big.tar.gz', { owner: 'deploy', group: 'deploy', mode: 0o600 })
    const took = Date.now() - started
    const remote = await a.exec("sha256sum /opt/mp/big.tar.gz | cut -d' ' -f1; stat -c '%U:%G %a' /opt/mp/big.tar.gz")
    expect(remote.stdout).toBe(`${sha256(data)}\ndeploy:deploy 600\n`)
    expect(took).toBeLessThan(60_000)
  })

  it('relays a stream host to host through the controller; a receiver that dies early ends the sender too', async () => {
    const [ca, cb] = await Promise.all([conn(spec(a)), conn(spec(b))])
    const { PassThrough } = await import('node:stream')
    const relay = async (send: ReturnType<typeof sh>, receive: ReturnType<typeof sh>) => {
      const pipe = new PassThrough({ highWaterMark: 1 << 20 })
      const receiving = cb.run(receive, { stdin: pipe, timeoutMs: 0, allowFailure: true })
      const sending = ca.run(send, { stdoutTo: pipe, timeoutMs: 0, allowFailure: true }).then((r) => {
        if (r.code === 0) pipe.end()
        else pipe.destroy(new Error(`sender exited ${r.code}`))
        return r
      })
      return Promise.all([sending, receiving])
    }
    await a.exec('head -c 40000000 /dev/urandom > /root/relay.bin')
    const [sent, received] = await relay(sh`cat /root/relay.bin`, sh`cat > /root/relay.bin`)
    expect([sent.code, received.code]).toEqual([0, 0])
    const sums = await Promise.all([a, b].map(async (h) => (await h.exec("sha256sum /root/relay.bin | cut -d' ' -f1")).stdout))
    expect(sums[1]).toBe(sums[0])
    // The receiver reads 1 byte and exits: before the fix the sender's channel stayed paused and never closed.
    const started = Date.now()
    const [cut, early] = await relay(sh`cat /root/relay.bin /root/relay.bin /root/relay.bin`, sh`head -c 1 >/dev/null`)
    expect(early.code).toBe(0)
    expect(cut.code).not.toBe(0)
    expect(cut.stderr).toContain('the output stream was closed')
    expect(Date.now() - started).toBeLessThan(30_000)
    expect((await a.exec('pgrep -x cat || true')).stdout.trim()).toBe('')
  })

  it('spawn holds a flock lock for as long as we want; a second holder is refused; end() releases it', async () => {
    const first = await conn(spec(a, { user: 'deploy' }))
    const second = await conn(spec(a))
    const script = sh`exec 9>>/run/mp-test.lock; if flock -n 9; then echo LOCKED; exec cat >/dev/null; else echo BUSY; fi`
    const holder = first.spawn(script)
    expect(await holder.waitForOutput(/LOCKED|BUSY/, 10_000)).toBe('LOCKED\n')
    const contender = second.spawn(script)
    expect(await contender.waitForOutput(/LOCKED|BUSY/, 10_000)).toBe('BUSY\n')
    expect((await contender.exited).code).toBe(0)
    holder.end()
    expect((await holder.exited).code).toBe(0)
    const after = second.spawn(script)
    expect(await after.waitForOutput(/LOCKED|BUSY/, 10_000)).toBe('LOCKED\n')
    after.end()
    await after.exited
    await expect(second.spawn(sh`exit 3`).waitForOutput(/never/, 5_000)).rejects.toThrow(/ended \(exit code 3\)/)
  })

  it('reaches a host through a jump host, verifying both host keys', async () => {
    const knownHosts = join(await mkdtemp(join(work, 'jump-')), 'known_hosts')
    await writeFile(knownHosts, `[127.0.0.1]:${a.sshPort} ${await hostKey(a, 'ed25519')}\nb ${await hostKey(b, 'ed25519')}\n`)
    // b by its name on the test network, port 22, reached from a.
    const target = spec(b, { port: 22, knownHostsFile: knownHosts, jump: `root@127.0.0.1:${a.sshPort}` }, 'b')
    const c = await conn(target)
    expect(c.hops).toHaveLength(1)
    expect((await c.run(sh`hostname`)).stdout).toBe('b\n')
    await c.close()

    // The target's key is checked too: b's key listed under the wrong name is refused.
    await writeFile(knownHosts, `[127.0.0.1]:${a.sshPort} ${await hostKey(a, 'ed25519')}\nb ${await hostKey(a, 'ed25519')}\n`)
    const refused = await connect(target, { sshConfigFile: false }).catch((e: unknown) => e)
    expect(refused).toBeInstanceOf(HostKeyError)
    expect((refused as HostKeyError).reason).toBe('changed')
  })

  it('an inventory address that is an ~/.ssh/config alias uses its HostName, Port, User and IdentityFile', async () => {
    const config = join(await mkdtemp(join(work, 'cfg-')), 'config')
    await writeFile(config, `Host mp-alias-a\n  HostName 127.0.0.1\n  Port ${a.sshPort}\n  User deploy\n  IdentityFile ${env.keyFile}\n`)
    const host = spec(a, { port: 22 }, 'mp-alias-a')
    delete host.ssh.identityFile
    const c = await connect(host, {
      sshConfigFile: config,
      inventoryDefaults: { user: 'root', port: 22, knownHostsFile: env.knownHostsFile },
    })
    open.push(c)
    expect(c.endpoint).toMatchObject({ address: '127.0.0.1', port: a.sshPort, user: 'deploy' })
    expect((await c.run(sh`id -un`)).stdout).toBe('root\n')
  })
})
