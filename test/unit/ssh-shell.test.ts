import { execFile } from 'node:child_process'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { Secret } from '../../src/core/secret.js'
import { joinShell, raw, sh, ShellCommand } from '../../src/core/shell.js'

const run = promisify(execFile)

/** Run a built command under a real sh -c and return its arguments as the shell split them. */
async function argsOf(command: ShellCommand, shell = 'sh'): Promise<string[]> {
  const { stdout } = await run(shell, ['-c', `set -- ${command.text}; for a in "$@"; do printf '%s\\0' "$a"; done`], { encoding: 'buffer' })
  const parts = stdout.toString('utf8').split('\0')
  parts.pop()
  return parts
}

describe('sh tagged template', () => {
  it('quotes spaces, quotes, $, backticks, newlines and globs as one word each, in sh, dash and bash', async () => {
    const values = [
      'two words',
      "it's",
      '"dq"',
      '$HOME $(touch /tmp/mp-pwned) `id`',
      'line one\nline two\n',
      '* ? [a]',
      'semi; && | > #x',
      '-n',
    ]
    for (const shell of ['sh', 'dash', 'bash']) {
      expect(
        await argsOf(
          sh`${values[0]!} ${values[1]!} ${values[2]!} ${values[3]!} ${values[4]!} ${values[5]!} ${values[6]!} ${values[7]!}`,
          shell,
        ),
      ).toEqual(values)
    }
    expect(sh`pg_dump ${'my db'} > ${'/backup/a b.sql'}`.text).toBe("pg_dump 'my db' > '/backup/a b.sql'")
  })

  it('keeps an empty string as an empty argument', async () => {
    expect(sh`x ${''} y`.text).toBe("x '' y")
    expect(await argsOf(sh`a ${''} b`)).toEqual(['a', '', 'b'])
  })

  it('leaves safe words bare and numbers as digits', () => {
    expect(sh`stat -c %a ${'/etc/matrix-synapse/homeserver.yaml'}`.text).toBe('stat -c %a /etc/matrix-synapse/homeserver.yaml')
    expect(sh`redis-cli -p ${6379} PING`.text).toBe('redis-cli -p 6379 PING')
  })

  it('joins an array as separate quoted words, and an empty array as nothing', async () => {
    const pkgs = ['apache2', 'a b', "o'k", '']
    expect(sh`apt-get install ${pkgs}`.text).toBe("apt-get install apache2 'a b' 'o'\\''k' ''")
    expect(await argsOf(sh`${pkgs}`)).toEqual(pkgs)
    expect(sh`a2enmod -q ${[]}`.text).toBe('a2enmod -q ')
  })

  it('inserts a nested built command as built, and its text as one quoted word', async () => {
    const inner = sh`printf '%s\\n' ${'a b'} ${'$x'}`
    expect(sh`cd /tmp && ${inner}`.text).toBe("cd /tmp && printf '%s\\n' 'a b' '$x'")
    const { stdout } = await run('sh', ['-c', sh`sh -c ${inner.text}`.text])
    expect(stdout).toBe('a b\n$x\n')
    // A value that was quoted once stays one word when its command is nested again.
    expect(await argsOf(sh`${sh`${'x y'}`} ${[sh`${'z'}`, 'w w']}`)).toEqual(['x y', 'z', 'w w'])
  })

  it('raw`…` inserts a fixed fragment unquoted; joinShell joins commands', () => {
    expect(sh`${raw`a && b`} ${'a && b'}`.text).toBe("a && b 'a && b'")
    expect(raw`printf '\${HOME}\\t%s\\n' x`.text).toBe("printf '${HOME}\\t%s\\n' x")
    expect(
      raw`a \
b`.text,
    ).toBe('a b')
    expect(joinShell([sh`test -e ${'/a b'}`, sh`test -e /c`], ' && ').text).toBe("test -e '/a b' && test -e /c")
    expect(() => joinShell(['rm -rf /' as unknown as ShellCommand], '; ')).toThrow(/built command/)
  })

  it('raw`…` refuses every value, by its type and at run time: a value goes through sh`…`', () => {
    const dir = '/srv/a b; rm -rf /'
    // @ts-expect-error raw takes no value
    expect(() => raw`ls ${dir}`).toThrow(/fixed text only, got 1 interpolated value.*sh`/)
    // @ts-expect-error not even a constant
    expect(() => raw`ls ${'/srv'}`).toThrow(/fixed text only/)
    // @ts-expect-error nor a built command
    expect(() => raw`${sh`ls`}`).toThrow(/fixed text only/)
    // @ts-expect-error a string is not a template
    expect(() => raw('ls /srv')).toThrow(/tagged template \(raw`…`\), not a function of string/)
    expect(sh`ls ${dir}`.text).toBe("ls '/srv/a b; rm -rf /'")
  })

  it('keeps literal text as a plain template literal would (cooked escapes)', () => {
    expect(sh`printf '%s\n' x`.text).toBe("printf '%s\n' x")
    expect(sh`printf '%s\\n' x`.text).toBe("printf '%s\\n' x")
  })

  it('refuses a Secret: a type error and a runtime error that names where it came from', () => {
    const password = new Secret('hunter2-very-secret', 'env DB_PASSWORD')
    // @ts-expect-error a Secret is not a ShellValue: it must travel on stdin
    expect(() => sh`psql -c ${password}`).toThrow(/Secret \(env DB_PASSWORD\).*stdin/)
    // @ts-expect-error nor inside an array
    expect(() => sh`echo ${['a', password]}`).toThrow(/Secret/)
    // @ts-expect-error nor through the escape hatch
    expect(() => raw(password)).toThrow(/tagged template.*Secret/)
    try {
      // @ts-expect-error (runtime path)
      void sh`x ${password}`
    } catch (e) {
      expect(String(e)).not.toContain('hunter2')
    }
  })

  it('refuses undefined, null, booleans and objects instead of printing "undefined"', () => {
    // @ts-expect-error undefined is not a word
    expect(() => sh`rm -rf /srv/${undefined}`).toThrow(/undefined/)
    // @ts-expect-error null is not a word
    expect(() => sh`x ${null}`).toThrow(/null/)
    // @ts-expect-error booleans are not words
    expect(() => sh`x ${true}`).toThrow(/boolean/)
    // @ts-expect-error plain objects are not words
    expect(() => sh`x ${{ text: 'rm -rf /' }}`).toThrow(/object/)
    expect(() => sh`x ${Number.NaN}`).toThrow(/number/)
  })

  it('a plain string is not a ShellCommand (the types keep string pasting out)', () => {
    const take = (c: ShellCommand) => c.text
    // @ts-expect-error a template literal is a string, not a built command
    expect(take(`echo ${'x'}`)).toBeUndefined()
    // @ts-expect-error nor can one be made without sh/raw
    expect(() => new ShellCommand(Symbol('ShellCommand'), 'x')).toThrow(/sh`/)
  })
})

describe('one way to build a remote command', () => {
  it('no source outside src/ssh quotes by hand: commands are built with sh`…`', () => {
    const root = join(import.meta.dirname, '..', '..')
    const files: string[] = []
    const walk = (dir: string) => {
      for (const name of readdirSync(dir)) {
        const p = join(dir, name)
        if (statSync(p).isDirectory()) walk(p)
        else if (p.endsWith('.ts')) files.push(p)
      }
    }
    for (const dir of ['src', 'tasks', 'bench']) walk(join(root, dir))
    const allowed = new Set([join(root, 'src/core/quote.ts'), join(root, 'src/core/shell.ts')])
    const offenders = files.filter((f) => !allowed.has(f) && /\bshell(Quote|Join)\b/.test(readFileSync(f, 'utf8')))
    expect(offenders.map((f) => f.slice(root.length + 1))).toEqual([])
  })
})
