import { sh, type ShellCommand } from './shell.js'

/**
 * A multi-line Python script as ONE shell line (the fact probe frames one command per line): the
 * source travels base64-encoded, so no quoting of its own can break, and arguments are quoted words.
 */
export function pythonScript(python: string, source: string, args: string[] = []): ShellCommand {
  const b64 = Buffer.from(source.trim() + '\n').toString('base64')
  return sh`${python} -c ${`import base64; exec(compile(base64.b64decode('${b64}'), 'matrix-provision', 'exec'))`} ${args}`
}
