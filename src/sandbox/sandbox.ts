export async function sandbox(_o: { down: boolean; element?: string; verbose: boolean; io: unknown }): Promise<number> { throw new Error('sandbox: not yet') }
