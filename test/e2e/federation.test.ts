import { readFile } from 'node:fs/promises'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { pipSynapseVars, synapseWheelhouse } from '../support/artifacts.js'
import { startHosts, type TestHosts } from '../support/hosts.js'
import { provision, writeTestInventory } from '../support/inventory.js'
import { createLocalCa } from '../support/local-ca.js'
import { MatrixClient } from '../support/matrix-client.js'
import { until } from '../support/wait.js'
import { jsonReport } from '../support/cli.js'

const ROLES = ['postgres', 'redis', 'synapse', 'workers', 'apache', 'monitoring'] as const

/**
 * Two homeservers provisioned by one run, federating over HTTPS with certificates from a local CA that
 * each Synapse trusts through federation_custom_ca_list (verification stays on).
 */
describe.skipIf(!inject('docker'))('federation between two provisioned homeservers', () => {
  let env: TestHosts
  let ca: string
  const client = (host: 'one' | 'two') => new MatrixClient({ port: env.get(host).port(443), hostname: `matrix.${host}.test`, ca })

  beforeAll(async () => {
    const [wheelhouse, localCa] = await Promise.all([synapseWheelhouse('3.11'), createLocalCa()])
    ca = await readFile(localCa.caFile, 'utf8')
    env = await startHosts(['one', 'two'], {
      ports: [443],
      aliases: { one: ['one.test', 'matrix.one.test'], two: ['two.test', 'matrix.two.test'] },
    })
    const subnet = env.get('one').ip.split('.').slice(0, 2).join('.') + '.0.0/16'
    const hostVars = async (name: 'one' | 'two') => {
      const cert = await localCa.issue(name, [`matrix.${name}.test`, `${name}.test`])
      return {
        serverName: `${name}.test`,
        postgres: { host: name },
        redis: { host: name },
        apache: { tls: { mode: 'files', certificateFile: cert.certFile, keyFile: cert.keyFile } },
      }
    }
    const inventory = await writeTestInventory(
      env,
      [
        { name: 'one', roles: [...ROLES], vars: await hostVars('one') },
        { name: 'two', roles: [...ROLES], vars: await hostVars('two') },
      ],
      {
        serverName: 'placeholder.test',
        synapse: {
          ...pipSynapseVars(wheelhouse),
          federationCaFiles: [localCa.caFile],
          // The test network is private address space, which Synapse refuses for federation by default;
          // and matrix.org (the default key server) is unreachable here: keys are fetched from the servers.
          extraConfig: { ip_range_whitelist: [subnet], trusted_key_servers: [] },
        },
      },
    )
    const r = await provision(['--inventory', inventory, '--json'])
    const report = jsonReport(r.stdout)
    console.log(`federation pair first run ${report.durationMs} ms`)
    expect(
      report.hosts.map((h: { status: string; error?: string }) => h.error ?? h.status),
      r.stderr,
    ).toEqual(['changed', 'changed'])
    for (const [host, user] of [
      ['one', 'alice'],
      ['two', 'bob'],
    ] as const) {
      const reg = await env
        .get(host)
        .exec(
          `printf 'pw-${user}-123456' | /opt/venvs/matrix-synapse/bin/register_new_matrix_user -c /etc/matrix-synapse/conf.d/30-secrets.yaml -u ${user} --password-file /dev/stdin --no-admin http://127.0.0.1:8008`,
        )
      expect(reg.exitCode, reg.output).toBe(0)
    }
  })
  afterAll(async () => {
    await env?.stop()
  })

  it('alice@one invites bob@two, bob joins, and alice’s message arrives on two', async () => {
    const alice = client('one')
    const bob = client('two')
    await alice.login('alice', 'pw-alice-123456')
    await bob.login('bob', 'pw-bob-123456')
    const room = await alice.call<{ room_id: string }>('POST', '/_matrix/client/v3/createRoom', {
      invite: ['@bob:two.test'],
      preset: 'private_chat',
    })
    expect(room.status, room.text).toBe(200)
    const roomId = room.json.room_id
    await until('the invite on two', async () => {
      const s = await bob.call<{ rooms?: { invite?: Record<string, unknown> } }>('GET', '/_matrix/client/v3/sync?timeout=0')
      return s.json.rooms?.invite?.[roomId] ? true : undefined
    })
    const join = await bob.call('POST', `/_matrix/client/v3/join/${encodeURIComponent(roomId)}`, {})
    expect(join.status, join.text).toBe(200)
    const marker = `across federation ${Date.now()}`
    const sent = await alice.call('PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/f1`, {
      msgtype: 'm.text',
      body: marker,
    })
    expect(sent.status).toBe(200)
    try {
      // /messages, not a full /sync: Synapse serves identical initial syncs from a cache for a while.
      const messages = `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=20`
      await until('the message on two', async () => ((await bob.call('GET', messages)).text.includes(marker) ? true : undefined))
    } catch (error) {
      // What the workers saw, for the failure message.
      const senderLog = await env.get('one').exec("grep -E 'two.test|Error|error' /var/log/matrix-synapse/federation_sender.log | tail -25")
      const readerLog = await env
        .get('two')
        .exec("grep -v -E 'STARTING|Copyright|Licensed|Server /opt' /var/log/matrix-synapse/federation_reader.log | tail -40")
      const mainLog = await env
        .get('two')
        .exec("grep -v -E '/sync|STARTING|Copyright|Licensed|Server /opt' /var/log/matrix-synapse/homeserver.log | tail -40")
      console.log(`SENDER(one):\n${senderLog.stdout}\nREADER(two):\n${readerLog.stdout}\nMAIN(two):\n${mainLog.stdout}`)
      throw error
    }
  })

  it("one's federation_sender sent the transaction and two's federation_reader received it", async () => {
    const sent = await env
      .get('one')
      .exec("grep -c 'PUT matrix-federation://two.test/_matrix/federation/v1/send/' /var/log/matrix-synapse/federation_sender.log")
    expect(Number(sent.stdout.trim()), 'sender log').toBeGreaterThanOrEqual(1)
    const mainSent = await env
      .get('one')
      .exec("grep -c 'PUT matrix-federation://two.test/_matrix/federation/v1/send/' /var/log/matrix-synapse/homeserver.log")
    expect(Number(mainSent.stdout.trim() || 0), 'main process sends no transactions').toBe(0)
    const received = await env.get('two').exec("grep -c 'PUT /_matrix/federation/v1/send/' /var/log/matrix-synapse/federation_reader.log")
    expect(Number(received.stdout.trim()), 'reader log').toBeGreaterThanOrEqual(1)
  })
})
