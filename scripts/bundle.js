// Bundle a compiled entry and everything it imports into one ES module (plus lazy chunks for its
// dynamic imports): node bundle.js <entry.js> <outdir>
//
// Why: Node's ESM loader resolves, compiles and links ~400 files for the CLI one by one, which took
// 200 ms of a 440 ms converged run (bench/README.md, profile). One bundle loads in about 90 ms.
// ssh2 stays external: it loads its optional native crypto binding from its own directory.
import { build } from 'esbuild'
import { rmSync } from 'node:fs'
import { argv } from 'node:process'
import { dirname, join } from 'node:path'

/**
 * zod's namespace re-exports all of its ~60 translations of error messages (`z.locales`), which esbuild
 * cannot drop from a namespace: half of the zod chunk every run parses at start-up. The project uses
 * zod's default, English (which zod registers itself); only `locales.en` stays.
 */
const zodEnglishOnly = {
  name: 'zod-english-only',
  setup(b) {
    b.onResolve({ filter: /^\.\.\/locales\/index\.js$/ }, (args) =>
      /[/\\]node_modules[/\\]zod[/\\]/.test(args.importer)
        ? { path: join(dirname(args.importer), '../locales/en.js'), namespace: 'zod-locales' }
        : undefined,
    )
    b.onLoad({ filter: /.*/, namespace: 'zod-locales' }, (args) => ({
      contents: `export { default as en } from ${JSON.stringify(args.path)}`,
      resolveDir: dirname(args.path),
    }))
  },
}

export async function bundle(entry, outdir) {
  rmSync(outdir, { recursive: true, force: true }) // chunk names change with their content
  await build({
    entryPoints: [entry],
    outdir,
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    // Not minified: loads as fast here, and MP_DEBUG stack traces keep readable names.
    minify: false,
    external: ['ssh2'],
    plugins: [zodEnglishOnly],
    logLevel: 'warning',
    // CommonJS dependencies (pino, node-ssh) call require() for Node's built-ins.
    banner: { js: "import { createRequire as __mpRequire } from 'node:module'; const require = __mpRequire(import.meta.url);" },
  })
}

if (import.meta.url === `file://${argv[1]}`) await bundle(argv[2], argv[3])
