/**
 * A reload that only signals the unit (Apache's graceful) returns before the new configuration serves:
 * the ledger waits until the unit's generation probe shows a new generation, and an after-check never
 * sees the old one. The fake answers the apache task's real probe, with the old generation for
 * `apacheReloadLag` probes after each reload.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { runHost } from '../../src/engine/host-run.js'
import { awaitNewGeneration, readGeneration } from '../../src/engine/reload-wait.js'
import type { Task } from '../../src/engine/task.js'
import { loadInventoryFromString } from '../../src/inventory/load.js'
import { file } from '../../src/resources/file.js'
import { service } from '../../src/resources/systemd-service.js'
import { sh } from '../../src/core/shell.js'
import { HOST_RECORD, PENDING_RESTARTS, STATE_DIR } from '../../src/synapse/paths.js'
import { reloadServing, serverGeneration } from '../../tasks/apache/index.js'
import { FakeHost } from './fake-host.js'
import { DEBIAN_12 } from './fixtures/hosts/distros.js'

const inventory = await loadInventoryFromString(
  'defaults:\n  vars: { serverName: example.org }\nhosts:\n  web: { address: 203.0.113.10, roles: [apache] }\n',
  '/tmp/reload-wait.yaml',
)
const vars = inventory.hosts[0]!.vars
const APACHE = 'apache2.service'
const SITE = '/etc/apache2/sites-enabled/element.conf'
const probe = serverGeneration(vars)

function apacheHost(): FakeHost {
  const host = new FakeHost(DEBIAN_12, 'web')
  host.put(`/lib/systemd/system/${APACHE}`, '[Unit]\nDescription=Apache\n')
  host.mkdirp('/etc/apache2/sites-enabled')
  host.startUnit(APACHE, true)
  host.mkdirp(STATE_DIR)
  host.put(HOST_RECORD, '{"managedBy":"matrix-provision","origin":"provisioned","since":"2026-11-30"}\n', { mode: 0o600 })
  return host
}

/** A vhost written, Apache reloaded, then an after-check that reads the generation serving once (as curlVhost reads a page once). */
function apacheTask(host: FakeHost, seen: string[]): Task {
  return {
    name: 'apache',
    title: 'apache',
    resources: () => [
      file({ path: SITE, content: '<VirtualHost *:443>\n</VirtualHost>\n' }),
      service({ unit: APACHE, watch: ['/etc/apache2/'], reload: true, validate: sh`apache2ctl configtest`, generation: probe }),
    ],
    after: () => [
      {
        name: 'the new configuration serves',
        async run(conn) {
          const now = await readGeneration(conn, probe)
          seen.push(now)
          return now === String(host.apacheGeneration)
            ? { ok: true, detail: `generation ${now}` }
            : { ok: false, detail: `generation ${now} serves, not ${host.apacheGeneration}` }
        },
      },
    ],
  }
}

describe('a reload whose new configuration serves later', () => {
  it('is done only once the new generation answers: the after-check sees it, not the old vhosts', async () => {
    const host = apacheHost()
    host.apacheReloadLag = 3
    const seen: string[] = []
    const report = await runHost({ ...inventory.hosts[0]!, roles: ['apache'] }, host, {
      mode: 'apply',
      tasks: [apacheTask(host, seen)],
      inventory,
    })
    expect(host.unexpected).toEqual([])
    expect(report.error ?? report.status).toBe('changed')
    expect(host.restarts).toEqual([`reload ${APACHE}`])
    expect(seen).toEqual(['2'])
    // One probe before the reload, the three lagging ones, the new generation, then the after-check's.
    expect(host.commands.filter((c) => c === probe.text)).toHaveLength(6)
    expect(host.text(PENDING_RESTARTS)).toBe('')
  })

  it('throws when the new generation does not serve in time, or the probe gets no answer', async () => {
    const host = apacheHost()
    host.apacheReloadLag = 2
    await expect(awaitNewGeneration(host, APACHE, probe, '1', { timeoutMs: 0, pollMs: 1 })).rejects.toThrow(
      `${APACHE}: reloaded, but 0 s later its new configuration is not serving (still generation 1, as before the reload`,
    )
    // A probe that gets no answer is no new generation either.
    host.units.get(APACHE)!.active = false
    await expect(awaitNewGeneration(host, APACHE, probe, '1', { timeoutMs: 0, pollMs: 1 })).rejects.toThrow(
      'not serving (no answer to its generation probe',
    )
  })

  it('takes any answer as new when the old configuration did not answer the probe at all', async () => {
    const host = apacheHost()
    expect(await awaitNewGeneration(host, APACHE, probe, '', { timeoutMs: 0 })).toBe('1')
  })
})

describe("the apache task's own reloads (before certbot, in certbot's deploy hook)", () => {
  // A real sh runs reloadServing with stand-ins on PATH: `systemctl reload` bumps the generation only after 0.3 s
  // (in the background, as Apache's parent does when it next gets the CPU); `curl` prints what mod_status would.
  const run = (startAt: string) => {
    const dir = mkdtempSync(join(tmpdir(), 'mp-reload-'))
    writeFileSync(join(dir, 'gen'), startAt)
    writeFileSync(join(dir, 'curl'), `#!/bin/sh\n[ -s ${dir}/gen ] && printf 'ParentServerConfigGeneration: %s\\n' "$(cat ${dir}/gen)"\n`, {
      mode: 0o755,
    })
    writeFileSync(
      join(dir, 'systemctl'),
      `#!/bin/sh\necho "$*" >> ${dir}/calls\n( sleep 0.3; echo $(( $(cat ${dir}/gen 2>/dev/null || echo 0) + 1 )) > ${dir}/gen.new; mv ${dir}/gen.new ${dir}/gen ) >/dev/null 2>&1 &\n`,
      { mode: 0o755 },
    )
    const out = execFileSync('sh', ['-c', `${reloadServing(vars).text}; echo "served $(cat ${dir}/gen)"`], {
      env: { ...process.env, PATH: `${dir}:${process.env.PATH}` },
    }).toString()
    return { out, calls: readFileSync(join(dir, 'calls'), 'utf8') }
  }

  it('returns once the new generation serves, not when the reload returns', () => {
    const { out, calls } = run('4')
    expect(calls).toBe('reload apache2\n')
    expect(out).toBe('served 5\n')
  })

  it('takes any answer as new when the old configuration did not answer (a first reload that brings up the vhost)', () => {
    expect(run('').out).toBe('served 1\n')
  })
})
