/** A counting semaphore: at most `limit` holders at once, the rest wait in arrival order. */
export class Semaphore {
  readonly limit: number
  #active = 0
  readonly #waiting: (() => void)[] = []

  constructor(limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new Error(`semaphore limit must be a positive integer, got ${limit}`)
    this.limit = limit
  }

  get active(): number {
    return this.#active
  }

  get waiting(): number {
    return this.#waiting.length
  }

  /** Resolves with a release function once a slot is free; calling release twice is harmless. */
  async acquire(): Promise<() => void> {
    if (this.#active < this.limit) this.#active++
    else await new Promise<void>((resolve) => this.#waiting.push(resolve))
    let released = false
    return () => {
      if (released) return
      released = true
      const next = this.#waiting.shift()
      // Hand the slot straight to the next waiter: the count stays the same.
      if (next) next()
      else this.#active--
    }
  }
}
