import { execFileSync } from 'node:child_process'
import { describe, expect, it } from 'vitest'
import { advise, cacheMemoryGb } from '../../src/synapse/metrics/advice.js'
import { parseExposition, select } from '../../src/synapse/metrics/exposition.js'
import { bucketsOf, quantile } from '../../src/synapse/metrics/histogram.js'
import { processStatus } from '../../src/synapse/metrics/process-status.js'
import { renderStatus } from '../../src/commands/status/render.js'
import { parseStatusOutput, statusScript } from '../../src/commands/status/read-status.js'

/** What a Synapse 1.16x metrics listener serves, cut to the metrics the status reads (label order as Synapse writes it). */
function exposition(f: { cpu: number; sends: number[]; blocks: Record<string, number>; evicted: number; rss?: number; syncs?: number }) {
  const bounds = ['0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1.0', '2.5', '5.0', '10.0', '+Inf']
  const bucket = (le: string) => f.sends.filter((s) => le === '+Inf' || s <= Number(le)).length
  return [
    '# HELP synapse_build_info Synapse build information',
    '# TYPE synapse_build_info gauge',
    'synapse_build_info{osversion="Linux 6.1",pythonversion="3.11.2",version="1.163.2"} 1.0',
    '# TYPE process_cpu_seconds_total counter',
    `process_cpu_seconds_total ${f.cpu}`,
    `process_resident_memory_bytes ${f.rss ?? 209715200}`,
    ...bounds.map(
      (le) =>
        `synapse_http_server_response_time_seconds_bucket{code="200",le="${le}",method="PUT",server_name="one.test",servlet="RoomSendEventRestServlet",tag="/_matrix/client/v3/rooms/\\"id\\"/send"} ${bucket(le)}.0`,
    ),
    ...bounds.map(
      (le) =>
        `synapse_http_server_response_time_seconds_bucket{code="200",le="${le}",method="GET",server_name="one.test",servlet="SyncRestServlet",tag=""} 50.0`,
    ),
    ...Object.entries(f.blocks).flatMap(([b, v]) => [
      `synapse_util_metrics_block_ru_utime_seconds_total{block_name="${b}",server_name="one.test"} ${v * 0.75}`,
      `synapse_util_metrics_block_ru_stime_seconds_total{block_name="${b}",server_name="one.test"} ${v * 0.25}`,
    ]),
    `synapse_util_caches_cache_evicted_size{name="getEvent",reason="size",server_name="one.test"} ${f.evicted}`,
    `synapse_util_caches_cache_evicted_size{name="getEvent",reason="time",server_name="one.test"} 999.0`,
    ...(f.syncs === undefined
      ? []
      : [
          `synapse_http_server_in_flight_requests_count{method="GET",server_name="one.test",servlet="SyncRestServlet"} ${f.syncs}.0`,
          'synapse_http_server_in_flight_requests_count{method="GET",server_name="one.test",servlet="EventStreamRestServlet"} 2.0',
          'synapse_http_server_in_flight_requests_count{method="PUT",server_name="one.test",servlet="RoomSendEventRestServlet"} 7.0',
        ]),
    '',
  ].join('\n')
}

const target = { process: 'main', unit: 'matrix-synapse.service', port: 32982 }

describe('Prometheus exposition', () => {
  it('parses labels with escapes, special values and skips comments', () => {
    const s = parseExposition('# HELP x y\nx{a="q\\"uote",b="back\\\\slash",c="new\\nline"} 1.5e3\ny +Inf\nz NaN 1700000000000\n')
    expect(s[0]).toEqual({ name: 'x', labels: { a: 'q"uote', b: 'back\\slash', c: 'new\nline' }, value: 1500 })
    expect(s[1]!.value).toBe(Infinity)
    expect(Number.isNaN(s[2]!.value)).toBe(true)
  })

  it('names the line of a malformed sample', () => {
    expect(() => parseExposition('ok 1\nbroken{a="x" 2\n')).toThrow(/line 2/)
  })

  it('selects by exact label and by regular expression over the whole value', () => {
    const s = parseExposition('m{code="200"} 1\nm{code="500"} 2\nm{code="2000"} 4\n')
    expect(select(s, 'm', { code: /2\d\d/ }).map((x) => x.value)).toEqual([1])
  })
})

describe('histogram quantiles (as Prometheus histogram_quantile)', () => {
  const b = (pairs: [string, number][]) => bucketsOf(pairs.map(([le, value]) => ({ name: 'h', labels: { le }, value })))

  it('interpolates inside the bucket the rank falls in, the lowest bucket starting at 0', () => {
    const h = b([
      ['0.1', 50],
      ['0.2', 100],
      ['+Inf', 100],
    ])
    expect(quantile(0.5, h)).toBeCloseTo(0.1)
    expect(quantile(0.75, h)).toBeCloseTo(0.15)
    expect(quantile(0.25, h)).toBeCloseTo(0.05)
  })

  it('gives the highest finite bound for a rank in +Inf, and nothing without observations', () => {
    expect(
      quantile(
        0.99,
        b([
          ['1', 1],
          ['+Inf', 10],
        ]),
      ),
    ).toBe(1)
    expect(
      quantile(
        0.5,
        b([
          ['1', 0],
          ['+Inf', 0],
        ]),
      ),
    ).toBeUndefined()
  })
})

describe('process status over a window', () => {
  const before = parseExposition(exposition({ cpu: 10, sends: [0.04, 0.04], blocks: { persist_events: 1, sync: 0.5 }, evicted: 100 }))
  const after = parseExposition(
    exposition({
      cpu: 14.5,
      sends: [0.04, 0.04, ...Array<number>(18).fill(0.08), 0.7, 0.7],
      blocks: { persist_events: 3, sync: 0.6 },
      evicted: 600,
    }),
  )

  it('CPU share of one core, memory, send time of the window only, top blocks, evictions by size', () => {
    const s = processStatus(target, before, after, 5)
    expect(s.version).toBe('1.163.2')
    expect(s.cpuPercent).toBeCloseTo(90)
    expect(s.memoryBytes).toBe(209715200)
    expect(s.eventSend.window?.count).toBe(20)
    expect(s.eventSend.window!.p50Ms).toBeGreaterThan(50)
    expect(s.eventSend.window!.p50Ms).toBeLessThanOrEqual(100)
    expect(s.eventSend.window!.p95Ms).toBeGreaterThan(500)
    expect(s.eventSend.sinceStart?.count).toBe(22)
    expect(s.topBlocks.map((x) => x.block)).toEqual(['persist_events', 'sync'])
    expect(s.topBlocks[0]!.cpuPercent).toBeCloseTo(40)
    expect(s.cacheEvictionsPerSecond).toBeCloseTo(100) // reason "time" is not counted: only evictions of a full cache
    expect(s.topEvictingCaches).toEqual([{ cache: 'getEvent', perSecond: 100 }])
  })

  it("Synapse 1.163's own CPU collector (user + system) is preferred, and memory comes from the host when given", () => {
    const split = (user: number) => parseExposition(`process_cpu_user_seconds_total ${user}\nprocess_cpu_system_seconds_total 1.0\n`)
    const s = processStatus(target, split(8), split(10), 4, 300 * 1048576)
    expect(s.cpuPercent).toBeCloseTo(50)
    expect(s.memoryBytes).toBe(300 * 1048576)
  })

  it('a process restarted inside the window has no rates rather than negative ones', () => {
    const s = processStatus(target, after, before, 5)
    expect(s.cpuPercent).toBeUndefined()
    expect(s.cacheEvictionsPerSecond).toBeUndefined()
    expect(s.eventSend.window?.count).toBe(2)
  })
})

describe("advice in the guide's terms", () => {
  const busy = processStatus(
    target,
    parseExposition(exposition({ cpu: 0, sends: [], blocks: { persist_events: 0 }, evicted: 0 })),
    parseExposition(exposition({ cpu: 4.9, sends: Array<number>(10).fill(2), blocks: { persist_events: 4 }, evicted: 500 })),
    5,
  )

  it('cache evictions: the next cache factor, the memory it needs (factor 4: about 3 GB) and what the host has', () => {
    expect(cacheMemoryGb(4)).toBe(3)
    const [cache] = advise({ cacheFactor: 2, memAvailableMiB: 8192 }, [busy]).filter((a) => a.text.startsWith('cache'))
    expect(cache!.text).toBe(
      'cache evictions high on main (100/s, most in getEvent): cacheFactor 2 -> 4 would need about 3 GB; the host has 8 GB available',
    )
    const tight = advise({ cacheFactor: 4, memAvailableMiB: 2048 }, [busy]).find((a) => a.text.startsWith('cache'))
    expect(tight!.text).toContain('cacheFactor 4 -> 8 would need about 6 GB; the host has only 2 GB available: add memory first')
  })

  it('CPU at the limit names the hungriest block; a slow event send time and a down process are called out', () => {
    const texts = advise({ cacheFactor: 2 }, [
      busy,
      {
        ...target,
        process: 'federation_sender',
        unit: 'matrix-synapse-worker@federation_sender.service',
        port: 32980,
        up: false,
        error: 'not active',
        eventSend: {},
        topBlocks: [],
        topEvictingCaches: [],
      },
    ]).map((a) => a.text)
    expect(texts).toContainEqual(
      expect.stringMatching(
        /^main is at its CPU limit \(98% of one core\); most CPU goes to persist_events: move work off the main process/,
      ),
    )
    expect(texts).toContainEqual(expect.stringMatching(/^event send time on main is high: p95 \d+ ms \(normally around 100 ms\)/))
    expect(texts).toContainEqual(
      'federation_sender is down (not active): systemctl status matrix-synapse-worker@federation_sender.service; journalctl -u matrix-synapse-worker@federation_sender.service',
    )
  })

  it('long-polls near the proxy cap: counted over every process from the in-flight sync servlets, called out from 80% of the cap', () => {
    const held = (n: number, process = 'main') => ({
      ...processStatus(
        target,
        parseExposition(exposition({ cpu: 1, sends: [], blocks: {}, evicted: 0, syncs: 0 })),
        parseExposition(exposition({ cpu: 1.1, sends: [], blocks: {}, evicted: 0, syncs: n })),
        5,
      ),
      process,
    })
    expect(held(500).longPolls).toBe(502) // SyncRestServlet + EventStreamRestServlet, not the message sends
    const cap = { cap: 1008, maxClients: 1000 }
    expect(advise({ cacheFactor: 2, longPollCap: cap }, [held(400), held(300, 'synchrotron')])).toEqual([])
    const [near] = advise({ cacheFactor: 2, longPollCap: cap }, [held(500), held(310, 'synchrotron')])
    expect(near).toEqual({
      level: 'warning',
      text: 'the proxy is near its limit: 814 long-polls (/sync) held of at most 1008; past that Apache answers /sync with 503 (plain requests keep their reserved threads): raise apache.maxClients (now 1000) if the host has the memory',
    })
  })

  it('a quiet, healthy process gets no advice', () => {
    const calm = processStatus(
      target,
      parseExposition(exposition({ cpu: 1, sends: [0.05], blocks: {}, evicted: 0 })),
      parseExposition(exposition({ cpu: 1.1, sends: [0.05, 0.06], blocks: {}, evicted: 0 })),
      5,
    )
    expect(advise({ cacheFactor: 2, memAvailableMiB: 4096 }, [calm])).toEqual([])
  })
})

describe('the status round trip', () => {
  const targets = [
    target,
    { process: 'federation_reader', job: 'federation_reader', unit: 'matrix-synapse-worker@federation_reader.service', port: 32981 },
  ]

  it('runs under sh: inactive units are not scraped, a failed scrape keeps its message, meminfo in MiB', () => {
    // The host's tools replaced by functions, so the real script runs here under dash/sh.
    const stubs = [
      'systemctl() { if [ "$1" = show ]; then echo $$; else [ "$2" = matrix-synapse.service ] && echo active || echo inactive; fi; }',
      'curl() { echo "curl: (7) Failed to connect" >&2; return 7; }',
      'sleep() { :; }',
      'grep() { if [ "$2" = "^(MemTotal|MemAvailable):" ]; then printf "MemTotal:       24576000 kB\\nMemAvailable:    8388608 kB\\n"; else command grep "$@"; fi; }',
    ].join('\n')
    const out = execFileSync(
      'sh',
      [
        '-c',
        `${stubs}\n${
          statusScript(
            targets.map((t) => ({ ...t, job: t.process, address: '127.0.0.1' })),
            5,
          ).text
        }`,
      ],
      { encoding: 'utf8' },
    )
    const parsed = parseStatusOutput(out)
    expect([...parsed.inactive]).toEqual([32981])
    expect(parsed.scrapes.get('1:32982')).toEqual({ state: 'error', text: 'curl: (7) Failed to connect' })
    expect(parsed.scrapes.get('2:32982')?.state).toBe('error')
    expect(parsed.meminfo).toEqual({ MemTotal: 24000, MemAvailable: 8192 })
    // Resident memory of each unit's main process, read from /proc (here: the shell's own).
    expect(parsed.rssKiB.get(32982)).toBeGreaterThan(100)
  })

  it('renders every process, down ones with the reason, and the advice', () => {
    const text = renderStatus({
      durationMs: 5400,
      hosts: [
        {
          host: 'matrix1',
          windowS: 5,
          cacheFactor: 2,
          memory: { availableMiB: 8192, totalMiB: 24000 },
          processes: [
            processStatus(
              target,
              parseExposition(exposition({ cpu: 1, sends: [0.05], blocks: { sync: 1 }, evicted: 0 })),
              parseExposition(exposition({ cpu: 1.5, sends: [0.05], blocks: { sync: 1.2 }, evicted: 0 })),
              5,
            ),
            {
              ...targets[1]!,
              up: false,
              error: 'matrix-synapse-worker@federation_reader.service is not active',
              eventSend: {},
              topBlocks: [],
              topEvictingCaches: [],
            },
          ],
          advice: [{ process: 'federation_reader', level: 'warning', text: 'federation_reader is down' }],
          longPolls: { held: 12, cap: 1008 },
        },
      ],
    })
    expect(text).toContain(
      'matrix1: Synapse 1.163.2, cacheFactor 2 (caches up to about 1.5 GB), 8.0 of 23.4 GB memory available; figures over 5 s',
    )
    expect(text).toMatch(/main {15}up {5}10% {2}200 MiB {2}38 ms\* {4}49 ms\* {4}1\* {5}0\.0 {10}sync 4\.0%/)
    expect(text).toMatch(/federation_reader {2}DOWN {2}matrix-synapse-worker@federation_reader.service is not active/)
    expect(text).toContain('* no message sent in the window: send time since the process started')
    expect(text).toContain('  proxy: 12 of at most 1008 long-polls held (/sync); other requests have threads of their own')
    expect(text).toContain('    ! federation_reader is down')
  })
})
