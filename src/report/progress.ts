import { maskSecrets } from '../core/secret.js'

export interface Progress {
  event(e: { host: string; task?: string; message: string }): void
  hostDone(host: string, failed: boolean): void
  done(): Promise<void>
}

/**
 * Live progress on stderr. On a terminal: listr2 (hosts in parallel, each showing its current step).
 * In CI, when not a TTY, or with --verbose: plain lines, one per step, that logs keep readable.
 */
export async function createProgress(
  hosts: string[],
  options: { verbose: boolean; quiet: boolean; write?: (text: string) => void },
): Promise<Progress> {
  if (options.quiet) return { event: () => undefined, hostDone: () => undefined, done: () => Promise.resolve() }
  const plain = options.write !== undefined || !process.stderr.isTTY || process.env.CI === 'true' || options.verbose
  if (plain) {
    const write = options.write ?? ((t: string) => void process.stderr.write(t))
    return {
      event: (e) => write(maskSecrets(`[${e.host}]${e.task ? ` ${e.task}:` : ''} ${e.message}\n`)),
      hostDone: (host, failed) => write(`[${host}] ${failed ? 'FAILED' : 'done'}\n`),
      done: () => Promise.resolve(),
    }
  }
  // Loaded only for a terminal: runs in CI and pipes do not pay for it at start-up.
  const { Listr } = await import('listr2')
  const waiting = new Map<string, { resolve: (failed: boolean) => void; setOutput?: (s: string) => void }>()
  const finished = new Map<string, boolean>()
  const list = new Listr(
    hosts.map((host) => ({
      title: host,
      task: (_ctx: unknown, task: { output: string; title: string }) =>
        new Promise<void>((resolve, reject) => {
          const settle = (failed: boolean) => (failed ? reject(new Error(`${host} failed (see below)`)) : resolve())
          if (finished.has(host)) return settle(finished.get(host)!)
          waiting.set(host, { resolve: settle, setOutput: (s) => (task.output = s) })
        }),
    })),
    { concurrent: true, exitOnError: false, rendererOptions: { collapseErrors: true }, renderer: 'default' },
  )
  const running = list.run().catch(() => undefined)
  return {
    event: (e) => waiting.get(e.host)?.setOutput?.(maskSecrets(`${e.task ? `${e.task}: ` : ''}${e.message}`)),
    hostDone(host, failed) {
      finished.set(host, failed)
      waiting.get(host)?.resolve(failed)
    },
    done: async () => {
      await running
    },
  }
}
