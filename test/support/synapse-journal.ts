/**
 * Errors in the journal of Synapse processes (main and workers), judged one process id at a time.
 * The one allowed: a process stopping may lose its Redis connection with a send-cmd in flight, after
 * its own "Shutting down..." line (Synapse's own race): an ERROR from that background process and
 * txredisapi's "Lost connection". Anything else at ERROR or worse after that line, and anything
 * matching `live` before it, is returned as "pid N: line".
 *
 * journal: `journalctl -o short-unix` output (the pid is read from "[N]:").
 */
export function unexpectedSynapseErrors(journal: string, live: RegExp = / - (ERROR|CRITICAL) - |Traceback/): string[] {
  const byPid = new Map<string, string[]>()
  for (const line of journal.split('\n')) {
    const pid = /\[(\d+)\]:/.exec(line)?.[1]
    if (pid) byPid.set(pid, [...(byPid.get(pid) ?? []), line])
  }
  const bad: string[] = []
  for (const [pid, lines] of byPid) {
    const shutdown = lines.findIndex((l) => l.includes('Shutting down...'))
    const running = shutdown === -1 ? lines : lines.slice(0, shutdown)
    bad.push(...running.filter((l) => live.test(l)).map((l) => `pid ${pid}: ${l}`))
    if (shutdown === -1) continue
    for (const l of lines.slice(shutdown)) {
      if (/ - (ERROR|CRITICAL) - /.test(l) && !/ - ERROR - send-cmd-\d+ - Background process 'send-cmd' threw an exception/.test(l))
        bad.push(`pid ${pid} (stopping): ${l}`)
      if (/Error:/.test(l) && !/txredisapi\.ConnectionError: Lost connection/.test(l)) bad.push(`pid ${pid} (stopping): ${l}`)
    }
  }
  return bad
}
