import type { HostSpec, Role } from '../inventory/types.js'
import type { TaskOnHost } from './task.js'

/**
 * Which tasks have finished on which host in this run, for tasks that need a task of another host
 * first (Synapse on one host, its Postgres on another): the cross-host order Ansible users get from
 * running plays one after another, without making every host wait for every other.
 */
export class TaskBoard {
  readonly #outcomes = new Map<string, Map<Role, boolean>>()
  readonly #finished = new Set<string>()
  #wake: (() => void)[] = []

  constructor(
    private readonly hosts: readonly HostSpec[],
    /** The tasks of this run, in order. */
    private readonly order: readonly Role[],
  ) {}

  taskDone(host: string, task: Role, ok: boolean): void {
    const outcomes = this.#outcomes.get(host) ?? new Map<Role, boolean>()
    this.#outcomes.set(host, outcomes.set(task, ok))
    this.#notify()
  }

  /** The host's run ended (done, failed, or never connected): tasks it did not finish never will. */
  hostFinished(host: string): void {
    this.#finished.add(host)
    this.#notify()
  }

  /** The needs that are not met yet; none when the needed host or task is not part of this run. */
  pending(needs: readonly TaskOnHost[]): TaskOnHost[] {
    return needs.filter((n) => this.#relevant(n) && !this.#outcomes.get(n.host)?.has(n.task))
  }

  /** Wait until every need is met. Resolves with what went wrong when a needed task failed or will never run. */
  async waitFor(needs: readonly TaskOnHost[], forTask: Role): Promise<string | undefined> {
    for (const n of needs) {
      if (this.order.includes(n.task) && this.order.indexOf(n.task) >= this.order.indexOf(forTask)) {
        throw new Error(`task ${forTask} needs ${n.task} on ${n.host}, which does not come before it in the task order`)
      }
    }
    for (;;) {
      for (const n of needs.filter((x) => this.#relevant(x))) {
        const ok = this.#outcomes.get(n.host)?.get(n.task)
        if (ok === false) return `${n.task} failed on ${n.host} (see that host's report)`
        if (ok === undefined && this.#finished.has(n.host))
          return `${n.host} stopped before its ${n.task} task finished (see that host's report)`
      }
      if (this.pending(needs).length === 0) return undefined
      await new Promise<void>((resolve) => this.#wake.push(resolve))
    }
  }

  #relevant(n: TaskOnHost): boolean {
    return this.order.includes(n.task) && this.hosts.some((h) => h.name === n.host && h.roles.includes(n.task))
  }

  #notify(): void {
    const wake = this.#wake
    this.#wake = []
    for (const w of wake) w()
  }
}
