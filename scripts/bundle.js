// Bundle a compiled entry and everything it imports into one CommonJS file, <name>.cjs, which <name>.js (an
// ES module) runs with a V8 code cache: node bundle.js <entry.js> <outdir>
//
// Why one file: Node's ESM loader resolves, compiles and links each module or chunk one by one (the CLI's
// ~400 files took 200 ms of a 440 ms converged run; 53 esbuild chunks still cost a realpath and a compile each).
// Why CommonJS: Node 20 can hand V8 a code cache only for a script (vm.Script's cachedData), not for an ES module,
// and compiling the bundle's source was the largest single cost of a run (bench/README.md, "third pass").
// A verb's code is still loaded only when that verb runs: esbuild wraps each dynamically imported module in a
// function run on first import (`__esm`), so --help runs no dependency's code.
// ssh2 is bundled (and so code-cached) too; only its native parts load from its installation (ssh2NativeOutside).
import { build } from 'esbuild'
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { argv } from 'node:process'
import { basename, dirname, join, relative, sep } from 'node:path'
import { fileURLToPath } from 'node:url'

/**
 * zod's namespace re-exports all of its ~60 translations of error messages (`z.locales`), which esbuild
 * cannot drop from a namespace: half of zod's code every run parsed at start-up. The project uses
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

/**
 * ssh2's ~30 CommonJS files, compiled from source on every run outside the code cache, were ~25 ms of a converged
 * run. Bundled, only its native parts stay outside: the optional crypto binding is required by its path inside the
 * installed ssh2 package (so it loads where npm built it, and ssh2 falls back to JavaScript when it was not built, as
 * before), and cpu-features stays a package of its own.
 */
const ssh2NativeOutside = {
  name: 'ssh2-native-outside',
  setup(b) {
    b.onResolve({ filter: /\.node$/ }, (args) => {
      const inSsh2 = /^(.*[/\\]node_modules[/\\]ssh2)[/\\]/.exec(args.importer)
      if (!inSsh2) return undefined
      return { path: `ssh2/${relative(inSsh2[1], join(args.resolveDir, args.path)).split(sep).join('/')}`, external: true }
    })
  },
}

/**
 * node-ssh takes only ssh2's Client (`new ssh2.Client()`), but ssh2's index also loads its SSH server, key generation
 * and HTTP(S) agents, and with them Node's http, https and tls: a few ms of every run's start for nothing. node-ssh's
 * `ssh2` is the Client alone; any other importer gets the whole index.
 */
const ssh2ClientForNodeSsh = {
  name: 'ssh2-client-for-node-ssh',
  setup(b) {
    b.onResolve({ filter: /^ssh2$/ }, (args) =>
      /[/\\]node_modules[/\\]node-ssh[/\\]/.test(args.importer) ? { path: 'ssh2-client', namespace: 'ssh2-client' } : undefined,
    )
    b.onLoad({ filter: /.*/, namespace: 'ssh2-client' }, () => ({
      contents: "module.exports = { Client: require('ssh2/lib/client.js') }",
      resolveDir: dirname(fileURLToPath(import.meta.url)),
      loader: 'js',
    }))
  },
}

/**
 * node-ssh's make-dir (only its getDirectory, which matrix-provision does not call, creates local directories) asks
 * semver at load whether Node has a recursive mkdir: semver's parsing was ~3 ms of every run's start. On every Node
 * this project supports the answer is yes and make-dir calls that mkdir; so does this stand-in.
 */
const nodeSshMakeDir = {
  name: 'node-ssh-make-dir',
  setup(b) {
    b.onResolve({ filter: /^make-dir$/ }, (args) =>
      /[/\\]node_modules[/\\]node-ssh[/\\]/.test(args.importer) ? { path: 'make-dir', namespace: 'node-ssh-make-dir' } : undefined,
    )
    b.onLoad({ filter: /.*/, namespace: 'node-ssh-make-dir' }, () => ({
      contents:
        "const { mkdir } = require('node:fs/promises'); const { resolve } = require('node:path');\n" +
        'module.exports = async (dir, options = {}) => { const path = resolve(dir); await mkdir(path, { mode: options.mode ?? 0o777, recursive: true }); return path }',
      loader: 'js',
    }))
  },
}

/**
 * After login, OpenSSH announces its other host keys (`hostkeys-00@openssh.com`, for clients that update
 * known_hosts), and ssh2 asks the server to prove each one whether or not anything listens for its 'hostkeys' event:
 * sshd then signs with every host key (RSA among them) on every connection, ~4 ms of the host's CPU, and the client
 * verifies them all. matrix-provision checks the one key the handshake presents against known_hosts and never reads
 * the announcement: the proof is asked for only when something listens. The build fails if ssh2's code changed.
 *
 * Something must still answer at once: sshd keeps Nagle on for sessions without a terminal, so its next packets (the
 * confirmation of our first channel among them) wait for our delayed ACK of the announcement, ~40 ms later. An
 * SSH_MSG_IGNORE (RFC 4253 11.2: five bytes the server drops, with no reply that could hold its next packet in turn)
 * carries that ACK instead of the proof request. It is written as ssh2 writes its own keepalive.
 */
const SSH2_HOSTKEYS_PROVE = 'hostKeysProve(this, data, (err, keys) => {'
// MESSAGE.IGNORE (2) with an empty string, through ssh2's packet writer (as Protocol.ping() builds its packet).
const SSH2_IGNORE = [
  '{ const w = proto._packetRW.write; const at = w.allocStart; const packet = w.alloc(5);',
  "packet[at] = 2; packet.writeUInt32BE(0, at + 1); require('./protocol/utils.js').sendPacket(proto, w.finalize(packet)); }",
].join(' ')
const ssh2HostKeysOnDemand = {
  name: 'ssh2-hostkeys-on-demand',
  setup(b) {
    b.onLoad({ filter: /[/\\]node_modules[/\\]ssh2[/\\]lib[/\\]client\.js$/ }, (args) => {
      const source = readFileSync(args.path, 'utf8')
      const utils = readFileSync(join(dirname(args.path), 'protocol/utils.js'), 'utf8')
      if (source.split(SSH2_HOSTKEYS_PROVE).length !== 2 || !utils.includes('\n  sendPacket: (proto, packet, bypass) => {'))
        throw new Error(`${args.path}: ssh2's host-key proof request or its packet writer changed; review ssh2HostKeysOnDemand`)
      return {
        contents: source.replace(
          SSH2_HOSTKEYS_PROVE,
          `if (this.listenerCount('hostkeys') === 0) ${SSH2_IGNORE} else ${SSH2_HOSTKEYS_PROVE}`,
        ),
        loader: 'js',
      }
    })
  },
}

const launcher = fileURLToPath(new URL('./code-cache-launcher.js', import.meta.url))

/**
 * esbuild's options for one entry: everything in one CommonJS file. `minifyWhitespace: false` gives the readable
 * form, with esbuild's `// <path>` comment before each module (test/unit/commands.test.ts reads it).
 */
export function bundleOptions(entry, outfile, { minifyWhitespace = true } = {}) {
  return {
    entryPoints: [entry],
    outfile,
    bundle: true,
    format: 'cjs',
    platform: 'node',
    target: 'node20',
    // Whitespace and comments only: a smaller file to read, hash and scan; names stay readable in MP_DEBUG stack
    // traces. Licence comments go to <name>.cjs.LEGAL.txt.
    minifyWhitespace,
    legalComments: 'external',
    external: ['cpu-features'],
    plugins: [zodEnglishOnly, ssh2NativeOutside, ssh2ClientForNodeSsh, ssh2HostKeysOnDemand, nodeSshMakeDir],
    logLevel: 'warning',
    // The sources are ES modules: import.meta.url is the bundle's own URL (the launcher gives it __filename).
    define: { 'import.meta.url': '__mpImportMetaUrl' },
    banner: { js: "var __mpImportMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
  }
}

export async function bundle(entry, outdir) {
  rmSync(outdir, { recursive: true, force: true }) // no file of an older layout stays behind
  mkdirSync(outdir, { recursive: true })
  const name = basename(entry, '.js')
  await build(bundleOptions(entry, join(outdir, `${name}.cjs`)))
  // The launcher, with the bundle's name: an ES module exporting the bundle's exports as its default.
  writeFileSync(join(outdir, `${name}.js`), readFileSync(launcher, 'utf8').replaceAll('__MP_BUNDLE__', `${name}.cjs`))
}

if (import.meta.url === `file://${argv[1]}`) await bundle(argv[2], argv[3])
