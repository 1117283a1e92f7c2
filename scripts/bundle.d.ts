// Types of scripts/bundle.js for test/unit/commands.test.ts.
import type { BuildOptions } from 'esbuild'
export function bundleOptions(entry: string, outfile: string, options?: { minifyWhitespace?: boolean }): BuildOptions
export function bundle(entry: string, outdir: string): Promise<void>
