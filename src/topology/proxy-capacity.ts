/**
 * How many requests the Apache reverse proxy holds at once, and how many of them long-polls may take
 * (tasks/apache/mpm.ts renders it; `provision status` and the alert rules compare the long-polls
 * Synapse holds with the cap). Pure sizing: no task, no host.
 */

/** Debian's ThreadLimit: threads per child process without raising the compiled-in ceiling. */
export const THREADS_PER_CHILD = 64

/**
 * Resident memory of Apache holding `maxClients` long-polls through mod_proxy, MiB: a base per child
 * process and a share per busy thread (its stack in use and proxy buffers). These are estimates
 * erring high; bench/workers.js prints what Apache really holds under its load run.
 */
export const APACHE_CHILD_MIB = 12
export const APACHE_THREAD_MIB = 0.25

/**
 * Long-poll (sync route) connections one child process may hold: mod_proxy's `max=` is per child, and
 * the event MPM holds a worker thread for the whole of a proxied request, so the other 16 threads of
 * each child stay free for plain requests however many clients hold /sync open.
 */
export const LONG_POLLS_PER_CHILD = 48
/**
 * How long a long-poll over the cap waits for a pool connection before Apache answers 503 (mod_proxy
 * `acquire=`, ms). It holds a thread meanwhile, taken from the reserve: short, so a herd over the
 * cap costs the reserve for a moment only. Clients retry a failed /sync with a back-off.
 */
export const LONG_POLL_ACQUIRE_MS = 200

export interface MpmSizing {
  serverLimit: number
  maxRequestWorkers: number
  /** Long-polls held at most, over all children (serverLimit x LONG_POLLS_PER_CHILD). */
  longPolls: number
  /** Threads long-polls cannot take (serverLimit x the reserve per child). */
  reserve: number
  memoryMiB: number
}

export function mpmSizing(maxClients: number): MpmSizing {
  const serverLimit = Math.ceil(maxClients / LONG_POLLS_PER_CHILD)
  const maxRequestWorkers = serverLimit * THREADS_PER_CHILD
  const longPolls = serverLimit * LONG_POLLS_PER_CHILD
  return {
    serverLimit,
    maxRequestWorkers,
    longPolls,
    reserve: maxRequestWorkers - longPolls,
    memoryMiB: Math.ceil(serverLimit * APACHE_CHILD_MIB + maxRequestWorkers * APACHE_THREAD_MIB),
  }
}
