import { NodeSSH } from 'node-ssh'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { startHosts, type TestHosts } from '../support/hosts.js'

describe.skipIf(!inject('docker'))('target hosts (real systemd containers over real SSH)', () => {
  let env: TestHosts
  beforeAll(async () => {
    env = await startHosts(['alpha', 'beta'])
  })
  afterAll(async () => {
    await env?.stop()
  })

  it('reaches both hosts over SSH as root and as the sudo user, with systemd running', async () => {
    for (const host of env.hosts) {
      for (const username of ['root', 'deploy']) {
        const ssh = new NodeSSH()
        await ssh.connect({ host: host.sshHost, port: host.sshPort, username, privateKeyPath: env.keyFile })
        const state = await ssh.execCommand('systemctl is-system-running')
        expect(state.stdout).toBe('running')
        const who = await ssh.execCommand(username === 'root' ? 'id -un' : 'sudo -n id -un')
        expect(who.stdout).toBe('root')
        expect((await ssh.execCommand('hostname')).stdout).toBe(host.name)
        ssh.dispose()
      }
    }
  })

  it('host alpha reaches host beta by name on the test network', async () => {
    const ssh = new NodeSSH()
    const alpha = env.get('alpha')
    await ssh.connect({ host: alpha.sshHost, port: alpha.sshPort, username: 'root', privateKeyPath: env.keyFile })
    const resolved = await ssh.execCommand('getent hosts beta')
    expect(resolved.stdout.split(/\s+/)[0]).toBe(env.get('beta').ip)
    // beta's sshd answers alpha over the network: a real TCP connection between the two hosts.
    const banner = await ssh.execCommand('timeout 5 bash -c "exec 3<>/dev/tcp/beta/22; head -c 7 <&3"')
    expect(banner.stdout).toBe('SSH-2.0')
    ssh.dispose()
  })

  it('each container has its own host keys, written to known_hosts', async () => {
    const keys = await Promise.all(env.hosts.map((h) => h.exec('cat /etc/ssh/ssh_host_ed25519_key.pub')))
    expect(keys[0]!.stdout).not.toBe(keys[1]!.stdout)
  })
})
