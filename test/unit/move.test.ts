import { describe, expect, it } from 'vitest'
import { parseExecStart } from '../../src/commands/move/old-host.js'
import { renderMove } from '../../src/commands/move/index.js'
import type { MoveReport } from '../../src/commands/move/report.js'

describe('provision move: reading OLD and the report', () => {
  it("takes OLD's Python and config paths from its unit's ExecStart, as systemctl show prints it", () => {
    const guide =
      '{ path=/opt/venvs/matrix-synapse/bin/python ; argv[]=/opt/venvs/matrix-synapse/bin/python -m synapse.app.homeserver --config-path=/etc/matrix-synapse/homeserver.yaml --config-path=/etc/matrix-synapse/conf.d/ ; ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }'
    expect(parseExecStart(guide)).toEqual({
      python: '/opt/venvs/matrix-synapse/bin/python',
      configPaths: ['/etc/matrix-synapse/homeserver.yaml', '/etc/matrix-synapse/conf.d/'],
    })
    expect(
      parseExecStart('{ path=/usr/bin/python3 ; argv[]=/usr/bin/python3 -m synapse.app.homeserver -c /etc/a.yaml -c /etc/b ; }'),
    ).toEqual({ python: '/usr/bin/python3', configPaths: ['/etc/a.yaml', '/etc/b'] })
    expect(parseExecStart('{ path=/usr/bin/true ; argv[]=/usr/bin/true ; }')).toBeUndefined()
    expect(parseExecStart('')).toBeUndefined()
  })

  it('renders the failed cut-over with the way back, and the downtime of a done move', () => {
    const base: MoveReport = {
      command: 'move',
      from: 'old',
      to: 'new',
      status: 'failed',
      preflight: [{ name: 'same server name', ok: true, detail: 'old.test' }],
      steps: [
        { name: 'stop-old', summary: 'stop and mask', done: true, durationMs: 1200 },
        { name: 'media-1', summary: 'copy the media', done: true, durationMs: 4000, bytes: 200 * 2 ** 20 },
        { name: 'database', summary: 'stream the database', done: false },
      ],
      next: ['return old to service: provision move --abort'],
      error: 'database stream: new exited 137',
      durationMs: 1,
    }
    const text = renderMove(base)
    expect(text).toContain('move old -> new: failed: database stream: new exited 137')
    expect(text).toContain('  + stop and mask (1.2 s)')
    expect(text).toContain('    stream the database')
    expect(text).toContain('  + copy the media (4.0 s, 200.0 MiB at 50.0 MiB/s)')
    expect(text).toContain('--abort')
    expect(renderMove({ ...base, status: 'moved', error: undefined, downtimeMs: 28_000, backgroundUpdatesMs: 3000 })).toContain(
      'downtime (writes stopped on old -> new answered /health): 28.0 s',
    )
  })
})
